"""PNG figures of a run, drawn from its history (``multiloss plot RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import atomic  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _series(history: list[dict], key: str):
    pts = [(row["epoch"], row[key]) for row in history if key in row and row[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_history(history: list[dict], terms: list[str], out_dir: str | Path) -> list[Path]:
    """Write ``terms.png`` (each term's loss beside its weight), ``metrics.png`` and ``total.png``."""
    out_dir = Path(out_dir)
    written = []
    keys = set().union(*(row.keys() for row in history)) if history else set()

    fig, axes = plt.subplots(len(terms), 2, figsize=(10, 2.6 * len(terms)), squeeze=False)
    for (ax_l, ax_w), t in zip(axes, terms):
        for split, style in (("", "-"), ("val_", "--")):
            ax_l.plot(*_series(history, f"{split}{t}_loss"), style, label=split.rstrip("_") or "train")
        ax_l.set_title(f"{t}: loss")
        ax_l.legend(fontsize=8)
        ax_w.plot(*_series(history, f"{t}_weight"), color="tab:orange")
        ax_w.set_title(f"{t}: weight")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    _save(fig, out_dir / "terms.png")
    written.append(out_dir / "terms.png")

    metric_keys = sorted(k for k in keys if k not in ("epoch", "loss") and not k.startswith("val_")
                         and not k.endswith(("_loss", "_weight")) and k != "learning_rate")
    if metric_keys:
        cols = min(3, len(metric_keys))
        rows = (len(metric_keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3 * rows), squeeze=False)
        for ax, k in zip(axes.flat, metric_keys):
            ax.plot(*_series(history, k), label="train")
            ax.plot(*_series(history, f"val_{k}"), "--", label="val")
            ax.set_title(k)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(metric_keys):]:
            ax.axis("off")
        fig.tight_layout()
        _save(fig, out_dir / "metrics.png")
        written.append(out_dir / "metrics.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*_series(history, "loss"), label="train")
    ax.plot(*_series(history, "val_loss"), "--", label="validation")
    ax.set_title("total loss")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    _save(fig, out_dir / "total.png")
    written.append(out_dir / "total.png")
    return written
