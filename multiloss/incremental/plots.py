"""PNG figures of an incremental run: accuracy per step, and the last step's confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..run.plots import new_figure, save_figure


def plot_accuracy(steps: list[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy on all seen classes after each step, and each task's accuracy (thin lines)."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    seen = [s["num_classes"] for s in steps]
    ax.plot(seen, [s["accuracy"] for s in steps], "o-", lw=2.2, label="all seen classes")
    for j in range(len(steps)):
        pts = [(s["num_classes"], s["task_accuracy"][j]) for s in steps if j < len(s["task_accuracy"])]
        ax.plot(*zip(*pts), ".--", lw=0.9, alpha=0.7, label=f"task {j}")
    ax.set_xticks(seen)
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "accuracy after each step")
    path = Path(path)
    save_figure(fig, path)
    return path


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class in rows), counts written in the cells.

    The colour is the fraction of each true class's samples (the colour bar says
    so); short class names (≤ 3 characters) are written upright.
    """
    m = np.asarray(matrix)
    n = len(m)
    frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * n
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    names = [str(x) for x in names]
    short = max((len(x) for x in names), default=0) <= 3
    ax.set_xticks(range(n), names, rotation=0 if short else 45, ha="center" if short else "right",
                  fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046)
    cbar.set_label("fraction of the true class's test samples", fontsize=8)
    cbar.ax.tick_params(labelsize=8)
    ax.set_title(title or "confusion matrix after the last step", fontsize=10)
    path = Path(path)
    save_figure(fig, path)
    return path


__all__ = ["plot_accuracy", "plot_confusion"]
