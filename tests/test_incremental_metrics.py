"""Accuracy matrix, forgetting (Chaudhry et al. 2018), class order, confusion matrix."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from multiloss.incremental import average_incremental_accuracy, class_order, forgetting
from multiloss.incremental.metrics import confusion_matrix, task_accuracies, task_of

NAN = float("nan")


def test_forgetting_by_hand():
    a = np.array([[0.9, NAN, NAN],
                  [0.6, 0.8, NAN],
                  [0.5, 0.7, 0.9]])
    # f_0 = max(0.9, 0.6) − 0.5 = 0.4, f_1 = 0.8 − 0.7 = 0.1: F = 0.25.
    assert forgetting(a) == pytest.approx(0.25)
    assert forgetting(a, step=1) == pytest.approx(0.3)  # after step 1: 0.9 − 0.6
    assert forgetting(a, step=0) is None  # nothing learned before the first step
    # The best accuracy need not be right after learning the task: max over all earlier steps.
    b = np.array([[0.5, NAN, NAN],
                  [0.7, 0.8, NAN],
                  [0.6, 0.4, 0.9]])
    assert forgetting(b) == pytest.approx(((0.7 - 0.6) + (0.8 - 0.4)) / 2)
    # Improving on an old task gives negative forgetting (backward transfer).
    assert forgetting(np.array([[0.5, NAN], [0.7, 0.9]])) == pytest.approx(-0.2)


def test_average_incremental_accuracy_includes_the_first_step():
    assert average_incremental_accuracy([1.0, 0.8, 0.6]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        average_incremental_accuracy([])


def test_task_accuracies_by_hand():
    groups = [2, 2, 1]
    y = np.array([0, 1, 2, 3, 3, 4, 4])
    pred = np.array([0, 0, 2, 3, 1, 4, 0])
    assert task_of(y, groups).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert task_accuracies(y, pred, groups) == pytest.approx([0.5, 2 / 3, 0.5])
    with pytest.raises(ValueError, match="beyond the 5 classes"):
        task_of(np.array([5]), groups)


def test_class_order_is_the_literatures():
    # iCaRL's published CIFAR-100 order (np.random.seed(1993); np.random.permutation(100)).
    assert class_order(100, 1993)[:20] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76,
                                           40, 89, 3, 92, 55, 9, 26, 80, 43, 38]
    state = np.random.get_state()
    np.random.seed(1993)
    expected = np.random.permutation(10).tolist()
    np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    assert class_order(10) == expected == [4, 2, 7, 6, 0, 3, 5, 8, 9, 1]
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global state untouched


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    np.testing.assert_array_equal(confusion_matrix(y, p, 6), sk_confusion(y, p, labels=range(6)))


def test_backward_and_forward_transfer_by_hand():
    """GEM (Lopez-Paz & Ranzato 2017): BWT = 1/(T−1) Σ_{i<T} (R_{T,i} − R_{i,i}),
    FWT = 1/(T−1) Σ_{i≥2} (R_{i−1,i} − b̄_i), worked out by hand on a 3-task matrix."""
    from multiloss.incremental.metrics import backward_transfer, forward_transfer

    nan = float("nan")
    r = np.array([[0.9, nan, nan], [0.6, 0.8, nan], [0.5, 0.7, 0.95]])
    # ((0.5 − 0.9) + (0.7 − 0.8)) / 2
    assert backward_transfer(r) == pytest.approx(-0.25)
    assert backward_transfer(r[:1]) is None
    full = np.array([[0.9, 0.1, 0.3], [0.6, 0.8, 0.2], [0.5, 0.7, 0.95]])
    # ((R[0,1] − b̄_1) + (R[1,2] − b̄_2)) / 2 = ((0.1 − 0.15) + (0.2 − 0.25)) / 2
    assert forward_transfer(full, [0.1, 0.15, 0.25]) == pytest.approx(-0.05)
    assert forward_transfer(r, [0.1, 0.15, 0.25]) is None      # R[i−1, i] not measured (class-incremental)
    assert forward_transfer(full, None) is None


def test_a_task_without_test_samples_is_left_out_of_forgetting_and_transfer():
    """Task 1 (a class with no test images) has NaN accuracies: the averages are over tasks 0 and 2,
    by hand, where they were NaN (null in metrics.json)."""
    from multiloss.incremental.metrics import backward_transfer

    nan = float("nan")
    a = np.array([[0.9, nan, nan, nan], [0.7, nan, nan, nan], [0.6, nan, 0.8, nan], [0.5, nan, 0.6, 0.9]])
    assert forgetting(a) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.6)) / 2)
    assert backward_transfer(a) == pytest.approx(((0.5 - 0.9) + (0.6 - 0.8)) / 2)
    assert forgetting(a[:2, :2][:, 1:]) is None and backward_transfer(a[:2, 1:2]) is None   # none measured


def test_task_aware_accuracy_by_hand():
    """Task id known: each sample classified among its task's classes only."""
    from multiloss.incremental.metrics import task_aware_accuracies

    y = np.array([0, 1, 2, 3])
    scores = np.array([[0.9, 0.1, 2.0, 0.0],    # task 0: 0 among {0, 1}: right (class-incremental: 2, wrong)
                       [0.8, 0.2, 0.0, 0.0],    # task 0: 0, wrong
                       [5.0, 5.0, 0.3, 0.1],    # task 1: 2 among {2, 3}: right
                       [0.0, 0.0, 0.1, 0.2]])   # task 1: 3, right
    assert task_aware_accuracies(y, scores, [2, 2]) == [0.5, 1.0]
    assert task_accuracies(y, scores.argmax(1), [2, 2]) == [0.0, 0.5]
