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
