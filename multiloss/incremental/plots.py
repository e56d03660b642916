"""PNG figures of an incremental run: accuracy per step, and the last step's confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plots import _save, plt


def plot_accuracy(steps: list[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy on all seen classes after each step, and each task's accuracy (thin lines)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    fig.tight_layout()
    path = Path(path)
    _save(fig, path)
    return path


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class in rows), counts written in the cells."""
    m = np.asarray(matrix)
    n = len(m)
    frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * n
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "confusion matrix after the last step", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    _save(fig, path)
    return path


__all__ = ["plot_accuracy", "plot_confusion"]
