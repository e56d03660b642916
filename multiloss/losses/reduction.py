"""Element weights and reductions: the one place where they are applied.

A term's loss returns L, shaped ``[B]`` or ``[B, d1..dk]``.  The element
weights are ``W = sample_weight × class_weight(y_true) × mask``, each
broadcast to L's shape.  A reduction turns ``(L, W)`` into a numerator and a
denominator; the composite loss sums denominators across replicas so that a
distributed step gives exactly the single-device value.

=========================  ============================  ===================
reduction                  numerator                     denominator
=========================  ============================  ===================
``sum_over_batch_size``    Σ W·L                         number of elements
``sum_by_nonzero_weights`` Σ W·L                         count(W ≠ 0)
``weighted_mean``          Σ W·L                         Σ W
``sum``                    Σ W·L                         1
=========================  ============================  ===================

Keras's own spellings are accepted as aliases: ``mean`` (Keras's alias of
``sum_over_batch_size``) and ``mean_with_sample_weight`` (Σ W·L / Σ W, i.e.
``weighted_mean``); a spec holding them resolves to the canonical name.
"""

from __future__ import annotations

from ..spec.lazy import ops, tf
from ..spec.reductions import REDUCTION_ALIASES, REDUCTIONS, Reduction, ReductionName, canonical_reduction


def _align_unknown_rank(weight, values, what: str):
    """``weight`` of unknown rank (``tf.function``'s relaxed signature) as L's rank, by the rule of
    :func:`align`, checked when the step runs: trailing axes beyond L's rank must be 1."""
    rank, shape = len(values.shape), tf.shape(weight)
    extra = tf.maximum(tf.size(shape) - rank, 0)
    check = tf.debugging.assert_equal(
        tf.reduce_prod(shape[rank:]), 1,
        message=f"{what} has more axes than the per-element loss values {tuple(values.shape)} and they are not "
                "of size 1: give it shape [B] or a prefix of the values' shape")
    with tf.control_dependencies([check]):
        kept = shape[:tf.size(shape) - extra]
        target = tf.concat([kept, tf.ones([rank - tf.size(kept)], shape.dtype)], 0)
        return tf.ensure_shape(tf.reshape(weight, target), [None] * rank)


def align(weight, values, what: str):
    """Broadcast ``weight`` to ``values``' shape; weights align from the left.

    ``[B]`` becomes ``[B, 1, .., 1]``; trailing axes of size 1 beyond L's rank
    are dropped.  Raises ``ValueError`` naming ``what`` when they cannot match.
    """
    weight = ops.cast(weight, values.dtype)
    if weight.shape.rank is None:       # a retraced step (another weight rank than the first fit's)
        weight = _align_unknown_rank(weight, values, what)
    while len(weight.shape) > len(values.shape) and weight.shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    while len(weight.shape) < len(values.shape):
        weight = ops.expand_dims(weight, axis=-1)
    ok = len(weight.shape) == len(values.shape) and all(
        w is None or v is None or w in (1, v) for w, v in zip(weight.shape, values.shape)
    )
    if not ok:
        raise ValueError(
            f"{what} of shape {tuple(weight.shape)} cannot weight per-element loss values "
            f"of shape {tuple(values.shape)}: give it shape [B] or a prefix of "
            f"{tuple(values.shape)}"
        )
    return ops.broadcast_to(weight, ops.shape(values))


def class_ids(y_true, y_pred, sparse: bool):
    """Integer class ids from targets: sparse ids, one-hot/probabilities, or binary."""
    y_true = ops.convert_to_tensor(y_true)
    if sparse or len(y_true.shape) < len(y_pred.shape):
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, axis=-1)
        return ops.cast(ops.round(y_true), "int32")
    if y_true.shape[-1] == 1:
        return ops.cast(ops.round(ops.squeeze(y_true, axis=-1)), "int32")
    return ops.cast(ops.argmax(y_true, axis=-1), "int32")


def class_weight_map(ids, table: dict[int, float], dtype):
    """Look ids up in ``table``; classes not in it weigh 1."""
    size = max(table) + 1
    vec = ops.convert_to_tensor([table.get(i, 1.0) for i in range(size)], dtype=dtype)
    inside = ops.logical_and(ids >= 0, ids < size)
    looked_up = ops.take(vec, ops.clip(ids, 0, size - 1))
    return ops.where(inside, looked_up, ops.ones_like(looked_up))


def valid_mask(y_true, mask_value: float):
    """Boolean map, True where no component of the target equals ``mask_value``."""
    equal = ops.equal(y_true, ops.cast(mask_value, y_true.dtype))
    return ops.logical_not(equal)


def reduce_axes_to(mask, values):
    """Collapse trailing axes of a boolean mask (all valid) to L's rank."""
    while len(mask.shape) > len(values.shape):
        mask = ops.all(mask, axis=-1)
    return mask


def numerator_denominator(values, weights, reduction: str):
    """Return ``(Σ W·L, denominator)`` for one replica's batch; W may be None."""
    dtype = values.dtype
    if weights is None:
        num = ops.sum(values)
        count = ops.cast(ops.size(values), dtype)
        den = {"sum": ops.ones((), dtype)}.get(reduction, count)
        return num, den
    num = ops.sum(values * weights)
    if reduction == "sum_over_batch_size":
        den = ops.cast(ops.size(values), dtype)
    elif reduction == "sum_by_nonzero_weights":
        den = ops.sum(ops.cast(ops.not_equal(weights, 0), dtype))
    elif reduction == "weighted_mean":
        den = ops.sum(weights)
    else:
        den = ops.ones((), dtype)
    return num, den


def num_replicas() -> int:
    """Replicas in the current ``tf.distribute`` strategy (1 outside one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def cross_replica_sum(x):
    """Sum ``x`` over replicas when called inside a multi-replica step."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


# The reduction names are re-exported: this was their home before the spec layer had them.
__all__ = ["REDUCTIONS", "REDUCTION_ALIASES", "Reduction", "ReductionName", "canonical_reduction",
           "align", "class_ids", "class_weight_map", "valid_mask", "reduce_axes_to", "numerator_denominator",
           "num_replicas", "cross_replica_sum"]
