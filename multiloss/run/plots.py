"""PNG figures of a run, drawn from its history (``multiloss plot RUN_DIR``).

Figures are drawn on :class:`matplotlib.figure.Figure` objects, never through
pyplot's global state, so importing this module does not change matplotlib's
backend (a notebook keeps showing its plots inline).

``plot_history`` writes, in ``out_dir``:

* ``terms.png`` — each term's loss (train solid, validation dashed); a term's
  title carries its weight when the weight never changes;
* ``contribution.png`` — each term's share of the weighted total Σ wᵢ·Lᵢ per
  epoch (stacked, train and validation), which term dominates the total;
* ``weights.png`` — only when some weight changes: every term's weight on one
  shared axis (logarithmic when the weights span more than a factor 20);
* ``metrics.png`` — one panel per metric, the heads that share it overlaid;
  metrics that never change are listed in a note instead of getting a panel;
* ``total.png`` — the total loss, train and validation.

Epoch axes have integer ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from . import atomic

#: The files :func:`plot_history` may write (``weights.png`` only when weights change).
PLOT_FILES = ("terms.png", "contribution.png", "weights.png", "metrics.png", "total.png")


def __getattr__(name: str):
    # ``from multiloss.run.plots import plt`` (benchmarks/) imports pyplot only when asked.
    if name == "plt":
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` as PNG, atomically; closes it if pyplot manages it."""
    path = Path(path)
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot, with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def epoch_axis(ax, label: str = "epoch") -> None:
    """Integer ticks on the x axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)


def _series(history: list[dict], key: str):
    pts = [(row["epoch"], row[key]) for row in history
           if row.get(key) is not None and not _nan(row[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _nan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def is_flat(values: Sequence[float], rel: float = 1e-6) -> bool:
    """True when every value equals the first (to a relative ``rel``)."""
    v = np.asarray([x for x in values if not _nan(x)], dtype=float)
    if v.size == 0:
        return True
    return float(v.max() - v.min()) <= rel * max(1.0, float(np.abs(v).max()))


def _fmt_weight(w: float) -> str:
    from .console import round_weight

    return f"{round_weight(w):g}"


def _grid(n: int) -> tuple[int, int]:
    """Rows and columns for ``n`` panels: one row up to 3, else a near-square grid (4 → 2×2)."""
    cols = n if n <= 3 else min(4, math.ceil(math.sqrt(n)))
    cols = max(cols, 1)
    return (n + cols - 1) // cols, cols


def _line(ax, history, key, style="-", **kw):
    xs, ys = _series(history, key)
    if xs:
        ax.plot(xs, ys, style, marker="o" if len(xs) <= 12 else None, ms=3.5, **kw)
    return bool(xs)


def plot_terms(history: list[dict], terms: list[str], path: str | Path) -> Path:
    """Each term's loss, train (solid) and validation (dashed), one panel per term."""
    rows, cols = _grid(len(terms))
    fig = new_figure(4.2 * cols, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, t in zip(axes.flat, terms):
        _line(ax, history, f"{t}_loss", "-", color="tab:blue", label="train")
        _line(ax, history, f"val_{t}_loss", "--", color="tab:orange", label="validation")
        weights = _series(history, f"{t}_weight")[1]
        title = t
        if weights and is_flat(weights):
            title += f"  (weight {_fmt_weight(weights[0])})"
        elif weights:
            title += f"  (weight {_fmt_weight(weights[0])} → {_fmt_weight(weights[-1])})"
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        epoch_axis(ax)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle("term losses (unweighted)", fontsize=11)
    save_figure(fig, path)
    return Path(path)


def contributions(history: list[dict], terms: list[str], prefix: str = ""):
    """``(epochs, [T, E] array of wᵢ·Lᵢ)`` for the epochs where every term is logged.

    ``prefix`` is ``""`` (train) or ``"val_"``; the weight is always the
    training weight of the epoch.
    """
    epochs, rows = [], []
    for row in history:
        vals = []
        for t in terms:
            w, loss = row.get(f"{t}_weight"), row.get(f"{prefix}{t}_loss")
            if w is None or loss is None or _nan(w) or _nan(loss):
                break
            vals.append(float(w) * float(loss))
        else:
            epochs.append(row["epoch"])
            rows.append(vals)
    return epochs, np.asarray(rows, dtype=float).T.reshape(len(terms), len(epochs))


def plot_contribution(history: list[dict], terms: list[str], path: str | Path) -> Path | None:
    """Stacked shares of Σ wᵢ·Lᵢ per epoch (train, and validation when logged)."""
    splits = [(p, name) for p, name in (("", "train"), ("val_", "validation"))
              if contributions(history, terms, p)[0]]
    if not splits:
        return None
    fig = new_figure(5.2 * len(splits) + 1.6, 3.6)
    axes = fig.subplots(1, len(splits), squeeze=False, sharey=True)[0]
    colors = [f"C{i % 10}" for i in range(len(terms))]
    for ax, (prefix, name) in zip(axes, splits):
        epochs, parts = contributions(history, terms, prefix)
        signed = (parts < 0).any()
        parts = np.abs(parts)
        total = parts.sum(axis=0)
        share = 100 * parts / np.where(total > 0, total, 1.0)
        if len(epochs) == 1:
            bottom = 0.0
            for i, t in enumerate(terms):
                ax.bar(epochs, share[i], bottom=bottom, color=colors[i], width=0.5, label=t)
                bottom = bottom + share[i]
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        else:
            ax.stackplot(epochs, share, colors=colors, labels=terms, alpha=0.85)
            ax.set_xlim(epochs[0], epochs[-1])
        ax.set_ylim(0, 100)
        ax.set_title(f"{name}: share of Σ wᵢ·Lᵢ" + (" (|wᵢ·Lᵢ|)" if signed else ""), fontsize=10)
        ax.set_ylabel("% of the weighted total")
        epoch_axis(ax)
    last = contributions(history, terms, splits[0][0])[1][:, -1]
    last_share = 100 * np.abs(last) / max(float(np.abs(last).sum()), 1e-30)
    handles, _ = axes[0].get_legend_handles_labels()
    labels = [f"{t}  {s:.0f}%" for t, s in zip(terms, last_share)]
    fig.legend(handles[::-1], labels[::-1], loc="outside right center", fontsize=8,
               title="last epoch", title_fontsize=8)
    save_figure(fig, path)
    return Path(path)


def weights_change(history: list[dict], terms: list[str]) -> bool:
    """True when some term's logged weight is not the same every epoch."""
    return any(not is_flat(_series(history, f"{t}_weight")[1]) for t in terms)


def plot_weights(history: list[dict], terms: list[str], path: str | Path) -> Path | None:
    """Every term's weight on one shared axis; None (nothing written) if no weight changes."""
    if not weights_change(history, terms):
        return None
    fig = new_figure(6.8, 3.8)
    ax = fig.subplots()
    values = []
    lines: dict[tuple, list[str]] = {}  # identical curves share one line and one legend entry
    for t in terms:
        xs, ys = _series(history, f"{t}_weight")
        if xs:
            key = (tuple(xs), tuple(_fmt_weight(v) for v in ys))
            lines.setdefault(key, []).append(t)
            values += ys
    for (xs, _), names in lines.items():
        ys = _series(history, f"{names[0]}_weight")[1]
        ax.plot(xs, ys, "-", marker="o" if len(xs) <= 12 else None, ms=3.5, label=", ".join(names))
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, max(values) * 1.1 if values and max(values) > 0 else 1)
    ax.set_title("effective weights per epoch (epoch means)", fontsize=10)
    ax.set_ylabel("weight")
    ax.grid(alpha=0.3, which="both")
    epoch_axis(ax)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
    return Path(path)


def _metric_groups(keys: list[str], terms: list[str]) -> dict[str, list[tuple[str, str]]]:
    """``{metric: [(head, key), ...]}``: keys ``<head>_<metric>`` grouped by metric."""
    prefixes = set(terms)
    for t in terms:
        parts = t.split("_")
        prefixes |= {"_".join(parts[:i]) for i in range(1, len(parts))}
    groups: dict[str, list[tuple[str, str]]] = {}
    for k in keys:
        head = max((p for p in prefixes if k.startswith(p + "_")), key=len, default=None)
        metric = k[len(head) + 1:] if head else k
        groups.setdefault(metric, []).append((head or k, k))
    return groups


def plot_metrics(history: list[dict], terms: list[str], path: str | Path) -> Path | None:
    """One panel per metric (heads overlaid; validation dashed); flat metrics go to a note."""
    keys = sorted({k for row in history for k in row})
    metric_keys = [k for k in keys if k not in ("epoch", "loss", "learning_rate") and not k.startswith("val_")
                   and not k.endswith(("_loss", "_weight"))]
    moving = [k for k in metric_keys if not (is_flat(_series(history, k)[1])
                                             and is_flat(_series(history, f"val_{k}")[1]))]
    flat = [k for k in metric_keys if k not in moving]
    if not metric_keys:
        return None
    groups = _metric_groups(moving, terms)
    n = max(len(groups), 1)
    rows, cols = _grid(n)
    fig = new_figure(4.3 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (metric, members) in zip(axes.flat, groups.items()):
        for j, (head, k) in enumerate(members):
            label = head if len(members) > 1 else "train"
            _line(ax, history, k, "-", color=f"C{j}", label=label)
            has_val = _line(ax, history, f"val_{k}", "--", color=f"C{j}" if len(members) > 1 else "C1",
                            label=None if len(members) > 1 else "validation")
        title = metric if len(members) > 1 else members[0][1]
        ax.set_title(title + ("  (dashed: validation)" if len(members) > 1 and has_val else ""), fontsize=10)
        ax.grid(alpha=0.3)
        epoch_axis(ax)
        ax.legend(fontsize=8)
    if flat:
        notes = [f"{k} = {_series(history, k)[1][-1]:.4g}" if _series(history, k)[1] else k for k in flat]
        fig.supxlabel("constant every epoch (no panel): " + ", ".join(notes), fontsize=9, color="0.3")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    save_figure(fig, path)
    return Path(path)


def plot_total(history: list[dict], path: str | Path) -> Path:
    """The total loss Σ wᵢ·Lᵢ, train and validation."""
    fig = new_figure(6, 3.5)
    ax = fig.subplots()
    _line(ax, history, "loss", "-", label="train")
    _line(ax, history, "val_loss", "--", label="validation")
    ax.set_title("total loss Σ wᵢ·Lᵢ", fontsize=10)
    ax.grid(alpha=0.3)
    epoch_axis(ax)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return Path(path)


def plot_history(history: list[dict], terms: list[str], out_dir: str | Path) -> list[Path]:
    """Write the run's figures (see the module docstring); returns the paths written.

    ``weights.png`` is written only when a weight changes (an earlier one is
    removed otherwise), ``metrics.png`` only when metrics are logged.
    """
    out_dir = Path(out_dir)
    written = [plot_terms(history, terms, out_dir / "terms.png"),
               plot_contribution(history, terms, out_dir / "contribution.png"),
               plot_weights(history, terms, out_dir / "weights.png"),
               plot_metrics(history, terms, out_dir / "metrics.png"),
               plot_total(history, out_dir / "total.png")]
    if written[2] is None and (out_dir / "weights.png").exists():
        (out_dir / "weights.png").unlink()
    return [p for p in written if p is not None]


__all__ = ["PLOT_FILES", "plot_history", "plot_terms", "plot_contribution", "plot_weights", "plot_metrics",
           "plot_total", "contributions", "weights_change", "is_flat", "new_figure", "epoch_axis", "save_figure"]
