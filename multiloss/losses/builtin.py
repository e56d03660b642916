"""multiloss's own losses, then Keras's under their names: a provider of the loss registry.

:data:`multiloss.spec.loss_table.LOSSES` imports this module the first time it is
read.  Each loss is math only, ``(y_true, y_pred, **params) -> L`` with L
shaped ``[B]`` or ``[B, d1..dk]``, registered with :func:`register_loss` as a
user's loss is.
"""

from __future__ import annotations

from ..spec.lazy import keras, ops
from ..spec.loss_table import register_keras_losses, register_loss


def _non_batch_axes(x) -> tuple[int, ...]:
    return tuple(range(1, len(x.shape)))


def _axes(y_pred, axis) -> tuple[int, ...] | int:
    if axis is None:
        return _non_batch_axes(y_pred)
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


@register_loss("tversky", target="same")
def tversky(y_true, y_pred, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-6, axis=None):
    """Per-sample Tversky loss (Salehi et al. 2017) over all non-batch axes; ``[B]``.

    ``1 - (TP + s) / (TP + α·FP + β·FN + s)`` with FP = Σ (1 − t)·p and
    FN = Σ t·(1 − p); α = β = 0.5 is the Dice loss.  ``axis`` (as Keras's)
    names the summed axes instead; its default here is every non-batch axis
    (Keras's ``tversky`` sums over the batch too, and weights FN by α).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = _axes(y_pred, axis)
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


@register_loss("dice", target="same")
def dice(y_true, y_pred, smooth: float = 1e-6, axis=None):
    """Per-sample soft Dice loss ``1 - (2·Σ t·p + s) / (Σ t + Σ p + s)``; ``[B]``.

    Sums over every non-batch axis, or over ``axis`` (as Keras's ``dice``, whose
    default sums over the batch too and returns a scalar).
    """
    return tversky(y_true, y_pred, 0.5, 0.5, smooth, axis)


@register_loss("categorical_generalized_cross_entropy", target="sparse")
def categorical_generalized_cross_entropy(y_true, y_pred, q: float = 0.5):
    """Keras's generalized cross entropy ``(1 − p_y^q) / q`` (Zhang & Sabuncu 2018); ``[B]``.

    As ``keras.losses.categorical_generalized_cross_entropy``, with ``q``
    defaulting to 0.5 (its class's default) and labels ``[B, 1]`` read as ``[B]``.
    """
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    return keras.losses.categorical_generalized_cross_entropy(y_true, y_pred, q)


def _distance(a, b):
    return ops.sqrt(ops.maximum(ops.sum(ops.square(a - b), axis=-1), 1e-12))


@register_loss("contrastive", outputs=(1, 2), label_range=(0, 1))
def contrastive(y_true, y_pred, margin: float = 1.0):
    """Contrastive loss for Siamese pairs (Hadsell et al. 2006); returns ``[B]``.

    ``y_true`` is 1 for a same pair and 0 for a different pair.  ``y_pred`` is
    either ``[emb_a, emb_b]`` (two outputs; d is their Euclidean distance) or
    one output holding the distance d.  L = y·d² + (1 − y)·max(margin − d, 0)².
    """
    if isinstance(y_pred, (list, tuple)):
        d = _distance(y_pred[0], y_pred[1])
    else:
        d = ops.reshape(y_pred, (ops.shape(y_pred)[0],)) if len(y_pred.shape) > 1 else y_pred
    y = ops.cast(ops.reshape(y_true, ops.shape(d)), d.dtype)
    return y * ops.square(d) + (1.0 - y) * ops.square(ops.maximum(margin - d, 0.0))


@register_loss("triplet", outputs=(3,))
def triplet(y_true, y_pred, margin: float = 1.0):
    """Triplet loss (Schroff et al. 2015) on ``[anchor, positive, negative]``.

    L = max(‖a − p‖² − ‖a − n‖² + margin, 0); ``y_true`` is ignored.  ``[B]``.
    """
    a, p, n = y_pred
    d_ap = ops.sum(ops.square(a - p), axis=-1)
    d_an = ops.sum(ops.square(a - n), axis=-1)
    return ops.maximum(d_ap - d_an + margin, 0.0)


@register_loss("knowledge_distillation", target="custom", aliases=("kd", "distillation"))
def knowledge_distillation(y_true, y_pred, temperature: float = 2.0):
    """Hinton et al. (2015) distillation: T² · KL(softmax(t/T) ‖ softmax(s/T)).

    ``y_true`` holds the teacher's logits for C classes; ``y_pred`` the
    student's logits for C' ≥ C classes, of which the first C are used.
    Returns per-sample values (the class axis is summed).
    """
    teacher = ops.convert_to_tensor(y_true)
    student = ops.convert_to_tensor(y_pred)[..., : teacher.shape[-1]]
    t = ops.cast(temperature, student.dtype)
    teacher = ops.cast(teacher, student.dtype)
    log_p_t = ops.log_softmax(teacher / t, axis=-1)
    log_p_s = ops.log_softmax(student / t, axis=-1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return kl * t * t


# Keras's losses last: multiloss's dice, tversky and GCE above stand for Keras's functions of those names.
register_keras_losses()
