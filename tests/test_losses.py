"""The registry and multiloss's own losses against numpy formulas."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml

REQUIRED = [
    "mse", "mae", "mape", "msle", "binary_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "kld", "logcosh", "hinge", "squared_hinge", "categorical_hinge",
    "poisson", "cosine_similarity", "huber", "ctc", "binary_focal_crossentropy",
    "categorical_focal_crossentropy", "focal", "dice", "contrastive", "triplet",
    "knowledge_distillation", "kd",
]


def test_registry_holds_keras_losses_and_aliases():
    assert set(REQUIRED) <= set(ml.losses.names())
    assert ml.losses.get("mse").fn is keras.losses.mean_squared_error
    assert ml.losses.get("kld").fn is keras.losses.kl_divergence
    assert ml.losses.get("logcosh").fn is keras.losses.log_cosh


def test_register_loss_by_name_and_params():
    @ml.register_loss("_cubed_error_for_tests")
    def cubed(y_true, y_pred, scale=1.0):
        return scale * keras.ops.mean(keras.ops.abs(y_true - y_pred) ** 3, axis=-1)

    fn = ml.losses.get("_cubed_error_for_tests", scale=2.0)
    np.testing.assert_allclose(np.asarray(fn(np.array([[2.0, 0.0]]), np.zeros((1, 2)))), [2.0 * 4.0])
    with pytest.raises(TypeError, match="valid parameters: scale"):
        ml.losses.get("_cubed_error_for_tests", sclae=1)


def test_keras_loss_class_params_are_used():
    """A Keras Loss class resolved by import string keeps its params; L is unreduced."""
    fn = ml.losses.get("keras.losses:CategoricalCrossentropy", from_logits=True, label_smoothing=0.2)
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], "float32")
    onehot = np.eye(3, dtype="float32")[[0, 2]]
    smoothed = onehot * 0.8 + 0.2 / 3
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(fn(onehot, logits)), -(smoothed * logp).sum(-1), rtol=1e-5)


def test_dice_and_tversky_per_sample():
    rng = np.random.default_rng(0)
    t = (rng.random((3, 4, 4, 2)) > 0.5).astype("float32")
    p = rng.random((3, 4, 4, 2)).astype("float32")
    tp = (t * p).sum((1, 2, 3))
    ref_dice = 1 - (2 * tp + 1e-6) / (t.sum((1, 2, 3)) + p.sum((1, 2, 3)) + 1e-6)
    np.testing.assert_allclose(np.asarray(ml.losses.get("dice")(t, p)), ref_dice, rtol=1e-5)
    fp, fn_ = ((1 - t) * p).sum((1, 2, 3)), (t * (1 - p)).sum((1, 2, 3))
    ref_tv = 1 - (tp + 1e-6) / (tp + 0.7 * fp + 0.3 * fn_ + 1e-6)
    got = ml.losses.get("tversky", alpha=0.7, beta=0.3)(t, p)
    np.testing.assert_allclose(np.asarray(got), ref_tv, rtol=1e-5)


def test_contrastive_on_embeddings_and_on_distance():
    a = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], "float32")
    b = np.array([[3.0, 4.0], [0.3, 0.4], [1.0, 1.0]], "float32")
    same = np.array([1.0, 0.0, 0.0], "float32")
    # d = 5, 0.5, 0 ; margin 1: same → d² ; different → max(1 - d, 0)²
    expected = [25.0, 0.25, 1.0]
    fn = ml.losses.get("contrastive", margin=1.0)
    np.testing.assert_allclose(np.asarray(fn(same, [a, b])), expected, rtol=1e-5, atol=1e-6)
    d = np.array([[5.0], [0.5], [0.0]], "float32")
    np.testing.assert_allclose(np.asarray(fn(same, d)), expected, rtol=1e-5, atol=1e-6)


def test_triplet():
    a = np.array([[0.0, 0.0], [0.0, 0.0]], "float32")
    p = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    n = np.array([[3.0, 0.0], [0.0, 1.0]], "float32")
    # 1 - 9 + 0.5 < 0 → 0 ; 4 - 1 + 0.5 = 3.5
    got = ml.losses.get("triplet", margin=0.5)(None, [a, p, n])
    np.testing.assert_allclose(np.asarray(got), [0.0, 3.5], rtol=1e-6)


@pytest.mark.parametrize("spec, problem", [
    ("terms: [{name: t, outputs: [a, b], loss: triplet}]", "terms.0.outputs: loss 'triplet' takes 3 model outputs, got 2"),
    ("terms: [{name: c, outputs: [a, b, d], target: s, loss: contrastive}]",
     "terms.0.outputs: loss 'contrastive' takes 1 or 2 model outputs, got 3"),
    ("outputs: {a: {loss: triplet}}", "outputs.a.loss: loss 'triplet' takes 3 model outputs, a head is one; give it "
                                      "as a term"),
])
def test_a_loss_over_several_outputs_is_given_as_many_as_it_takes(spec, problem):
    """triplet on two outputs passed the spec and died in fit on "not enough values to unpack"; contrastive
    on three silently left the third out."""
    with pytest.raises(ml.SpecError, match=re.escape(problem)):
        ml.load_spec(spec)
    ml.load_spec("terms: [{name: t, outputs: [a, b, n], loss: triplet}, "
                 "{name: c, outputs: [a, b], target: s, loss: contrastive}]")


def test_contrastive_refuses_pair_labels_other_than_0_and_1():
    """−1/+1 pair labels (a common convention) gave y·d² + (1 − y)·max(m − d, 0)² < 0, which training
    then maximised; refused in compute and inside fit, naming the term."""
    spec = "terms: [{name: pair, outputs: [ea, eb], target: same, loss: contrastive}]"
    emb = {"ea": np.ones((2, 3), "float32"), "eb": np.zeros((2, 3), "float32")}
    rule = r"term 'pair': label -1 is not in 0\.\.1, the labels 'contrastive' takes \(1 for a same pair"
    with pytest.raises(ml.SpecError, match=rule):
        ml.build_loss(spec).compute({"same": np.array([1.0, -1.0])}, emb)
    d = np.sqrt(3.0)                                            # ‖1 − 0‖ over 3 axes; margin 1
    total = float(ml.build_loss(spec).compute({"same": np.array([1.0, 0.0])}, emb).total)
    assert total == pytest.approx((d ** 2 + max(1 - d, 0) ** 2) / 2, rel=1e-6)
    soft = float(ml.build_loss(spec).compute({"same": np.array([0.9, 0.1])}, emb).total)   # soft pairs: taken
    assert soft == pytest.approx((0.9 * d ** 2 + 0.1 * d ** 2) / 2, rel=1e-6)              # max(1 − d, 0) = 0
    x = keras.Input((3,), name="x")
    model = keras.Model(x, {"ea": keras.layers.Dense(3, name="ea")(x), "eb": keras.layers.Dense(3, name="eb")(x)})
    ml.compile(model, spec, optimizer="sgd")
    with pytest.raises(ml.SpecError, match=rule):
        model.fit(np.ones((4, 3), "float32"), {"same": np.array([1, -1, 1, -1], "float32")}, verbose=0)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_knowledge_distillation_formula_slicing_and_gradient():
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(4, 3)).astype("float32")
    student = rng.normal(size=(4, 5)).astype("float32")  # 2 new classes: sliced away
    T = 3.0
    pt, ps = _softmax(teacher / T), _softmax(student[:, :3] / T)
    ref = T * T * (pt * (np.log(pt) - np.log(ps))).sum(-1)
    fn = ml.losses.get("kd", temperature=T)
    np.testing.assert_allclose(np.asarray(fn(teacher, student)), ref, rtol=1e-5)
    s = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(fn(teacher, s))
    grad = tape.gradient(value, s).numpy()
    assert np.abs(grad[:, :3]).sum() > 1e-3  # flows to the student's old-class logits
    np.testing.assert_array_equal(grad[:, 3:], 0.0)
    # Analytic gradient of T²·KL w.r.t. student logits: T·(p_s − p_t).
    np.testing.assert_allclose(grad[:, :3], T * (ps - pt), rtol=1e-4, atol=1e-6)
