"""Callbacks of the weighting: the epoch hook, and per-step weights to TensorBoard."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf


class EpochHook(keras.callbacks.Callback):
    """Calls the strategy's ``on_epoch_end`` (DWA's new weights) between epochs.

    Added by ``model.fit`` on a model compiled with a weighting strategy.
    """

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_end(self, epoch, logs=None):
        self.weighting.on_epoch_end(epoch)


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
        loss = self.model._compile_loss
        weights = np.asarray(keras.ops.convert_to_numpy(loss.weights))
        with self._writer.as_default(step=step):
            for name, w in zip(loss.term_names, weights):
                tf.summary.scalar(f"multiloss/{name}_weight", float(w))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
