"""Class-incremental losses against numpy references and hand-checkable cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.incremental import distillation_loss, icarl_targets, incremental_targets
from multiloss.incremental.losses import icarl_bce, incremental_classification, incremental_distillation


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kd(teacher, student, T):
    """Hinton et al.: T² · KL(softmax(t/T) ‖ softmax(s/T)), the student cut to the teacher's classes."""
    c = teacher.shape[-1]
    p, q = softmax(teacher / T), softmax(student[:, :c] / T)
    return T * T * (p * (np.log(p) - np.log(q))).sum(-1)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_distillation_hand_checked_values():
    # Teacher uniform over 2 classes, student logits [ln 3, 0]: at T=1, q = [3/4, 1/4] and
    # KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3).
    t, s = np.zeros((1, 2), "float32"), np.array([[math.log(3.0), 0.0]], "float32")
    assert float(distillation_loss(t, s, 1.0)[0]) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # At T=2 the student's softened q₀ = √3 / (1 + √3): T²·KL = 2 ln((1 + √3)² / (4√3)).
    r3 = math.sqrt(3)
    assert float(distillation_loss(t, s, 2.0)[0]) == pytest.approx(2 * math.log((1 + r3) ** 2 / (4 * r3)), rel=1e-5)
    # Equal distributions distil to zero.
    assert float(distillation_loss(s, s, 3.0)[0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_distillation_matches_numpy_and_slices_the_student(T):
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(6, 3)).astype("float32") * 3
    student = rng.normal(size=(6, 5)).astype("float32") * 3  # two new classes beyond the teacher's
    got = np.asarray(distillation_loss(teacher, student, T))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, np_kd(teacher, student, T), rtol=1e-5, atol=1e-6)
    # The registered loss is the same math.
    np.testing.assert_allclose(got, np.asarray(ml.losses.get("kd", temperature=T)(teacher, student)), rtol=1e-6)


def test_distillation_gradient_reaches_the_student_not_the_teacher():
    """d/ds Σ T²·KL = T·(softmax(s/T) − softmax(t/T)) on the teacher's classes, 0 on the new ones;
    a detached or constant student would give zeros here."""
    rng = np.random.default_rng(1)
    T = 2.0
    teacher = tf.Variable(rng.normal(size=(4, 3)).astype("float32"))
    student = tf.Variable(rng.normal(size=(4, 5)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(distillation_loss(teacher, student, T))
    g_student = tape.gradient(loss, student).numpy()
    expected = np.zeros((4, 5), "float32")
    expected[:, :3] = T * (softmax(student.numpy()[:, :3] / T) - softmax(teacher.numpy() / T))
    np.testing.assert_allclose(g_student, expected, atol=1e-6)
    assert np.abs(g_student[:, :3]).min() > 1e-4
    g_teacher = tape.gradient(loss, teacher)
    assert g_teacher is None or not np.any(g_teacher.numpy())


def test_distillation_validation():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError, match="teacher has 3 classes but the student only 2"):
        distillation_loss(np.zeros((1, 3)), np.zeros((1, 2)))


def test_target_layout_by_hand():
    z = np.array([[1.5, -2.0], [0.25, 3.0], [-1.0, 0.0]], "float32")
    got = incremental_targets(z, np.array([1, 3, 2]), num_old=2, num_total=4)
    expected = np.array([[1.5, -2.0, 0, 0],       # an old-class exemplar: no one-hot part
                         [0.25, 3.0, 0, 1],       # new class 3
                         [-1.0, 0.0, 1, 0]], "float32")
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32
    # The first step has no old classes: the layout is the one-hot.
    np.testing.assert_array_equal(incremental_targets(None, np.array([1, 0]), 0, 2), [[0, 1], [1, 0]])


def test_icarl_targets_reproduce_the_issue_rows():
    """The issue's rows: an old-class sample [0.1, 0.05, 0.79, …, 0, 0, 0] and a new-class sample
    [0.1, 0.09, 0.3, 0.4, …, 1, 0, 0] are the sigmoid of the stored old logits + the one-hot."""
    probs = np.array([[0.1, 0.05, 0.79, 0.2], [0.1, 0.09, 0.3, 0.4]])
    logits = np.log(probs / (1 - probs)).astype("float32")
    layout = incremental_targets(logits, np.array([2, 4]), num_old=4, num_total=7)
    q = np.asarray(icarl_targets(layout, 4))
    np.testing.assert_allclose(q, [[0.1, 0.05, 0.79, 0.2, 0, 0, 0], [0.1, 0.09, 0.3, 0.4, 1, 0, 0]], atol=1e-6)


def test_target_layout_validation():
    z = np.zeros((2, 2), "float32")
    with pytest.raises(ValueError, match=r"old_outputs must have shape \(N, num_old\) = \(2, 2\), got \(2, 3\)"):
        incremental_targets(np.zeros((2, 3)), np.array([0, 2]), 2, 4)
    with pytest.raises(ValueError, match="label 4 out of range: class positions are 0..3"):
        incremental_targets(z, np.array([0, 4]), 2, 4)
    with pytest.raises(ValueError, match="need 0 ≤ num_old ≤ num_total"):
        incremental_targets(z, np.array([0, 1]), 5, 4)
    with pytest.raises(ValueError, match="integer class positions"):
        incremental_targets(z, np.array([0.0, 1.0]), 2, 4)
    with pytest.raises(ValueError, match="give the previous model's logits"):
        incremental_targets(None, np.array([0, 3]), 2, 4)


def _layout_case(seed=2, n=5, num_old=3, num_total=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_total, n)
    labels[:2] = [0, num_total - 1]  # at least one old and one new sample
    layout = incremental_targets(rng.normal(size=(n, num_old)) * 2, labels, num_old, num_total)
    student = (rng.normal(size=(n, num_total)) * 2).astype("float32")
    return layout, student, labels


def test_icarl_bce_matches_numpy_and_splits_into_old_plus_new():
    layout, s, _ = _layout_case()
    q = np.concatenate([sigmoid(layout[:, :3]), layout[:, 3:]], axis=1)
    p = sigmoid(s.astype("float64"))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    for columns, cols in (("all", slice(None)), ("old", slice(0, 3)), ("new", slice(3, None))):
        got = np.asarray(icarl_bce(layout, s, num_old=3, columns=columns))
        np.testing.assert_allclose(got, bce[:, cols].sum(1), rtol=1e-5)
    with pytest.raises(ValueError, match="columns must be"):
        icarl_bce(layout, s, num_old=3, columns="both")


def test_new_class_cross_entropy_matches_numpy():
    layout, s, labels = _layout_case()
    got = np.asarray(incremental_classification(layout, s, num_old=3))
    logp = np.log(softmax(s[:, 3:].astype("float64")))
    expected = np.where(labels >= 3, -logp[np.arange(5), np.clip(labels - 3, 0, 1)], 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert got[0] == 0.0 and got[1] > 0  # old-class sample: no new-class loss


def test_layout_distillation_per_group_matches_numpy():
    layout, s, _ = _layout_case(num_old=4, num_total=6)
    one = np.asarray(incremental_distillation(layout, s, num_old=4, temperature=2.0))
    np.testing.assert_allclose(one, np_kd(layout[:, :4], s, 2.0), rtol=1e-5)
    grouped = np.asarray(incremental_distillation(layout, s, num_old=4, temperature=2.0, groups=[2, 2]))
    expected = np_kd(layout[:, :2], s[:, :2], 2.0) + np_kd(layout[:, 2:4], s[:, 2:4], 2.0)
    np.testing.assert_allclose(grouped, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"groups \[2, 1\] must be positive sizes summing to num_old=4"):
        incremental_distillation(layout, s, num_old=4, groups=[2, 1])


def test_losses_are_registered_with_their_parameters():
    fn = ml.losses.get("incremental_distillation", num_old=2, temperature=3.0)
    assert fn.params == {"num_old": 2, "temperature": 3.0}
    with pytest.raises(TypeError, match="valid parameters: num_old, columns"):
        ml.losses.get("icarl_bce", num_old=2, colums="old")
    ml.losses.get("incremental_classification", num_old=1)
