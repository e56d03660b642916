"""Console output: tables, one line per epoch, and weights rounded for people.

* :func:`round_weight` — a weight to six significant digits (``0.1``, not
  ``0.09999995678663254``), for history files and tables.
* :func:`table` — an aligned text table (rich when importable, else plain).
* :class:`EpochLog` — a Keras callback printing one plain line per epoch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import keras
import numpy as np


def round_weight(x: float) -> float:
    """``x`` to six significant digits, as the shortest float that prints so.

    Weights live in float32 (about seven significant digits) and a logged weight
    is an epoch mean accumulated in float32, so its seventh digit is noise:
    ``0.1`` is logged as ``0.10000000149011612`` (float32's 0.1) or as
    ``0.09999995678663254`` (the mean of 0.1 over an epoch); both become ``0.1``.
    The relative change is at most 5e-6.  NaN and ±inf are returned unchanged.
    """
    x = float(x)
    if not math.isfinite(x):
        return x
    return float(f"{x:.6g}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """An aligned text table: a header line, a rule, one line per row.

    Columns are separated by two spaces; columns whose cells are all numbers
    are right-aligned.  No colours or control codes, so it can be piped.
    """
    cells = [[str(c) for c in r] for r in rows]
    numeric = [bool(cells) and all(_is_number(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich comes with Keras
        return _plain_table(cells, list(headers), numeric)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
              header_style=None, highlight=False)
    for h, num in zip(headers, numeric):
        t.add_column(str(h), justify="right" if num else "left", no_wrap=True)
    for r in cells:
        t.add_row(*r)
    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, force_terminal=False, no_color=True,
            highlight=False, emoji=False, markup=False).print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


def _plain_table(cells: list[list[str]], headers: list[str], numeric: list[bool]) -> str:
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]

    def fmt(r, head=False):
        return "  ".join((c.rjust(w) if num and not head else c.ljust(w))
                         for c, w, num in zip(r, widths, numeric)).rstrip()

    return "\n".join([fmt(headers, True), "─" * (sum(widths) + 2 * (len(widths) - 1))]
                     + [fmt(r) for r in cells])


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class EpochLog(keras.callbacks.Callback):
    """One compact plain-text line per epoch, for logs that are not a terminal.

    ``epoch 3/10  loss 0.412  a_loss 0.31  b_loss 1.02  a_accuracy 0.91 | val_loss 0.45 ... | a_weight 0.5``

    Shows ``loss``, every per-term loss and metric, their ``val_*`` versions,
    and each ``<term>_weight`` (and ``learning_rate``) only in the first epoch
    and when it changed since the previous epoch (``val_*_weight`` never: it
    repeats the training weight).
    """

    def __init__(self, print_fn: Callable[[str], object] = print):
        super().__init__()
        self.print_fn = print_fn
        self._last_weights: dict[str, float] | None = None
        self._epochs: int | None = None

    def on_train_begin(self, logs=None):
        self._last_weights = None
        self._epochs = (self.params or {}).get("epochs")

    def format(self, epoch: int, logs: dict) -> str:
        """The line for ``epoch`` (0-based, as Keras passes it) and its ``logs``."""
        logs = {k: float(np.asarray(v)) for k, v in (logs or {}).items()}
        slow = {k: v for k, v in logs.items()  # shown when they change: weights, the learning rate
                if (k.endswith("_weight") or k == "learning_rate") and not k.startswith("val_")}
        shown_weights = {k: v for k, v in slow.items()
                         if self._last_weights is None or k not in self._last_weights
                         or round_weight(self._last_weights[k]) != round_weight(v)}
        self._last_weights = slow
        rest = {k: v for k, v in logs.items() if not k.endswith("_weight") and k not in slow}
        train = [k for k in rest if not k.startswith("val_")]
        train = (["loss"] if "loss" in train else []) + sorted(k for k in train if k != "loss")
        val = [k for k in rest if k.startswith("val_")]
        val = (["val_loss"] if "val_loss" in val else []) + sorted(k for k in val if k != "val_loss")
        total = f"/{self._epochs}" if self._epochs else ""
        parts = [f"epoch {epoch + 1}{total}", "  ".join(f"{k} {_fmt(rest[k])}" for k in train)]
        if val:
            parts.append("| " + "  ".join(f"{k} {_fmt(rest[k])}" for k in val))
        if shown_weights:
            parts.append("| " + "  ".join(f"{k} {round_weight(v):g}" for k, v in sorted(shown_weights.items())))
        return "  ".join(p for p in parts if p)

    def on_epoch_end(self, epoch, logs=None):
        self.print_fn(self.format(epoch, logs or {}))


__all__ = ["round_weight", "table", "EpochLog"]
