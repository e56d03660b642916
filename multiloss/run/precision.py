"""A run's numeric precision: Keras's global dtype policy, set for the run and put back after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]


@contextlib.contextmanager
def dtype_policy(name: Precision) -> Iterator[None]:
    """Build and train under Keras's dtype policy ``name``; the previous policy is restored on exit.

    Under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer`` (see
    :mod:`multiloss.core.guard` for how an overflow of the scaled gradients is handled).
    """
    import keras  # here: the Literal above is read by the configs, which need no Keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


__all__ = ["Precision", "dtype_policy"]
