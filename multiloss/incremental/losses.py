"""Class-incremental losses and the target layout they read.

The **target layout** of a training step with ``num_old`` old and
``num_total`` seen classes is one row per sample::

    [ z_1 … z_num_old | one-hot over the new classes ]

where ``z`` are the previous model's *logits* (its raw outputs) for the old
classes, and the one-hot part is all zero for a sample of an old class (an
exemplar).  Logits are stored, not probabilities, because every probability a
loss needs derives from them: softmax(z / T) for distillation at temperature
T, sigmoid(z) for iCaRL's binary targets.  The issue's example rows
(``[0.1, 0.05, 0.79, …, 0, 0, 0]``) are :func:`icarl_targets` of a layout.

The losses are plain registered multiloss losses ``(y_true, y_pred, **params)
-> [B]`` with ``y_true`` the layout and ``y_pred`` the student's logits for
all ``num_total`` classes, so a method is a spec of weighted terms built by
the one composite machinery.  This module is a provider of the loss registry
(:data:`multiloss.spec.loss_table.LOSSES` imports it the first time it is read,
TensorFlow not needed): ``incremental_distillation``,
``incremental_classification``, ``icarl_bce``, ``pod_spatial``, ``pod_flat``,
``nca``, FOSTER's ``class_scaled_crossentropy`` and ``balanced_distillation``, and
the others here resolve by name without importing :mod:`multiloss.incremental` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..losses.builtin import knowledge_distillation
from ..spec.lazy import ops
from ..spec.loss_table import register_loss


def distillation_loss(teacher_logits, student_logits, temperature: float = 2.0):
    """Per-sample knowledge distillation on the teacher's classes: ``[B]``.

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton et al. 2015), the
    registered ``knowledge_distillation`` loss: the student's logits are
    sliced to the teacher's ``C`` classes (its first ``C`` columns).  The
    teacher is a constant target (no gradient); the gradient with respect to
    the student's logits is ``T · (softmax(s/T) − softmax(t/T))`` on those
    columns and 0 on the others.
    """
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    teacher = ops.stop_gradient(ops.convert_to_tensor(teacher_logits))
    student = ops.convert_to_tensor(student_logits)
    if teacher.shape[-1] is not None and student.shape[-1] is not None and teacher.shape[-1] > student.shape[-1]:
        raise ValueError(f"the teacher has {teacher.shape[-1]} classes but the student only "
                         f"{student.shape[-1]}: the student's logits must cover the teacher's classes")
    return knowledge_distillation(teacher, student, temperature)


def incremental_targets(old_outputs, labels, num_old: int, num_total: int) -> np.ndarray:
    """The target layout ``[old model's logits for the old classes | one-hot over the new]``.

    ``old_outputs``: ``[N, num_old]`` logits of the previous model (ignored
    when ``num_old`` is 0: pass ``None``); ``labels``: ``[N]`` class
    positions in ``0 .. num_total-1`` (positions in the class order, so the
    new classes are ``num_old .. num_total-1``).  Returns float32
    ``[N, num_total]``; a sample of an old class has zeros in the new part.
    ``num_old == num_total`` (no new part) is a teacher over every class, as
    in EEIL's balanced fine-tuning.
    """
    num_old, num_total = int(num_old), int(num_total)
    if not 0 <= num_old <= num_total or num_total < 1:
        raise ValueError(f"need 0 ≤ num_old ≤ num_total and num_total ≥ 1, got num_old={num_old}, "
                         f"num_total={num_total}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D array of integer class positions, got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_total):
        bad = labels[(labels < 0) | (labels >= num_total)][0]
        raise ValueError(f"label {bad} out of range: class positions are 0..{num_total - 1}")
    out = np.zeros((len(labels), num_total), "float32")
    if num_old:
        if old_outputs is None:
            raise ValueError(f"num_old={num_old}: give the previous model's logits for the old classes")
        old = np.asarray(old_outputs, "float32")
        if old.shape != (len(labels), num_old):
            raise ValueError(f"old_outputs must have shape (N, num_old) = {(len(labels), num_old)}, "
                             f"got {old.shape}")
        out[:, :num_old] = old
    new = labels >= num_old
    out[np.flatnonzero(new), labels[new]] = 1.0
    return out


def icarl_targets(layout, num_old: int):
    """iCaRL's binary targets from a layout: ``[sigmoid(z_old) | one-hot over the new]``."""
    layout = ops.convert_to_tensor(layout)
    return ops.concatenate([ops.sigmoid(layout[..., :num_old]), layout[..., num_old:]], axis=-1)


def _check_num_old(num_old: int, y_true) -> None:
    width = y_true.shape[-1]
    if width is not None and not 0 <= num_old <= width:
        raise ValueError(f"num_old={num_old} does not fit a target layout of {width} classes")


@register_loss("incremental_distillation")
def incremental_distillation(y_true, y_pred, num_old: int, temperature: float = 2.0,
                             groups: Sequence[int] | None = None, t_squared: bool = True):
    """Distillation on the old-class columns of the target layout: ``[B]``.

    :func:`distillation_loss` between the layout's old logits and the
    student's first ``num_old`` logits.  ``groups`` (sizes summing to
    ``num_old``) distils each group of classes with its own softmax and sums
    them: the cross-distillation of Castro et al. (2018), one term per old
    classification layer.  ``t_squared=False`` divides by T²: KL instead of
    T²·KL, the gradient of the softened cross-entropy of PyCIL and FACIL
    (which differs from KL by the teacher's entropy, a constant).
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    _check_num_old(num_old, y_true)
    sizes = list(groups) if groups else [num_old]
    if sum(sizes) != num_old or any(int(g) < 1 for g in sizes):
        raise ValueError(f"groups {sizes} must be positive sizes summing to num_old={num_old}")
    total, start = None, 0
    for size in sizes:
        stop = start + int(size)
        part = distillation_loss(y_true[..., start:stop], y_pred[..., start:stop], temperature)
        total = part if total is None else total + part
        start = stop
    return total if t_squared else total / (float(temperature) ** 2)


@register_loss("incremental_classification")
def incremental_classification(y_true, y_pred, num_old: int):
    """Cross-entropy over the new classes only (their own softmax): ``[B]``.

    ``−Σ_c t_c · log softmax(s_new)_c`` over the layout's one-hot part; 0 for
    an old-class sample, whose new part is all zero.  LwF's new-task loss.
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    _check_num_old(num_old, y_true)
    target = ops.cast(y_true[..., num_old:], y_pred.dtype)
    return -ops.sum(target * ops.log_softmax(y_pred[..., num_old:], axis=-1), axis=-1)


@register_loss("icarl_bce")
def icarl_bce(y_true, y_pred, num_old: int, columns: str = "all"):
    """iCaRL's sigmoid binary cross-entropy on the target layout: ``[B]``.

    Targets are :func:`icarl_targets` (sigmoid of the old logits, one-hot over
    the new classes); the loss sums ``−[q log σ(s) + (1 − q) log(1 − σ(s))]``
    over the ``columns``: ``new`` (iCaRL's classification part), ``old`` (its
    distillation part) or ``all`` (Rebuffi et al. 2017, Algorithm 3).
    """
    if columns not in ("all", "old", "new"):
        raise ValueError(f"columns must be 'all', 'old' or 'new', got {columns!r}")
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    _check_num_old(num_old, y_true)
    q = ops.cast(icarl_targets(y_true, num_old), y_pred.dtype)
    # Stable BCE with logits: max(s, 0) − s·q + log(1 + exp(−|s|)).
    bce = ops.maximum(y_pred, 0.0) - y_pred * q + ops.log1p(ops.exp(-ops.abs(y_pred)))
    lo, hi = {"all": (0, None), "old": (0, num_old), "new": (num_old, None)}[columns]
    return ops.sum(bce[..., lo:hi], axis=-1)




# --- PODNet (Douillard et al. 2020) --------------------------------------------------

def pod_pool(feature_map):
    """POD-spatial pooling of one feature map ``[B, H, W, C]`` (channels last): ``[B, (H + W)·C]``.

    The squared activations summed over the width (``[B, H, C]``) and over
    the height (``[B, W, C]``), flattened and concatenated, as PODNet's
    reference code (``pod_spatial_loss``: ``a**2``, then sums over each axis).
    """
    a = ops.square(ops.convert_to_tensor(feature_map))
    _, h, w, c = a.shape  # static: known for every backbone map
    width = ops.reshape(ops.sum(a, axis=2), (-1, h * c))   # sum over W: H·C
    height = ops.reshape(ops.sum(a, axis=1), (-1, w * c))  # sum over H: W·C
    return ops.concatenate([width, height], axis=-1)


def _l2_normalize(x, eps: float = 1e-12):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), eps)


@register_loss("pod_spatial")
def pod_spatial(y_true, y_pred, sizes: Sequence[int]):
    """POD-spatial distillation: ``[B]``.

    ``y_true`` / ``y_pred``: the old / new network's pooled feature maps
    (:func:`pod_pool` of each map, concatenated; ``sizes`` their widths).
    Each map's part is L2-normalised, the per-sample Euclidean distance
    between old and new taken, and the distances averaged over the maps.
    """
    y_true = ops.stop_gradient(ops.convert_to_tensor(y_true))
    y_pred = ops.convert_to_tensor(y_pred)
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive widths, got {sizes}")
    total, start = None, 0
    for size in sizes:
        a = _l2_normalize(ops.cast(y_true[..., start:start + size], y_pred.dtype))
        b = _l2_normalize(y_pred[..., start:start + size])
        d = ops.sqrt(ops.sum(ops.square(a - b), axis=-1) + 1e-12)
        total = d if total is None else total + d
        start += size
    return total / len(sizes)


@register_loss("pod_flat")
def pod_flat(y_true, y_pred):
    """POD-flat distillation of the embedding: ``1 − cos(h_old, h_new)`` per sample, ``[B]``
    (the reference code's ``cosine_embedding_loss`` with target 1)."""
    y_true = ops.stop_gradient(ops.convert_to_tensor(y_true))
    y_pred = ops.convert_to_tensor(y_pred)
    return 1.0 - ops.sum(_l2_normalize(ops.cast(y_true, y_pred.dtype)) * _l2_normalize(y_pred), axis=-1)


@register_loss("nca")
def nca(y_true, y_pred, margin: float = 0.6, hinge: bool = True, margin_units: str = "logit"):
    """PODNet's NCA loss with a margin on the (scaled) class similarities: ``[B]``.

    ``−(z_y − m) + log Σ_{c ≠ y} exp(z_c)``, clipped at 0 when ``hinge``, with ``z = η·ŷ`` the
    local similarity classifier's output (η its scale, ŷ the class similarities in [−1, 1]).

    ``margin_units``: ``logit``: m = δ, the margin in the units of z (in similarity units δ/η);
    ``similarity``: m = η·δ, i.e. ``η(ŷ_y − δ)``, Douillard et al. (2020, Eq. 7)'s form; then
    ``y_pred`` is ``[z | η]`` (the network's ``scaled`` output: η as the last column).
    ``y_true``: class positions ``[B]``.
    """
    if margin_units not in ("logit", "similarity"):
        raise ValueError(f"margin_units must be 'logit' or 'similarity', got {margin_units!r}")
    y_pred = ops.convert_to_tensor(y_pred)
    if margin_units == "similarity":
        y_pred, eta = y_pred[..., :-1], y_pred[..., -1]
        shift = margin * eta
    else:
        shift = margin
    labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
    onehot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
    positive = ops.sum(onehot * y_pred, axis=-1) - shift
    others = ops.where(onehot > 0, ops.full_like(y_pred, -1e9), y_pred)
    loss = -positive + ops.logsumexp(others, axis=-1)
    return ops.maximum(loss, 0.0) if hinge else loss


@register_loss("margin_ranking")
def margin_ranking(y_true, y_pred, num_old: int, k: int = 2, margin: float = 0.5):
    """LUCIR's inter-class separation (Hou et al. 2019, Eq. 8) on a cosine classifier: ``[B]``.

    ``y_pred`` is ``[η·cos | η]`` (the network's ``scaled`` output), so ``cos = z / η``.  For a sample
    of an old class (position < ``num_old``): ``(1/K) Σ_{k ≤ K} max(0, m − cos_y + cos_k)`` over the
    ``K`` new classes with the highest cosines (the hard negatives); 0 for a new-class sample.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    cos = y_pred[..., :-1] / y_pred[..., -1:]
    labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
    onehot = ops.one_hot(labels, ops.shape(cos)[-1], dtype=cos.dtype)
    positive = ops.sum(onehot * cos, axis=-1, keepdims=True)
    hard = ops.top_k(cos[..., num_old:], k=int(k), sorted=False)[0]
    per = ops.mean(ops.maximum(margin - positive + hard, 0.0), axis=-1)
    return ops.where(labels < num_old, per, ops.zeros_like(per))


@register_loss("penalty")
def penalty(y_true, y_pred):
    """A model output that is already the loss (EWC's quadratic penalty, the same in every row): ``[B]``."""
    return ops.convert_to_tensor(y_pred)[..., 0]


@register_loss("task_crossentropy")
def task_crossentropy(y_true, y_pred, groups: Sequence[int]):
    """Task-incremental cross-entropy: the softmax over the classes of the sample's own task only
    (``groups``: the classes each step adds; class positions ``[B]``), one head per task: ``[B]``."""
    sizes = [int(g) for g in groups]
    y_pred = ops.convert_to_tensor(y_pred)
    labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
    bounds = np.cumsum([0] + sizes)
    task = np.zeros(int(bounds[-1]), "int32")
    for j in range(len(sizes)):
        task[bounds[j]:bounds[j + 1]] = j
    task = ops.convert_to_tensor(task)
    same = ops.equal(ops.take(task, labels)[:, None], task[None, : ops.shape(y_pred)[-1]])
    masked = ops.where(same, y_pred, ops.full_like(y_pred, -1e9))
    onehot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
    return -ops.sum(onehot * ops.log_softmax(masked, axis=-1), axis=-1)


@register_loss("tempered_crossentropy")
def tempered_crossentropy(y_true, y_pred, temperature: float = 1.0):
    """Cross-entropy of softmax(z / T) on the true class (class positions ``[B]``): ``[B]``; DER's
    classifier re-training at T = 5 (the reference code's ``CrossEntropy(logits / T, y)``)."""
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    y_pred = ops.convert_to_tensor(y_pred) / float(temperature)
    labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
    onehot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
    return -ops.sum(onehot * ops.log_softmax(y_pred, axis=-1), axis=-1)


# --- FOSTER (Wang et al. 2022) --------------------------------------------------------

def _class_vector(values: Sequence[float], y_pred, key: str):
    v = np.asarray(values, "float32")
    width = y_pred.shape[-1]
    if v.ndim != 1 or (width is not None and len(v) != width):
        raise ValueError(f"{key} must be one value per class ({width}), got shape {v.shape}")
    if not (v > 0).all():
        raise ValueError(f"{key} must be positive, got {v.tolist()}")
    return ops.cast(ops.convert_to_tensor(v), y_pred.dtype)


@register_loss("class_scaled_crossentropy")
def class_scaled_crossentropy(y_true, y_pred, scales: Sequence[float]):
    """Cross-entropy of softmax(z_c / s_c) on the true class (class positions ``[B]``): ``[B]``; FOSTER's
    logits alignment with the class-balanced weights as ``scales`` (PyCIL: ``CE(logits / per_cls_weights)``)."""
    y_pred = ops.convert_to_tensor(y_pred)
    z = y_pred / _class_vector(scales, y_pred, "scales")
    labels = ops.cast(ops.reshape(ops.convert_to_tensor(y_true), (-1,)), "int32")
    onehot = ops.one_hot(labels, ops.shape(z)[-1], dtype=z.dtype)
    return -ops.sum(onehot * ops.log_softmax(z, axis=-1), axis=-1)


@register_loss("balanced_distillation")
def balanced_distillation(y_true, y_pred, weights: Sequence[float], temperature: float = 2.0):
    """FOSTER's balanced knowledge distillation (the compression): ``[B]``.

    ``−Σ_c q_c log softmax(s/T)_c`` with ``q_c ∝ w_c · softmax(t/T)_c`` renormalised per sample: the
    teacher's (``y_true``, logits over every class) softened probabilities re-weighted by the class
    weights ``w`` (PyCIL's ``BKD``; no T² factor).  The teacher is a constant target.
    """
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    y_pred = ops.convert_to_tensor(y_pred)
    teacher = ops.stop_gradient(ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype))
    if teacher.shape[-1] is not None and y_pred.shape[-1] is not None and teacher.shape[-1] != y_pred.shape[-1]:
        raise ValueError(f"the teacher has {teacher.shape[-1]} classes, the student {y_pred.shape[-1]}")
    q = ops.softmax(teacher / float(temperature), axis=-1) * _class_vector(weights, y_pred, "weights")
    q = q / ops.sum(q, axis=-1, keepdims=True)
    return -ops.sum(q * ops.log_softmax(y_pred / float(temperature), axis=-1), axis=-1)


__all__ = ["distillation_loss", "incremental_targets", "icarl_targets", "incremental_distillation",
           "incremental_classification", "icarl_bce", "pod_pool", "pod_spatial", "pod_flat", "nca",
           "tempered_crossentropy", "margin_ranking", "penalty", "task_crossentropy",
           "class_scaled_crossentropy", "balanced_distillation"]
