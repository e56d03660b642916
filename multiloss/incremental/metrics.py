"""Class-incremental figures: per-step and per-task accuracy, forgetting, confusion.

Classes are *positions* in the class order; ``groups`` are the numbers of
classes each step adds (``[2, 2, 2, 2, 2]``), so task j is the j-th block of
positions.  ``A[t, j]`` is the accuracy on task j's test samples after step t
(predictions over every class seen by step t; NaN for j > t).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_order(num_classes: int, seed: int = 1993) -> list[int]:
    """The class order drawn from ``seed``, as the literature draws it.

    ``np.random.seed(seed); np.random.permutation(num_classes)`` (iCaRL,
    PyCIL), here with a private ``RandomState`` so the global NumPy state is
    left alone.  Seed 1993 on CIFAR-100 gives iCaRL's order 68, 56, 78, ...
    """
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def task_of(labels: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """The task (step) index of each class position."""
    bounds = np.cumsum(groups)
    labels = np.asarray(labels)
    if labels.size and labels.max() >= bounds[-1]:
        raise ValueError(f"class position {labels.max()} beyond the {bounds[-1]} classes of groups {list(groups)}")
    return np.searchsorted(bounds, labels, side="right")


def task_accuracies(y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[int]) -> list[float]:
    """Accuracy on the samples of each task in ``groups`` (NaN for a task without samples)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tasks = task_of(y_true, groups)
    out = []
    for j in range(len(groups)):
        rows = tasks == j
        out.append(float((y_pred[rows] == y_true[rows]).mean()) if rows.any() else float("nan"))
    return out


def average_incremental_accuracy(accuracies: Sequence[float]) -> float:
    """The mean of the accuracies on all seen classes after each step, the first included
    (Rebuffi et al. 2017)."""
    if not len(accuracies):
        raise ValueError("no steps")
    return float(np.mean(accuracies))


def forgetting(matrix: np.ndarray, step: int | None = None) -> float | None:
    """Average forgetting after ``step`` (default: the last row), Chaudhry et al. (2018).

    For each task j learned before ``step``:
    f_j = max_{l ∈ [j, step−1]} A[l, j] − A[step, j]; the average over those
    tasks.  None after the first step (nothing to forget yet).  A task without test samples (its
    accuracies NaN) is left out: the average is over the tasks measured (None if none is).
    """
    a = np.asarray(matrix, "float64")
    k = a.shape[0] - 1 if step is None else int(step)
    if k < 1:
        return None
    f = [np.max(a[j:k, j]) - a[k, j] for j in range(k) if np.isfinite(a[j:k + 1, j]).all()]
    return float(np.mean(f)) if f else None


def backward_transfer(matrix: np.ndarray) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM): ``1/(T−1) Σ_{i<T} (R[T, i] − R[i, i])``.

    ``R[t, i]``: accuracy on task i after learning task t (rows: steps, columns: tasks; 0-based here, so
    the last row is T−1).  Negative: forgetting.  None with fewer than two steps; a task without test
    samples (NaN) is left out, as in :func:`forgetting`."""
    r = np.asarray(matrix, "float64")
    last = r.shape[0] - 1
    if last < 1:
        return None
    d = [r[last, i] - r[i, i] for i in range(last) if np.isfinite(r[last, i]) and np.isfinite(r[i, i])]
    return float(np.mean(d)) if d else None


def forward_transfer(matrix: np.ndarray, baseline: Sequence[float] | None) -> float | None:
    """Forward transfer (Lopez-Paz & Ranzato 2017): ``1/(T−1) Σ_{i≥2} (R[i−1, i] − b̄_i)``, with ``b̄_i``
    the accuracy on task i of the network at its random initialisation.  None when a ``R[i−1, i]`` (the
    accuracy on a task before learning it) is missing (NaN): a class-incremental network has no outputs
    for classes it has not met, so this is defined only where the future tasks can be evaluated."""
    r = np.asarray(matrix, "float64")
    if r.shape[0] < 2 or baseline is None:
        return None
    before = [r[i - 1, i] for i in range(1, r.shape[0])]
    if np.isnan(before).any():
        return None
    return float(np.mean([b - float(baseline[i]) for i, b in zip(range(1, r.shape[0]), before)]))


def task_aware_accuracies(y_true: np.ndarray, scores: np.ndarray, groups: Sequence[int]) -> list[float]:
    """Task-incremental accuracy per task: each task's samples classified among that task's classes only
    (the task id known at test time; the task's head is its block of columns of ``scores``)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    tasks = task_of(y_true, groups)
    bounds = np.concatenate([[0], np.cumsum(groups)])
    out = []
    for j in range(len(groups)):
        rows = tasks == j
        if not rows.any():
            out.append(float("nan"))
            continue
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        pred = lo + scores[rows][:, lo:hi].argmax(-1)
        out.append(float((pred == y_true[rows]).mean()))
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of class i predicted as j."""
    out = np.zeros((num_classes, num_classes), "int64")
    np.add.at(out, (np.asarray(y_true, "int64"), np.asarray(y_pred, "int64")), 1)
    return out


__all__ = ["class_order", "task_of", "task_accuracies", "average_incremental_accuracy", "forgetting",
           "confusion_matrix", "backward_transfer", "forward_transfer", "task_aware_accuracies"]
