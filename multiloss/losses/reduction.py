"""Element weights and reductions: the one place where they are applied.

A term's loss returns L, shaped ``[B]`` or ``[B, d1..dk]`` with d1..dk the leading
non-batch axes of its prediction (or target): :func:`check_loss_shape` checks it on
the static shapes, so a ``[B, B]`` or ``[2, B]`` L is a SpecError rather than a
silently wrong mean or a broadcast error inside the step.  The element
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

Missing labels (``mask_value``)
-------------------------------
A target equal to ``mask_value`` (or NaN, for ``mask_value: .nan``) is missing.
Missing targets are replaced by 0 before the loss sees them
(:func:`mask_targets`), so no NaN or infinity enters L or its gradient, and
their elements get ``mask = 0``.  How far a missing value reaches depends on
the loss (:attr:`multiloss.spec.loss_table.LossFn.elementwise`):

- an *elementwise* loss (BCE, MSE, MAE, Huber, …) masks **per element**: it
  is evaluated on ``[.., K, 1]`` (:func:`per_element_values`), so L keeps the
  last axis, ``[B, d1..dk, K]``, and only the missing labels get weight 0
  (:func:`per_element`; with K = 1 this is per position, and L keeps its shape).  A
  sample weight with the label axis (``[B, .., K]``: a weight per label) has the
  loss evaluated per element too, masked or not.
  The reductions count (position, label) pairs: ``weighted_mean`` is the mean
  over the valid pairs, ``sum_over_batch_size`` divides by all ``B·K`` pairs,
  ``sum_by_nonzero_weights`` by the valid (nonzero-weight) pairs, and ``sum``
  divides Σ W·L by K, so that it stays the sum over positions of the loss's
  own mean over its last axis (a missing label adding 0).  With no label
  missing every reduction equals the unmasked value.
- any other loss (categorical CE, KL, sparse CE, Dice, a user's own unless
  registered ``elementwise=True``) masks **per position**: an element of L is
  kept only when every component of its target is present along the axes the
  loss reduces: its ``axis`` param (1 for channels first, Dice's spatial axes),
  else the last (:func:`reduce_axes_to`).  Class ids are read along the same
  class axis (:func:`class_ids`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..spec.lazy import keras, ops, tf
from ..spec.loss_table import SUMMED_AXES, canonical_name, same_rank
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


def align(weight, values, what: str, described: str | None = None):
    """Broadcast ``weight`` to ``values``' shape; weights align from the left.

    ``[B]`` becomes ``[B, 1, .., 1]``; trailing axes of size 1 beyond L's rank
    are dropped.  Raises ``ValueError`` naming ``what`` (or, in full, ``described``: what the
    weight is and its shape) when they cannot match.
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
            f"{described or f'{what} of shape {tuple(weight.shape)}'} cannot weight per-element loss values "
            f"of shape {tuple(values.shape)}: give it shape [B] or a prefix of "
            f"{tuple(values.shape)}"
        )
    return ops.broadcast_to(weight, ops.shape(values))


def static_shape(x) -> tuple | None:
    """``x``'s static shape as a tuple (None for a size unknown when tracing); None when even its rank is."""
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = ops.shape(ops.convert_to_tensor(x))
    if getattr(shape, "rank", 0) is None:
        return None
    return tuple(None if d is None else int(d) for d in shape)


class LossShape(NamedTuple):
    """What :func:`check_loss_shape` says of L's static shape."""

    problem: str | None     # why L cannot be the term's per-element values; None when it can (or may)
    pending: list           # when the static shapes cannot tell: alternatives, each [(axis, size)] L must have


def _against(values: tuple, name: str, ref: tuple, batch_only: bool):
    """``(reason or None, [[(axis, size)], ...] still to check when the step runs)`` for L against one shape.

    L's first axis is the batch axis; its further axes are axes of ``ref`` past the batch, in their order
    (a loss may reduce any of them: the last, Dice's spatial axes, a channels-first class axis).  Each
    alternative of the list is one way L's axes can be ``ref``'s, with the sizes of L unknown when tracing
    that the step must find; an empty alternative means L fits as it is.
    """
    import itertools

    if not ref:
        return f"{name} has no batch axis", []
    v, r = values[0], ref[0]
    if v is not None and r is None:     # a size known when tracing cannot be the batch axis, whose size is not
        return f"L's first axis has size {v} while the batch axis has no fixed size: it is not the batch axis", []
    if v is not None and v != r:
        return f"L's first axis has size {v} but the batch has {r}", []
    first = [(0, r)] if v is None and r is not None else []
    if batch_only:
        return None, [first]
    rest = values[1:]
    if len(rest) > len(ref) - 1:
        return f"L has {len(values)} axes but {name} has {len(ref)}", []
    alternatives, reason = [], None
    for axes in itertools.combinations(range(1, len(ref)), len(rest)):
        unknown = list(first)
        for i, (size, axis) in enumerate(zip(rest, axes), start=1):
            if size is None:
                if ref[axis] is not None:
                    unknown.append((i, ref[axis]))
            elif ref[axis] is not None and size != ref[axis]:
                reason = reason or f"L's axis {i} has size {size} where {name} has {ref[axis]}"
                break
        else:
            alternatives.append(unknown)
    return (None, alternatives) if alternatives else (reason, [])


def check_loss_shape(values: tuple, references: dict[str, tuple], batch_only: bool = False) -> LossShape:
    """Whether L's static shape ``values`` (rank ≥ 1) can be per-sample or per-element values of an output.

    L's first axis is the batch axis, and its further axes are non-batch axes of one of ``references``
    (``{"y_pred": shape, "y_true": shape}``), in their order: ``[B]``, ``[B, d1..dk]`` (the last axes
    reduced), or with other axes reduced (per-class Dice ``[B, C]`` of ``[B, H, W, C]``).
    ``batch_only`` (a term over several outputs, whose values may be per pair) checks the first axis alone.
    A size unknown when tracing matches any size, but L's first axis of a known size does not match a batch
    axis of unknown size.  Where only sizes of L unknown when tracing stand between L and every shape, they
    are ``pending``: to be checked when the step runs.
    """
    problems, viable = [], []
    for name, ref in references.items():
        reason, alternatives = _against(values, name, ref, batch_only)
        if reason:
            problems.append(reason)
        viable += alternatives
    if not viable:
        return LossShape(problems[0], [])
    return LossShape(None, [] if any(not u for u in viable) else viable)


def valid_loss_shapes(references: dict[str, tuple]) -> list[tuple]:
    """The shapes L may have (:func:`check_loss_shape`): each reference's prefixes ``[B]``, ``[B, d1]``, …"""
    out = []
    for ref in references.values():
        for k in range(1, len(ref) + 1):
            if ref[:k] not in out:
                out.append(ref[:k])
    return out


def class_ids(y_true, y_pred, sparse: bool, axis: int = -1):
    """Integer class ids from targets: sparse ids, one-hot/probabilities, or binary.

    ``axis`` is the prediction's class axis (a loss's ``axis`` param: 1 for channels first); the ids
    are shaped like the prediction without it.
    """
    y_true = ops.convert_to_tensor(y_true)
    axis = axis % len(y_pred.shape)
    if sparse or len(y_true.shape) < len(y_pred.shape):
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[axis] == 1:
            y_true = ops.squeeze(y_true, axis=axis)
        return ops.cast(ops.round(y_true), "int32")
    if y_true.shape[axis] == 1:
        return ops.cast(ops.round(ops.squeeze(y_true, axis=axis)), "int32")
    return ops.cast(ops.argmax(y_true, axis=axis), "int32")


def class_weight_problem(table: dict[int, float], shape: tuple | None, axis: int, what: str) -> str | None:
    """What is wrong with ``class_weight`` ids for a prediction of static ``shape`` whose classes lie
    along ``axis``: an id beyond its classes weights nothing.  None when fine or the count is unknown."""
    n = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
    bad = sorted(c for c in table if not 0 <= c < n) if n and n > 1 else []
    if not bad:
        return None
    at = "" if axis == -1 else f" along axis {axis}"
    return f"class id(s) {bad} out of range: {what} has {n} classes{at} (ids 0..{n - 1})"


def class_weight_map(ids, table: dict[int, float], dtype):
    """Look ids up in ``table``; classes not in it weigh 1."""
    size = max(table) + 1
    vec = ops.convert_to_tensor([table.get(i, 1.0) for i in range(size)], dtype=dtype)
    inside = ops.logical_and(ids >= 0, ids < size)
    looked_up = ops.take(vec, ops.clip(ids, 0, size - 1))
    return ops.where(inside, looked_up, ops.ones_like(looked_up))


def valid_mask(y_true, mask_value: float):
    """Boolean map shaped like the target, True where the target is present.

    A component is missing where it equals ``mask_value``, or, for a NaN
    ``mask_value``, where it is NaN (NaN equals nothing).  Integer targets
    cannot hold NaN or a fractional ``mask_value``: none of them is missing then.
    """
    y_true = ops.convert_to_tensor(y_true)
    if not keras.backend.is_float_dtype(y_true.dtype) and (math.isnan(mask_value) or mask_value != int(mask_value)):
        return ops.ones_like(y_true, dtype="bool")
    if math.isnan(mask_value):
        return ops.logical_not(ops.isnan(y_true))
    return ops.not_equal(y_true, ops.cast(mask_value, y_true.dtype))


def mask_targets(y_true, mask_value: float):
    """``(targets, valid)``: the missing targets replaced by 0 (so no NaN reaches a loss or its gradient),
    and :func:`valid_mask`'s boolean map."""
    y_true = ops.convert_to_tensor(y_true)
    valid = valid_mask(y_true, mask_value)
    return ops.where(valid, y_true, ops.zeros_like(y_true)), valid


def per_element(loss, y_pred, mask_value: float | None = None, weight=None) -> bool:
    """Whether a head is evaluated per element (L shaped like ``y_pred``): an elementwise loss over a last
    axis of more than one label (with one, per element is per position, and L keeps the loss's own shape),
    with a ``mask_value`` or with a sample weight that has that label axis (``[B, .., K]``, a weight per
    label of a multi-label head)."""
    if not (loss.elementwise and not isinstance(y_pred, (list, tuple)) and len(y_pred.shape) > 1
            and y_pred.shape[-1] != 1):
        return False
    if mask_value is not None:
        return True
    shape = None if weight is None else static_shape(ops.convert_to_tensor(weight))
    return bool(shape) and len(shape) == len(y_pred.shape) and shape[-1] == y_pred.shape[-1]


def per_element_values(loss, y_true, y_pred):
    """An elementwise loss's values per element, shaped like ``y_pred``: the loss evaluated on
    ``[.., K, 1]``, whose mean over the last axis is the loss's own value."""
    y_true, y_pred = same_rank(y_true, y_pred)
    return loss(ops.expand_dims(y_true, -1), ops.expand_dims(y_pred, -1))


def loss_axes(params: dict) -> tuple[int, ...]:
    """The axes a loss reduces, from its ``axis`` param (an int or a list, as Dice's spatial axes);
    the last axis where it has none."""
    axis = params.get("axis", -1)
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def class_axis(loss) -> int:
    """The prediction's class axis under ``loss`` (a LossFn): its int ``axis`` param (1 for channels
    first), else the last; also the last for the losses whose ``axis`` sums (Dice's, Tversky's)."""
    axes = loss_axes(loss.params)
    return axes[0] if len(axes) == 1 and canonical_name(loss) not in SUMMED_AXES else -1


def head_class_axes(terms) -> dict[str, set[int]]:
    """The class axes of each head's one-output terms where one is not the last (:func:`class_axis`):
    ``{head: {axis, ...}}``; a head with none takes its classes from the last axis."""
    axes: dict[str, set[int]] = {}
    for t in terms:
        axis = class_axis(t.loss)
        if len(t.outputs) == 1 and axis != -1:
            axes.setdefault(t.outputs[0], set()).add(axis)
    return axes


def head_class_axis(terms, head: str) -> int:
    """The one class axis of ``head`` (:func:`head_class_axes`), or -1 (the last, or none agreed)."""
    found = head_class_axes(terms).get(head, set())
    return next(iter(found)) if len(found) == 1 else -1


def reduce_axes_to(mask, rank: int, axes: tuple[int, ...] = (-1,)):
    """Collapse a boolean mask to ``rank`` axes: a position is valid when all its components are.

    ``axes`` (the axes the loss reduces, :func:`loss_axes`) go first, then trailing axes."""
    n = len(mask.shape)
    own = sorted({a % n for a in axes if a % n})
    if n > rank and own and n - len(own) >= rank:
        mask = ops.all(mask, axis=tuple(own))
    while len(mask.shape) > rank:
        mask = ops.all(mask, axis=-1)
    return mask


def numerator_denominator(values, weights, reduction: str, per_element: bool = False):
    """Return ``(Σ W·L, denominator)`` for one replica's batch; W may be None.

    ``per_element``: L carries an elementwise loss's last axis (a masked head, see the module's
    docstring); ``sum`` then divides by its length K.
    """
    dtype = values.dtype
    num = ops.sum(values) if weights is None else ops.sum(values * weights)
    if reduction == "sum":
        den = ops.cast(ops.shape(values)[-1], dtype) if per_element else ops.ones((), dtype)
    elif weights is None or reduction == "sum_over_batch_size":
        den = ops.cast(ops.size(values), dtype)
    elif reduction == "sum_by_nonzero_weights":
        den = ops.sum(ops.cast(ops.not_equal(weights, 0), dtype))
    else:
        den = ops.sum(weights)
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
           "align", "static_shape", "LossShape", "check_loss_shape", "valid_loss_shapes",
           "class_ids", "class_weight_map", "class_weight_problem", "valid_mask", "mask_targets", "per_element", "per_element_values",
           "loss_axes", "class_axis", "reduce_axes_to", "numerator_denominator",
           "num_replicas", "cross_replica_sum"]
