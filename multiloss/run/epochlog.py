"""``EpochLog``: a Keras callback printing one plain line per epoch (for logs that are not a terminal)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from .console import round_weight


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
