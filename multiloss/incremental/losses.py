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
the one composite machinery.  Importing :mod:`multiloss.incremental`
registers them: ``incremental_distillation``, ``incremental_classification``
and ``icarl_bce``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

from ..losses import knowledge_distillation, register_loss


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
                             groups: Sequence[int] | None = None):
    """Distillation on the old-class columns of the target layout: ``[B]``.

    :func:`distillation_loss` between the layout's old logits and the
    student's first ``num_old`` logits.  ``groups`` (sizes summing to
    ``num_old``) distils each group of classes with its own softmax and sums
    them: the cross-distillation of Castro et al. (2018), one term per old
    classification layer.
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
    return total


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


__all__ = ["distillation_loss", "incremental_targets", "icarl_targets", "incremental_distillation",
           "incremental_classification", "icarl_bce"]
