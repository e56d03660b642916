"""Which way a logged key improves: for early stopping's ``mode`` and the best value in ``compare``."""

from __future__ import annotations

from typing import Literal

Mode = Literal["auto", "min", "max"]

#: Keys where lower is better / higher is better, by their ending.
LOWER = ("loss", "error", "mae", "mse", "mape", "msle", "crossentropy", "hinge", "divergence", "logcosh",
         "delta_m")
HIGHER = ("accuracy", "auc", "precision", "recall", "iou", "f1_score", "fbeta_score", "r2_score")


def direction(key: str) -> int:
    """1 where higher is better, -1 where lower is, 0 where the key's ending does not tell."""
    k = key.lower()
    if k.endswith(HIGHER):
        return 1
    if k.endswith(LOWER):
        return -1
    return 0


def resolve_mode(key: str, mode: Mode = "auto") -> Literal["min", "max"] | None:
    """``mode`` itself, or for ``"auto"`` the one the key's ending gives (None: it does not tell)."""
    if mode != "auto":
        return mode
    return {1: "max", -1: "min"}.get(direction(key))


__all__ = ["HIGHER", "LOWER", "Mode", "direction", "resolve_mode"]
