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
(``"skip"``).  Outside ``fit`` (``train_on_batch``) the call itself raises or
warns.  The weights always stay those of the last finite step.

Two ways withhold the update.  In ``"stop"`` mode with no weighting state to
put back, no XLA and no distribution strategy (the default case), the step
*fails* on one check before the optimizer and the head metrics run
(:meth:`GuardState.cut_short`, :func:`cut_short_function`): no branch holds
the update, which costs a few ops instead of a ``tf.cond`` with a switch for
every gradient, weight and slot (about a sixth of a small model's step on
CPU).  Everywhere else (:meth:`GuardState.update`, :func:`apply_if_finite`) a
``tf.cond`` holds the update, so the step goes on and its state can be put back.
"""

from __future__ import annotations

import warnings
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..spec.errors import NonFiniteError

Mode = Literal["stop", "skip"]
MODES = ("stop", "skip")
#: The message of the check that cuts a step short (see :meth:`GuardState.cut_short`).
CUT_SHORT = "multiloss: non-finite step cut short"
#: What a NonFiniteError asks the user to check.
CHECK = ("Check the data (a NaN target is a missing label only under `mask_value: .nan` on its head) and the "
         "loss (a log of 0, a division by 0, a learning rate too high)")


class GuardState:
    """What the train steps record: steps, batches skipped, the first bad step and its flags.

    ``flags`` holds one entry per term, then the total, then the gradients
    (1 = not finite).  In ``"stop"`` mode no update is applied from the first
    bad step on (the callback stops ``fit`` at the end of that epoch, without
    a per-step sync); in ``"skip"`` mode only the bad steps' updates are withheld.
    """

    def __init__(self, term_names: list[str], mode: Mode = "stop"):
        if mode not in MODES:
            raise ValueError(f"nonfinite must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.term_names = list(term_names)
        num_terms = len(self.term_names)
        #: Whether a :class:`NonFiniteGuard` reports this state (inside ``fit``); otherwise each train
        #: call is checked on the host (:meth:`check_unwatched`).
        self.watched = False
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
        flags = not_finite(values, total, grads)
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


    def cut_short(self, values, total, grads, loss_scaled: bool = False) -> tf.Tensor:
        """The cheap guard of ``"stop"`` (see :func:`can_cut_short`): a tensor that fails the step.

        Ops made under ``tf.control_dependencies([gate])`` run only when every term, the total and the
        gradients are finite (with loss scaling: the terms and the total; an overflow goes to the
        optimizer); otherwise the step ends with TensorFlow's ``InvalidArgumentError`` before any of
        them runs, which :func:`cut_short_function` turns into a recorded stop.  Unlike
        :meth:`update`, no branch of the graph holds the optimizer's update: its ops wait on one check.
        """
        flags = not_finite(values, total, None if loss_scaled else grads)
        recorded = [self.steps.assign_add(1.0), self.flags.assign(flags)]
        with tf.control_dependencies(recorded):          # both are written before the step fails
            return tf.debugging.check_numerics(tf.math.reciprocal(1.0 - ops.max(flags)), CUT_SHORT)  # 1/0

    def record_cut_short(self) -> None:
        """On the host, after :meth:`cut_short` failed a step: count it and remember the first."""
        self.skipped.assign_add(1.0)
        if read(self.first_bad) < 0:
            self.first_bad.assign(self.steps)

    def describe(self) -> str:
        """What the recorded bad step had non-finite: its terms, the total, the gradients."""
        flags = ops.convert_to_numpy(self.flags)
        names = [f"term {n!r}" for n, f in zip(self.term_names, flags) if f > 0]
        if flags[-2] > 0 and not names:
            names.append("the total loss (regularization)")
        if flags[-1] > 0:
            names.append("the gradients")
        return ", ".join(names) or "the step"

    def check_unwatched(self, skipped_before: float) -> None:
        """After a train call outside ``fit`` (``train_on_batch``, or a ``fit`` given a ``CallbackList``
        without :class:`NonFiniteGuard`): raise :class:`NonFiniteError` for a bad step (``"stop"``; the
        next call starts clean) or warn that it was skipped (``"skip"``), so no bad batch goes unsaid."""
        if self.mode == "stop":
            if read(self.first_bad) < 0:
                return
            self.first_bad.assign(-1.0)
            raise NonFiniteError(
                f"non-finite values (NaN or Inf) in {self.describe()} in a train step outside `fit` "
                "(train_on_batch); its update was not applied, so the weights are those of the last finite "
                f"step. {CHECK}, or compile with nonfinite='skip' to skip such batches")
        count = int(read(self.skipped) - skipped_before)
        if count:
            warnings.warn(f"skipped {count} batch(es) with non-finite values in {self.describe()} outside "
                          "`fit` (nonfinite='skip'): the weights are unchanged by them", stacklevel=3)


def read(var) -> float:
    """A scalar variable's value on the host."""
    return float(ops.convert_to_numpy(var))


def not_finite(values, total, grads=None) -> tf.Tensor:
    """1.0 where not finite, over ``[terms..., total, Σ of every gradient's sum]`` (one ``isfinite``; a
    NaN or Inf anywhere in a gradient makes the sum non-finite).  ``grads=None``: the last entry is 0."""
    grad_sum = tf.zeros((1,), "float32") if grads is None else ops.reshape(gradient_sum(grads), (1,))
    checks = ops.concatenate([ops.cast(ops.reshape(values, (-1,)), "float32"),
                              ops.reshape(ops.cast(total, "float32"), (1,)), grad_sum])
    return ops.cast(ops.logical_not(ops.isfinite(checks)), "float32")


def gradient_sum(grads) -> tf.Tensor:
    """Σ of every element of every gradient (float32): finite exactly when each gradient is, short of
    an overflow of the sum itself (elements near 1e38, far past any trainable step).

    Gradients of one shape are added first (``add_n``), then each shape's sum is reduced: a model's
    heads repeat a few shapes, so the check takes a few ops per shape, not one per variable."""
    by_shape: dict = {}
    for g in grads:
        if g is None:
            continue
        g = g.values if isinstance(g, tf.IndexedSlices) else g
        key = (tuple(g.shape), g.dtype) if g.shape.is_fully_defined() else id(g)   # sparse rows: alone
        by_shape.setdefault(key, []).append(tf.cast(g, "float32"))
    sums = [tf.reduce_sum(same[0] if len(same) == 1 else tf.add_n(same)) for same in by_shape.values()]
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


def build_optimizer(optimizer, variables: list) -> None:
    """Create the optimizer's slots (once) before an update is made conditional on the guard."""
    if not optimizer.built:
        optimizer.build(variables)


def apply_if_finite(optimizer, grads_and_vars: list, ok) -> None:
    """``optimizer.apply_gradients(grads_and_vars)`` only when ``ok`` (the same on every replica)."""
    grads = [g for g, _ in grads_and_vars]
    variables = [v for _, v in grads_and_vars]
    build_optimizer(optimizer, variables)
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


def can_cut_short(model, state: GuardState, restores_state: bool) -> bool:
    """Whether the step may use :meth:`GuardState.cut_short` instead of a cond around the update.

    Only in ``"stop"`` mode (at most one failed step per ``fit``), with no weighting state to put
    back, in graph or eager mode without XLA (which has no failing check) and without a
    distribution strategy (whose replicas must not fail apart)."""
    return (state.mode == "stop" and not restores_state and not tf.distribute.has_strategy()
            and not keras_jit(model))


def keras_jit(model) -> bool:
    """Whether Keras compiles ``model``'s train step with XLA (``jit_compile`` resolved)."""
    return bool(getattr(model, "jit_compile", False))


def cut_short_function(model, state: GuardState, function):
    """Keras's train function, with a step that :meth:`GuardState.cut_short` failed turned into a stop:
    it is recorded, ``fit`` stops after it and :class:`NonFiniteGuard` raises at the epoch's end.

    Outside ``fit`` (no :class:`NonFiniteGuard` watching) each call is checked on the host instead
    (:meth:`GuardState.check_unwatched`): ``train_on_batch`` raises or warns at the bad batch itself."""
    def train_function(iterator):
        skipped_before = 0.0 if state.watched or state.mode == "stop" else read(state.skipped)
        try:
            logs = function(iterator)
        except tf.errors.InvalidArgumentError as exc:
            if CUT_SHORT not in (exc.message or ""):
                raise
            state.record_cut_short()
            if not state.watched:
                state.check_unwatched(skipped_before)
            model.stop_training = True
            return model.get_metrics_result()
        if not state.watched:
            state.check_unwatched(skipped_before)
        return logs

    train_function.multiloss_cut_short = True
    return train_function


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops ``fit`` at the end of the epoch of the first non-finite step (``"stop"``: no update was
    applied from that step on), or reports the batches skipped (``"skip"``).

    It reads the guard's variables at epoch ends only, so the steps run without a per-step sync.
    """

    def __init__(self, state: GuardState):
        super().__init__()
        self.state = state
        self.epoch_steps = 0.0
        self.epoch_skipped = 0.0

    def on_train_begin(self, logs=None):
        self.state.watched = True
        if self.state.mode == "stop":
            self.state.first_bad.assign(-1.0)   # a new fit starts clean

    def on_train_end(self, logs=None):
        self.state.watched = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_steps = read(self.state.steps)
        self.epoch_skipped = read(self.state.skipped)

    def on_epoch_end(self, epoch, logs=None):
        first = read(self.state.first_bad)
        if self.state.mode == "stop" and first >= 0:
            self.model.stop_training = True
            self.state.watched = False
            raise NonFiniteError(
                f"non-finite values (NaN or Inf) in {self.state.describe()} at epoch {epoch + 1}, step "
                f"{int(first - self.epoch_steps)}; training stopped: no update was applied from that step "
                f"on, so no weights are non-finite and a checkpoint saved before it is intact. {CHECK}, or set "
                "`train.nonfinite: skip` to skip such batches")
        count = int(read(self.state.skipped) - self.epoch_skipped)
        if logs is not None and self.state.mode == "skip":
            logs["nonfinite_skipped"] = float(count)
        if count:
            print(f"warning: epoch {epoch + 1}: skipped {count} batch(es) with non-finite values in "
                  f"{self.state.describe()} (train.nonfinite: skip)", flush=True)


__all__ = ["CUT_SHORT", "GuardState", "NonFiniteGuard", "apply_if_finite", "build_optimizer", "can_cut_short", "cut_short_function", "gradient_sum", "snapshot", "restore_unless", "MODES"]
