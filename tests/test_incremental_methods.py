"""Each method's loss terms through the composite loss, against numpy; gradient flow."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.incremental import (
    EEIL,
    WA,
    FineTune,
    ICaRL,
    IncrementalNet,
    Joint,
    LwF,
    Step,
    incremental_targets,
)
from multiloss.incremental.methods import distillation_term, get_method
from multiloss.incremental.network import cnn


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kd(t, s, T):
    p, q = softmax(t / T), softmax(s[:, : t.shape[1]] / T)
    return T * T * (p * (np.log(p) - np.log(q))).sum(-1)


def ce(s, labels):
    return -np.log(softmax(s)[np.arange(len(labels)), labels])


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def batch(step, seed=0, n=8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, step.num_total, n)
    labels[:2] = [0, step.num_total - 1]
    teacher = (rng.normal(size=(n, step.num_old)) * 2).astype("float64")
    s = (rng.normal(size=(n, step.num_total)) * 2).astype("float64")
    layout = incremental_targets(teacher if step.num_old else None, labels, step.num_old, step.num_total)
    return labels, teacher, s, {"class": labels, "target": layout}


def composite(method, step, y, s):
    result = ml.build_loss(method.spec(step)).compute(y, {"logits": s.astype("float32")})
    return {k: float(v) for k, v in result.losses.items()}, \
        {k: float(v) for k, v in result.weights.items()}, float(result.total)


STEP2 = Step(2, (2, 2, 2))  # 4 old classes, 2 new


@pytest.mark.parametrize("method", [FineTune(), Joint()])
def test_cross_entropy_bounds(method):
    labels, _, s, y = batch(STEP2)
    losses, weights, total = composite(method, STEP2, y, s)
    assert weights == {"classification": 1.0}
    assert total == pytest.approx(ce(s, labels).mean(), rel=1e-5)


def test_lwf_terms():
    labels, teacher, s, y = batch(STEP2)
    new = labels >= 4
    ce_new = np.where(new, -np.log(softmax(s[:, 4:])[np.arange(8), np.clip(labels - 4, 0, 1)]), 0.0)
    losses, weights, total = composite(LwF(distillation_weight=0.5), STEP2, y, s)
    assert weights == {"classification": 1.0, "distillation": 0.5}
    assert losses["classification"] == pytest.approx(ce_new.mean(), rel=1e-5)
    assert losses["distillation"] == pytest.approx(kd(teacher, s, 2.0).mean(), rel=1e-5)
    assert total == pytest.approx(ce_new.mean() + 0.5 * kd(teacher, s, 2.0).mean(), rel=1e-5)
    # The first step: classification only (nothing to distil).
    assert list(composite(LwF(), Step(0, (2,)), batch(Step(0, (2,)))[3], batch(Step(0, (2,)))[2])[0]) == \
        ["classification"]


def test_icarl_terms_sum_to_the_papers_bce():
    labels, teacher, s, y = batch(STEP2)
    q = np.concatenate([sigmoid(teacher), np.eye(6)[labels][:, 4:] * (labels >= 4)[:, None]], axis=1)
    p = sigmoid(s)
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    losses, weights, total = composite(ICaRL(), STEP2, y, s)
    assert weights == {"classification": 1.0, "distillation": 1.0}
    assert losses["classification"] == pytest.approx(bce[:, 4:].sum(1).mean(), rel=1e-5)
    assert losses["distillation"] == pytest.approx(bce[:, :4].sum(1).mean(), rel=1e-5)
    assert total == pytest.approx(bce.sum(1).mean(), rel=1e-5)


def test_eeil_cross_distillation_per_step_and_balanced_stage():
    labels, teacher, s, y = batch(STEP2)
    per_step = kd(teacher[:, :2], s[:, :2], 2.0) + kd(teacher[:, 2:4], s[:, 2:4], 2.0)
    losses, weights, total = composite(EEIL(), STEP2, y, s)
    assert weights == {"classification": 1.0, "distillation": 1.0}
    assert losses["classification"] == pytest.approx(ce(s, labels).mean(), rel=1e-5)
    assert losses["distillation"] == pytest.approx(per_step.mean(), rel=1e-5)
    one = composite(EEIL(per_step_distillation=False), STEP2, y, s)[0]["distillation"]
    assert one == pytest.approx(kd(teacher, s, 2.0).mean(), rel=1e-5)
    # Balanced fine-tuning: the stage-1 network teaches every class, each step's classes apart.
    stage1 = np.random.default_rng(5).normal(size=(8, 6)) * 2
    y_ft = {"class": labels, "target": incremental_targets(stage1, labels, 6, 6)}
    result = ml.build_loss(EEIL().balanced_spec(STEP2)).compute(y_ft, {"logits": s.astype("float32")})
    expected = sum(kd(stage1[:, i:i + 2], s[:, i:i + 2], 2.0) for i in (0, 2, 4)).mean()
    assert float(result.losses["distillation"]) == pytest.approx(expected, rel=1e-5)


def test_wa_weights_follow_old_over_seen_classes():
    labels, teacher, s, y = batch(STEP2)
    losses, weights, total = composite(WA(), STEP2, y, s)
    lam = 4 / 6
    assert weights["classification"] == pytest.approx(1 - lam) and weights["distillation"] == pytest.approx(lam)
    assert total == pytest.approx((1 - lam) * ce(s, labels).mean() + lam * kd(teacher, s, 2.0).mean(), rel=1e-5)
    assert composite(WA(distillation_weight=0.25), STEP2, y, s)[1]["distillation"] == pytest.approx(0.25)


def test_terms_are_logged_like_any_other_term():
    """Fit one epoch with WA's spec: history carries each term's loss and weight, and
    loss = Σ weight · term."""
    keras.utils.set_random_seed(0)
    net = IncrementalNet(cnn({"input_shape": (8, 8, 1)}, filters=(4,), dense=8))
    net.expand(6)
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 6, 40)
    y = {"class": labels, "target": incremental_targets(net.logits(x)[:, :4], labels, 4, 6)}
    model = ml.compile(net.model(), WA().spec(STEP2), optimizer="adam")
    h = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    assert h["classification_weight"][0] == pytest.approx(1 / 3) and h["distillation_weight"][0] == pytest.approx(2 / 3)
    for e in range(2):
        assert h["loss"][e] == pytest.approx(h["classification_loss"][e] / 3 + 2 * h["distillation_loss"][e] / 3,
                                             rel=1e-5)
    assert h["distillation_loss"][0] > 0


def test_distillation_gradient_flows_through_the_composite_to_the_student():
    """d total / d kernel of the distillation term alone, against numpy: features^T · T(q − p) / B
    on the old columns and exactly zero on the new ones."""
    keras.utils.set_random_seed(1)
    net = IncrementalNet(cnn({"input_shape": (8, 8, 1)}, filters=(4,), dense=8))
    net.expand(2)
    rng = np.random.default_rng(1)
    x = rng.random((12, 8, 8, 1)).astype("float32")
    teacher = (rng.normal(size=(12, 2)) * 3).astype("float32")  # a teacher unlike the student
    net.expand(4)
    labels = rng.integers(0, 4, 12)
    y = {"class": labels, "target": incremental_targets(teacher, labels, 2, 4)}
    loss = ml.build_loss({"terms": [distillation_term(2, 2.0)]}, net.model())
    with tf.GradientTape() as tape:
        total = loss.compute(y, net.model()(x, training=True)).total
    grads = tape.gradient(total, net.model().trainable_variables)
    g = dict(zip([v.path for v in net.model().trainable_variables], grads))
    kernel_grad = next(v for k, v in g.items() if k.endswith("logits/kernel")).numpy()
    feats, s = net.features(x), net.logits(x)
    dlogits = 2.0 * (softmax(s[:, :2] / 2.0) - softmax(teacher / 2.0)) / 12
    np.testing.assert_allclose(kernel_grad[:, :2], feats.T @ dlogits, rtol=1e-4, atol=1e-6)
    assert not kernel_grad[:, 2:].any()
    assert np.abs(kernel_grad[:, :2]).max() > 1e-3
    conv_grad = next(v for k, v in g.items() if "conv" in k and k.endswith("kernel")).numpy()
    assert np.abs(conv_grad).max() > 0  # the feature extractor learns from distillation too


def test_method_registry_and_params():
    assert get_method("eeil") is EEIL
    with pytest.raises(LookupError, match="unknown method 'icarll'; did you mean 'icarl'"):
        get_method("icarll")
    with pytest.raises(ValueError):
        LwF(temperature=0)
    assert WA().head == {"nonnegative": True, "bias": False}
    assert WA(clip_weights=False, bias=True).head == LwF().head == {"nonnegative": False, "bias": True}
    assert ICaRL().classifier == "nme" and ICaRL(classifier="cnn").classifier == "cnn"
    assert [m.replay for m in (FineTune(), Joint(), LwF(), ICaRL(), EEIL(), WA())] == \
        [False, False, False, True, True, True]
