"""The non-finite guard: a NaN or Inf never reaches the weights.

Inside every multiloss train step (Keras's own and the gradient strategies'),
each term's value, the total and the gradients are checked; when any is not
finite the optimizer update of that step is skipped on every replica, the
step is counted and what was non-finite is recorded.

Under loss scaling (mixed ``float16``: Keras wraps the optimizer in a
``LossScaleOptimizer``) non-finite gradients with finite terms and total are
an *overflow* of the scaled gradients, not a NaN: the update goes to the
optimizer, which skips it and halves its scale exactly as in Keras's own step,
and the step is not counted as skipped.  Only a non-finite term or total is
then a NaN.  :class:`NonFiniteGuard`
(added to ``fit`` automatically) then either stops training with a
:class:`NonFiniteError` naming the terms, epoch and step (``"stop"``, the
default), or lets training go on and reports how many batches were skipped
(``"skip"``).  The weights always stay those of the last finite step.
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..spec.errors import NonFiniteError

Mode = Literal["stop", "skip"]
MODES = ("stop", "skip")


class GuardState:
    """What the train steps record: steps, batches skipped, the first bad step and its flags.

    ``flags`` holds one entry per term, then the total, then the gradients
    (1 = not finite).  In ``"stop"`` mode no update is applied from the first
    bad step on (the callback stops ``fit`` at the end of that epoch, without
    a per-step sync); in ``"skip"`` mode only the bad steps' updates are withheld.
    """

    def __init__(self, num_terms: int, mode: Mode = "stop"):
        if mode not in MODES:
            raise ValueError(f"nonfinite must be one of {MODES}, got {mode!r}")
        self.mode = mode
        first = {"aggregation": "only_first_replica", "trainable": False}
        self.steps = keras.Variable(0.0, name="multiloss_guard_steps", **first)
        self.skipped = keras.Variable(0.0, name="multiloss_nonfinite_skipped", **first)
        self.first_bad = keras.Variable(-1.0, name="multiloss_nonfinite_first_step", **first)
        self.flags = keras.Variable(np.zeros(num_terms + 2, "float32"), name="multiloss_nonfinite_flags", **first)

    def update(self, values, total, grads, loss_scaled: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Record this step (flags summed over replicas); return ``(apply, finite)``.

        ``apply``: whether the update goes to the optimizer.  ``finite``: whether the step changes the
        weights (without loss scaling the same; with it, an overflow is applied, but the optimizer
        skips it, so the strategy's state must be put back as well).
        """
        # One isfinite over [terms..., total, Σ of every gradient's sum]: a NaN or Inf anywhere in a
        # gradient makes its sum non-finite, at one reduction per gradient instead of two.
        checks = ops.concatenate([ops.cast(ops.reshape(values, (-1,)), "float32"),
                                  ops.reshape(ops.cast(total, "float32"), (1,)),
                                  ops.reshape(gradient_sum(grads), (1,))])
        flags = ops.cast(ops.logical_not(ops.isfinite(checks)), "float32")
        if red.num_replicas() > 1:
            flags = ops.minimum(red.cross_replica_sum(flags), 1.0)   # every replica decides alike
        finite = ops.logical_not(ops.max(flags) > 0)
        if loss_scaled:     # non-finite gradients alone are an overflow: the optimizer skips the step
            flags = ops.concatenate([flags[:-1], ops.zeros((1,), "float32")])
        bad = ops.max(flags) > 0
        clean_so_far = ops.convert_to_tensor(self.first_bad) < 0
        first = ops.logical_and(bad, clean_so_far)
        self.steps.assign_add(1.0)
        self.skipped.assign_add(ops.cast(bad, "float32"))
        self.first_bad.assign(ops.where(first, self.steps, self.first_bad))
        keep_first = self.mode == "stop"   # stop: report the first bad step; skip: the latest
        self.flags.assign(ops.where(first if keep_first else bad, flags, self.flags))
        ok = ops.logical_not(bad)
        apply = ops.logical_and(ok, clean_so_far) if keep_first else ok
        return apply, ops.logical_and(apply, finite)


def gradient_sum(grads) -> tf.Tensor:
    """Σ of every element of every gradient (float32): finite exactly when each gradient is, short of
    an overflow of the sum itself (elements near 1e38, far past any trainable step)."""
    sums = [tf.reduce_sum(tf.cast(g.values if isinstance(g, tf.IndexedSlices) else g, "float32"))
            for g in grads if g is not None]
    if not sums:
        return tf.zeros((), "float32")
    return sums[0] if len(sums) == 1 else tf.add_n(sums)


def _in_replica_context() -> bool:
    """Inside a distribution strategy's replica function (where variable writes synchronise replicas)."""
    return tf.distribute.has_strategy() and tf.distribute.get_replica_context() is not None


def snapshot(variables: list) -> list:
    """The values of ``variables`` now (read before a step changes them)."""
    return [tf.identity(v) for v in variables]


def restore_unless(ok, variables: list, saved: list) -> None:
    """Put back the ``saved`` values where the step is not finite (a strategy's state, the weights)."""
    if not variables:
        return
    if _in_replica_context():      # the writes synchronise replicas, which a cond cannot hold
        for var, value in zip(variables, saved):
            var.assign(ops.where(ok, var, value))
        return

    def restore():
        for var, value in zip(variables, saved):
            var.assign(value)

    tf.cond(ok, lambda: None, restore)      # a finite step writes nothing more


def apply_if_finite(optimizer, grads_and_vars: list, ok) -> None:
    """``optimizer.apply_gradients(grads_and_vars)`` only when ``ok`` (the same on every replica)."""
    grads = [g for g, _ in grads_and_vars]
    variables = [v for _, v in grads_and_vars]
    if not optimizer.built:
        optimizer.build(variables)
    if not _in_replica_context():
        def apply_here():
            optimizer.apply_gradients(zip(grads, variables))

        tf.cond(ok, apply_here, lambda: None)
        return

    # Under a distribution strategy the update synchronises replicas, which a
    # cond in replica context cannot hold: decide once, in cross-replica context.
    def merged(distribution, grads, ok):
        decided = distribution.experimental_local_results(ok)[0]

        def apply():
            distribution.extended.call_for_each_replica(
                lambda g: optimizer.apply_gradients(zip(g, variables)), args=(grads,))

        tf.cond(decided, apply, lambda: None)

    tf.distribute.get_replica_context().merge_call(merged, args=(grads, ok))


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops ``fit`` at the end of the epoch of the first non-finite step (``"stop"``: no update was
    applied from that step on), or reports the batches skipped (``"skip"``).

    It reads the guard's variables at epoch ends only, so the steps run without a per-step sync.
    """

    def __init__(self, state: GuardState, term_names: list[str]):
        super().__init__()
        self.state = state
        self.term_names = list(term_names)
        self.epoch_steps = 0.0
        self.epoch_skipped = 0.0

    @staticmethod
    def _read(var) -> float:
        return float(ops.convert_to_numpy(var))

    def on_train_begin(self, logs=None):
        if self.state.mode == "stop":
            self.state.first_bad.assign(-1.0)   # a new fit starts clean

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_steps = self._read(self.state.steps)
        self.epoch_skipped = self._read(self.state.skipped)

    def describe(self) -> str:
        flags = ops.convert_to_numpy(self.state.flags)
        names = [f"term {n!r}" for n, f in zip(self.term_names, flags) if f > 0]
        if flags[-2] > 0 and not names:
            names.append("the total loss (regularization)")
        if flags[-1] > 0:
            names.append("the gradients")
        return ", ".join(names) or "the step"

    def on_epoch_end(self, epoch, logs=None):
        first = self._read(self.state.first_bad)
        if self.state.mode == "stop" and first >= 0:
            self.model.stop_training = True
            raise NonFiniteError(
                f"non-finite values (NaN or Inf) in {self.describe()} at epoch {epoch + 1}, step "
                f"{int(first - self.epoch_steps)}; training stopped: no update was applied from that step "
                "on, so no weights are non-finite and the last checkpoint is intact. Check the data and the "
                "loss (a log of 0, a division by 0, a learning rate too high), or set "
                "`train.nonfinite: skip` to skip such batches")
        count = int(self._read(self.state.skipped) - self.epoch_skipped)
        if logs is not None and self.state.mode == "skip":
            logs["nonfinite_skipped"] = float(count)
        if count:
            print(f"warning: epoch {epoch + 1}: skipped {count} batch(es) with non-finite values in "
                  f"{self.describe()} (train.nonfinite: skip)", flush=True)


__all__ = ["GuardState", "NonFiniteGuard", "apply_if_finite", "gradient_sum", "snapshot", "restore_unless", "MODES"]
