"""The one train step of a model compiled with ``ml.compile``, guarded against NaN and Inf.

Every step has the same skeleton: the forward pass under a tape, a snapshot
of the weighting's state, the gradients from a *gradient provider*
(:mod:`multiloss.core.gradients`), the non-finite guard's decision
(:mod:`multiloss.core.guard`), the optimizer update only if the step is
finite, the state put back unless it is, the loss trackers, the metrics.
The provider follows the kind of the weighting strategy
(:meth:`~multiloss.weighting.base.Strategy.active_kind`):

=============================  ==========================================
no strategy, a loss weighting   :class:`~.gradients.SinglePass` (Keras's step)
a layer gradient weighting      :class:`~.gradients.Layer` (GradNorm)
a Gram weighting or row         :class:`~.gradients.Parameters`, or
aggregator                      :class:`~.gradients.Representation` with
                                ``weighting.gradients: representation``
=============================  ==========================================

Under loss scaling (mixed ``float16``) an overflow of the scaled gradients
goes to the ``LossScaleOptimizer``, which skips it and lowers its scale, as
in Keras's step; the weighting's state is put back all the same.

Where :func:`~.guard.can_cut_short` allows (``"stop"``, no state to put
back, no XLA, no distribution strategy) a non-finite step fails before the
update, and ``fit`` stops; what the step does after the check (the head
metrics, a gradient strategy's trackers) is left undone too.  Elsewhere the
step goes on.  The loss trackers of Keras's step, updated in the forward
pass, see a bad batch's values either way (a NaN shows as NaN in the logs).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..weighting.base import LayerGradientWeighting, LossWeighting
from . import gradients, guard
from .keras_access import compiled_loss, unpack_x_y_sample_weight


def provider_for(composite) -> gradients.Provider:
    """The gradient provider of a composite loss's weighting strategy (see the module docstring)."""
    weighting = composite.weighting
    kind = LossWeighting if weighting is None else weighting.strategy.active_kind()
    if kind is LossWeighting:
        return gradients.SinglePass(composite)
    if kind is LayerGradientWeighting:
        return gradients.Layer(composite)
    if weighting.representation is not None:
        return gradients.Representation(composite)
    return gradients.Parameters(composite)


def loss_scaled(optimizer) -> bool:
    """Whether ``optimizer`` scales the loss (a ``LossScaleOptimizer``: mixed ``float16``)."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def train_step(model, data):
    """One guarded training step; returns the metrics' logs."""
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    composite = compiled_loss(model)
    provider = provider_for(composite)
    state = composite.weighting.state_variables() if composite.weighting is not None else []
    saved = guard.snapshot(state)     # put back if this step turns out non-finite
    with tf.GradientTape(persistent=provider.persistent) as tape:
        fwd = provider.forward(model, x, y, sample_weight)
    out = provider.gradients(model, tape, fwd)
    del tape
    pairs = [(g, v) for g, v in zip(out.grads, out.variables) if g is not None]
    if guard.can_cut_short(model, composite.guard, bool(state)):
        gate = composite.guard.cut_short(out.values, out.total, out.grads, loss_scaled(model.optimizer))
        guard.build_optimizer(model.optimizer, [v for _, v in pairs])
        with tf.control_dependencies([gate]):      # none of this runs in a step the guard cuts short
            if pairs:
                model.optimizer.apply_gradients(pairs)
            provider.track(model, x, fwd, out)
            return model.compute_metrics(x, y, fwd.y_pred, sample_weight=sample_weight)
    apply, finite = composite.guard.update(out.values, out.total, out.grads, loss_scaled(model.optimizer))
    if pairs:
        guard.apply_if_finite(model.optimizer, pairs, apply)
    guard.restore_unless(finite, state, saved)
    provider.track(model, x, fwd, out)
    return model.compute_metrics(x, y, fwd.y_pred, sample_weight=sample_weight)


__all__ = ["loss_scaled", "provider_for", "train_step"]
