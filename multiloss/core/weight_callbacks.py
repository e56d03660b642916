"""Callbacks of the weighting: the epoch hook (with the collapse warning), and per-step weights to TensorBoard."""

from __future__ import annotations

import logging
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from .keras_access import compiled_loss

LOG = logging.getLogger("multiloss.weighting")


class WeightCollapseWarning(UserWarning):
    """A dynamic strategy kept a term's weight near zero for a whole epoch."""


class EpochHook(keras.callbacks.Callback):
    """Calls the strategy's ``on_epoch_end`` (DWA's new weights) between epochs, and warns of collapse.

    Added by ``model.fit`` on a model compiled with a weighting strategy.  When
    a term's strategy weight λ_i stays below ``COLLAPSE_FRACTION`` (1 %) of its
    value at the start of training at *every* step of an epoch where the term
    is present, a :class:`WeightCollapseWarning` naming the term is issued
    (once per term and model), through :mod:`warnings` and the
    ``multiloss.weighting`` logger.
    """

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_train_begin(self, logs=None):
        self.weighting.refresh_if_stale()
        self.weighting.start_tracking()

    def on_epoch_begin(self, epoch, logs=None):
        self.weighting.reset_peak()

    def on_epoch_end(self, epoch, logs=None):
        for name, peak, start in self.weighting.collapsed():
            msg = (f"weighting {self.weighting.strategy.name!r}: term {name!r} kept a strategy weight of at most "
                   f"{peak:.3g} during epoch {epoch + 1}, under {COLLAPSE_FRACTION:.0%} of its start {start:.3g}; "
                   "the term has all but stopped training (check the strategy's parameters, or the loss scales)")
            LOG.warning(msg)
            warnings.warn(msg, WeightCollapseWarning, stacklevel=2)
        self.weighting.on_epoch_end(epoch)


COLLAPSE_FRACTION = 0.01


class WeightLogger(keras.callbacks.Callback):
    """Writes every term's effective weight to TensorBoard after each training step.

    Scalars ``multiloss/<term>_weight`` at step = the optimizer's iterations,
    in ``<log_dir>/train`` (the directory Keras's ``TensorBoard`` callback
    writes its training logs to, so both show up together).  ``model.fit``
    adds one by itself when a ``keras.callbacks.TensorBoard`` is among the
    callbacks of a model with a weighting strategy or schedules; add it
    yourself otherwise.  With ``steps_per_execution`` > 1 it logs the last step
    of each execution.  Per-epoch means are in the history as ``<term>_weight``.
    """

    #: Placed before the user's callbacks by ``model.fit`` (a ``TensorBoard`` among them sees its logs).
    multiloss_logs_first = True

    def __init__(self, log_dir: str, every: int = 1):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.every = max(1, int(every))
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every:
            return
        loss = compiled_loss(self.model)
        weights = np.asarray(keras.ops.convert_to_numpy(loss.weights))
        with self._writer.as_default(step=step):
            for name, w in zip(loss.term_names, weights):
                tf.summary.scalar(f"multiloss/{name}_weight", float(w))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
