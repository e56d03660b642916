"""``EpochLog``: a Keras callback printing one plain line per epoch (for logs that are not a terminal)."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import keras
import numpy as np

from .console import round_weight


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class EpochLog(keras.callbacks.Callback):
    """One compact plain-text line per epoch, for logs that are not a terminal.

    ``epoch 3/10  loss 0.412  a_loss 0.31  b_loss 1.02  a_accuracy 0.91  | val_loss 0.45 ...  | a_weight 0.5``

    Lines longer than the terminal (100 characters where it is not one) go on, indented, on the next.

    Shows ``loss``, every per-term loss and metric, their ``val_*`` versions,
    and each ``<term>_weight`` (and ``learning_rate``) only in the first epoch
    and when it changed since the previous epoch (``val_*_weight`` never: it
    repeats the training weight).
    """

    def __init__(self, print_fn: Callable[[str], object] = print, width: int | None = None):
        super().__init__()
        self.print_fn = print_fn
        #: Line width: the terminal's (``COLUMNS``), else 100.
        self.width = width or shutil.get_terminal_size((100, 24)).columns
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
        items = [f"epoch {epoch + 1}{total}"] + [f"{k} {_fmt(rest[k])}" for k in train]
        for i, k in enumerate(val):
            items.append(("| " if i == 0 else "") + f"{k} {_fmt(rest[k])}")
        for i, (k, v) in enumerate(sorted(shown_weights.items())):
            items.append(("| " if i == 0 else "") + f"{k} {round_weight(v):g}")
        return self._wrap(items)

    def _wrap(self, items: list[str]) -> str:
        """The items two spaces apart, in lines of at most ``width`` characters (continuations indented)."""
        lines, line = [], ""
        for item in items:
            if line and len(line) + 2 + len(item) > self.width:
                lines.append(line)
                line = "    " + item
            else:
                line = f"{line}  {item}" if line else item
        return "\n".join([*lines, line])

    def on_epoch_end(self, epoch, logs=None):
        self.print_fn(self.format(epoch, logs or {}))
