"""Missing labels (``mask_value``) against numpy: per element for elementwise losses and metrics, per
position otherwise; NaN masks; gradients exactly 0 on the missing entries; a fit on NaN targets."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.core.metrics import HeadMetrics
from multiloss.spec.loss_table import KERAS_ELEMENTWISE, KERAS_FUNCTIONS

B, K, C = 40, 5, 4
MISSING = 0.3


def _multilabel(seed=0, mask=-1.0):
    """Probabilities [B, K], 0/1 labels with 30% missing (set to ``mask``), and the missing map."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, (B, K)).astype("float32")
    t = (rng.random((B, K)) < 0.5).astype("float32")
    missing = rng.random((B, K)) < MISSING
    t[missing] = mask
    return t, p, missing


def _bce(t, p):
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _value_and_grad(spec, y_true, y_pred):
    composite = ml.build_loss(spec)
    pred = {k: tf.constant(v) for k, v in y_pred.items()}
    with tf.GradientTape() as tape:
        tape.watch(pred)
        total = composite.compute(y_true, pred).total
    grads = tape.gradient(total, pred)
    return float(total), {k: g.numpy() for k, g in grads.items()}


def _spec(loss, mask, reduction="weighted_mean"):
    return {"outputs": {"y": {"loss": loss, "mask_value": mask, "reduction": reduction}}}


# --- losses: the value and the gradient -------------------------------------------------------


def test_multilabel_bce_masks_per_label_value_and_gradient():
    t, p, missing = _multilabel()
    assert 0.2 < missing.mean() < 0.4 and missing.any(1).sum() > B // 2   # most samples miss a label
    valid = ~missing
    n = valid.sum()
    value, grad = _value_and_grad(_spec("binary_crossentropy", -1.0), {"y": t}, {"y": p})
    assert value == pytest.approx(_bce(t, p)[valid].mean(), rel=1e-5)
    g = grad["y"]
    assert np.all(g[missing] == 0.0)
    # d/dp of −(t·log p + (1−t)·log(1−p)), over the n valid pairs
    np.testing.assert_allclose(g[valid], ((p - t) / (p * (1 - p)))[valid] / n, rtol=1e-4)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum_by_nonzero_weights", "weighted_mean", "sum"])
def test_every_reduction_counts_label_pairs(reduction):
    t, p, missing = _multilabel(seed=1)
    valid = ~missing
    losses = _bce(t, p) * valid
    expected = {"sum_over_batch_size": losses.sum() / (B * K), "sum_by_nonzero_weights": losses.sum() / valid.sum(),
                "weighted_mean": losses.sum() / valid.sum(), "sum": losses.sum() / K}[reduction]
    value, _ = _value_and_grad(_spec("bce", -1.0, reduction), {"y": t}, {"y": p})
    assert value == pytest.approx(expected, rel=1e-5)
    # With no label missing, the mask changes nothing: Keras's value (the mean over K per sample).
    full = np.where(missing, 1.0, t).astype("float32")
    unmasked = _bce(full, p).mean(-1)
    want = unmasked.sum() if reduction == "sum" else unmasked.mean()
    assert _value_and_grad(_spec("bce", -1.0, reduction), {"y": full}, {"y": p})[0] == pytest.approx(want, rel=1e-5)


def test_sample_weights_and_missing_labels_give_the_weighted_mean_over_present_pairs():
    t, p, missing = _multilabel(seed=2)
    sw = np.random.default_rng(3).uniform(0.5, 2.0, B).astype("float32")
    w = sw[:, None] * ~missing
    res = ml.build_loss(_spec("bce", -1.0)).compute({"y": t}, {"y": p}, sw)
    assert float(res.total) == pytest.approx((w * _bce(t, p)).sum() / w.sum(), rel=1e-5)


def test_regression_mse_with_nan_mask_value_and_gradient():
    rng = np.random.default_rng(4)
    p = rng.normal(size=(B, 3)).astype("float32")
    t = rng.normal(size=(B, 3)).astype("float32")
    missing = rng.random((B, 3)) < MISSING
    t[missing] = np.nan
    value, grad = _value_and_grad(_spec("mse", float("nan")), {"y": t}, {"y": p})
    valid = ~missing
    assert np.isfinite(value)
    assert value == pytest.approx(((p - t) ** 2)[valid].mean(), rel=1e-5)
    g = grad["y"]
    assert np.all(np.isfinite(g)) and np.all(g[missing] == 0.0)
    np.testing.assert_allclose(g[valid], (2 * (p - t) / valid.sum())[valid], rtol=1e-4)


def test_a_single_label_head_keeps_its_loss_shape():
    """With K = 1 per element is per position: L stays [B, H, W] for a [B, H, W, 1] depth head."""
    rng = np.random.default_rng(13)
    p = rng.normal(size=(3, 4, 4, 1)).astype("float32")
    t = rng.normal(size=(3, 4, 4, 1)).astype("float32")
    missing = rng.random(t.shape) < MISSING
    t[missing] = np.nan
    composite = ml.build_loss(_spec("huber", float("nan")))
    (values, weights), = composite.elementwise({"y": t}, {"y": p}).values()
    assert tuple(values.shape) == (3, 4, 4)
    np.testing.assert_array_equal(np.asarray(weights), (~missing[..., 0]).astype("float32"))
    err = np.abs(p - t)[~missing]
    huber = np.where(err <= 1.0, 0.5 * err ** 2, err - 0.5)
    assert float(composite.compute({"y": t}, {"y": p}).total) == pytest.approx(huber.mean(), rel=1e-5)


@pytest.mark.parametrize("loss", ["mae", "huber", "log_cosh", "msle", "mape", "poisson", "binary_focal_crossentropy"])
def test_elementwise_losses_with_nan_targets_are_finite_and_equal_the_per_label_mean(loss):
    rng = np.random.default_rng(5)
    p = rng.uniform(0.1, 0.9, (B, 3)).astype("float32")
    t = rng.uniform(0.1, 0.9, (B, 3)).astype("float32")
    missing = rng.random((B, 3)) < MISSING
    t_nan = t.copy()
    t_nan[missing] = np.nan
    value, grad = _value_and_grad(_spec(loss, float("nan")), {"y": t_nan}, {"y": p})
    # The same loss on the present pairs alone, each pair its own row: Keras's value with nothing to mask.
    fn = ml.losses.get(loss)
    expected = float(np.mean(fn(t[~missing][:, None], p[~missing][:, None])))
    assert value == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(grad["y"])) and np.all(grad["y"][missing] == 0.0)


@pytest.mark.parametrize("mask", [-1.0, float("nan")])
def test_sparse_ce_masks_per_sample_value_and_gradient(mask):
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(B, C))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    labels = rng.integers(0, C, B).astype("float32")
    missing = rng.random(B) < MISSING
    labels[missing] = mask
    ce = -np.log(probs[np.arange(B), np.where(missing, 0, labels).astype(int)])
    for reduction, expected in [("weighted_mean", ce[~missing].mean()), ("sum_over_batch_size", ce[~missing].sum() / B)]:
        value, grad = _value_and_grad(_spec("sparse_categorical_crossentropy", mask, reduction),
                                      {"y": labels}, {"y": probs})
        assert value == pytest.approx(expected, rel=1e-5)
        assert np.all(grad["y"][missing] == 0.0) and np.all(grad["y"][~missing].any(-1))


def test_distribution_losses_mask_per_position():
    """Categorical CE and KL over [B, C]: one missing component drops the whole sample."""
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(C), B).astype("float32")
    t = rng.dirichlet(np.ones(C), B).astype("float32")
    missing = np.zeros((B, C), bool)
    missing[rng.random(B) < MISSING, rng.integers(0, C)] = True
    t[missing] = np.nan
    dropped = missing.any(-1)
    cce = -(t * np.log(p)).sum(-1)
    kl = (t * np.log(t / p)).sum(-1)
    for loss, per_sample in [("categorical_crossentropy", cce), ("kl_divergence", kl)]:
        value, grad = _value_and_grad(_spec(loss, float("nan")), {"y": t}, {"y": p})
        assert value == pytest.approx(per_sample[~dropped].mean(), rel=1e-5), loss
        assert np.all(grad["y"][dropped] == 0.0) and np.all(np.isfinite(grad["y"]))


# --- which losses are elementwise ------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:In loss")  # Keras warns of a class axis of 1, which is the point here
@pytest.mark.parametrize("name", sorted(n for n, kind in KERAS_FUNCTIONS.items() if kind == "same"))
def test_the_elementwise_table_says_which_losses_are_a_mean_over_their_last_axis(name):
    """Declared elementwise ⇔ the loss equals the mean over K of itself on [.., K, 1] (on random data)."""
    rng = np.random.default_rng(8)
    p = rng.uniform(0.05, 0.95, (6, K)).astype("float32")
    t = rng.uniform(0.05, 0.95, (6, K)).astype("float32")
    fn = ml.losses.get(name)
    whole = np.asarray(fn(t, p), "float64")
    per_element = np.asarray(fn(t[..., None], p[..., None]), "float64")
    holds = per_element.shape == (6, K) and np.allclose(per_element.mean(-1), whole, rtol=1e-5)
    assert holds == (name in KERAS_ELEMENTWISE)
    assert fn.elementwise == (name in KERAS_ELEMENTWISE)


def test_an_axis_other_than_the_last_makes_bce_per_position():
    assert ml.losses.get("binary_crossentropy", axis=-1).elementwise
    assert not ml.losses.get("binary_crossentropy", axis=1).elementwise


def test_a_users_loss_masks_per_position_unless_registered_elementwise():
    def l1(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)

    ml.register_loss("_l1_per_position_for_tests")(l1)
    ml.register_loss("_l1_elementwise_for_tests", target="same", elementwise=True)(l1)
    t, p, missing = _multilabel(seed=9)
    err = np.abs(t - p)
    got = {name: _value_and_grad(_spec(name, -1.0), {"y": t}, {"y": p})[0]
           for name in ("_l1_per_position_for_tests", "_l1_elementwise_for_tests")}
    assert got["_l1_per_position_for_tests"] == pytest.approx(err[~missing.any(-1)].mean(), rel=1e-5)
    assert got["_l1_elementwise_for_tests"] == pytest.approx(err[~missing].mean(), rel=1e-5)
    with pytest.raises(ValueError, match="elementwise loss takes targets shaped like the prediction"):
        ml.register_loss("_l1_custom_elementwise_for_tests", elementwise=True)


# --- metrics ---------------------------------------------------------------------------------


def _head_metrics(spec, y_true, y_pred, sample_weight=None) -> dict[str, float]:
    metrics = HeadMetrics(ml.load_spec(spec))
    metrics.update_state(y_true, y_pred, sample_weight)
    return {k: float(v) for k, v in metrics.result().items()}


def test_metrics_skip_missing_labels_per_element_and_per_position():
    t, p, missing = _multilabel(seed=10, mask=np.nan)
    valid = ~missing
    rng = np.random.default_rng(11)
    r_pred = rng.normal(size=(B, 3)).astype("float32")
    r_true = rng.normal(size=(B, 3)).astype("float32")
    r_missing = rng.random((B, 3)) < MISSING
    r_true[r_missing] = np.nan
    labels = rng.integers(0, C, B).astype("float32")
    s_missing = rng.random(B) < MISSING
    labels[s_missing] = -1
    probs = rng.dirichlet(np.ones(C), B).astype("float32")
    spec = {"outputs": {
        "tags": {"loss": "bce", "mask_value": float("nan"), "metrics": ["binary_accuracy", "auc", "precision",
                                                                       "categorical_accuracy"]},
        "reg": {"loss": "mse", "mask_value": float("nan"), "metrics": ["mae", "RootMeanSquaredError"]},
        "cls": {"loss": "sparse_categorical_crossentropy", "mask_value": -1, "metrics": ["accuracy"]}}}
    got = _head_metrics(spec, {"tags": t, "reg": r_true, "cls": labels}, {"tags": p, "reg": r_pred, "cls": probs})
    hit = (p > 0.5) == (t == 1)
    assert got["tags_binary_accuracy"] == pytest.approx(hit[valid].mean(), rel=1e-6)
    assert got["tags_precision"] == pytest.approx(((p > 0.5) & (t == 1))[valid].sum() / (p > 0.5)[valid].sum(),
                                                  rel=1e-6)
    auc = keras.metrics.AUC()
    auc.update_state(t[valid], p[valid])                 # Keras's AUC on the present pairs alone
    assert got["tags_auc"] == pytest.approx(float(auc.result()), rel=1e-6)
    whole = valid.all(-1)                                # categorical accuracy: per sample
    argmax_hit = np.argmax(np.where(missing, 0, t), -1) == np.argmax(p, -1)
    assert got["tags_categorical_accuracy"] == pytest.approx(argmax_hit[whole].mean(), rel=1e-6)
    err = (r_pred - r_true)[~r_missing]
    assert got["reg_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-5)
    assert got["reg_RootMeanSquaredError"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-5)
    assert got["cls_accuracy"] == pytest.approx(
        (np.argmax(probs, -1) == labels)[~s_missing].mean(), rel=1e-6)


def test_exact_match_accuracy_counts_present_entries():
    rng = np.random.default_rng(15)
    p = rng.integers(0, 2, (B, K)).astype("float32")
    t = rng.integers(0, 2, (B, K)).astype("float32")
    missing = rng.random((B, K)) < MISSING
    t[missing] = np.nan
    spec = {"outputs": {"y": {"loss": "bce", "mask_value": float("nan"), "metrics": ["keras.metrics:Accuracy"]}}}
    got = _head_metrics(spec, {"y": t}, {"y": p})
    assert got["y_accuracy"] == pytest.approx((p == t)[~missing].mean(), rel=1e-6)


def test_metrics_of_a_channels_first_head_read_its_class_axis():
    """A head whose loss is categorical crossentropy over ``axis: 1`` ([B, C, H, W], C, H, W all
    different) has accuracy and top-5 over axis 1, per pixel, with missing pixels and pixels of
    a sample weighted 0 left out; Keras's metrics alone would argmax the last (W) axis."""
    rng = np.random.default_rng(21)
    b, c, h, w = 6, 7, 4, 5
    probs = rng.dirichlet(np.ones(c), (b, h, w)).transpose(0, 3, 1, 2).astype("float32")
    labels = rng.integers(0, c, (b, h, w))
    missing = rng.random((b, h, w)) < MISSING
    onehot = np.eye(c, dtype="float32")[labels].transpose(0, 3, 1, 2)
    y = np.where(missing[:, None], -1.0, onehot)
    sw = {"m": (np.arange(b) != 2).astype("float32")}     # sample 2 has no label for this head
    spec = {"outputs": {"m": {"loss": {"name": "categorical_crossentropy", "params": {"axis": 1}},
                              "mask_value": -1, "metrics": ["accuracy", "top_k_categorical_accuracy"]}}}
    got = _head_metrics(spec, {"m": y}, {"m": probs}, sw)
    kept = ~missing & (sw["m"] != 0)[:, None, None]
    assert got["m_accuracy"] == pytest.approx((probs.argmax(1) == labels)[kept].mean(), rel=1e-6)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    in_top5 = (top5 == labels[:, None]).any(1)
    assert got["m_top_k_categorical_accuracy"] == pytest.approx(in_top5[kept].mean(), rel=1e-6)


class ThreeClassIoU(keras.metrics.MeanIoU):
    """Mean IoU over 3 classes from probabilities (its confusion matrix counts in int)."""

    def __init__(self, name="iou", **kwargs):
        super().__init__(num_classes=3, sparse_y_pred=False, name=name, **kwargs)


def test_an_integer_metric_gets_integer_mask_weights_and_counts_present_pixels():
    """Mean IoU left missing pixels out with a float weight: Keras warned "You are passing weight as
    `float`, but dtype is `int`" at every trace.  The value is numpy's IoU over the present pixels."""
    rng = np.random.default_rng(25)
    probs = rng.dirichlet(np.ones(3), (4, 3, 5)).astype("float32")
    labels = rng.integers(0, 3, (4, 3, 5))
    missing = rng.random((4, 3, 5)) < MISSING
    spec = {"outputs": {"m": {"loss": "sparse_categorical_crossentropy", "mask_value": -1,
                              "metrics": ["test_missing_labels:ThreeClassIoU"]}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _head_metrics(spec, {"m": np.where(missing, -1, labels)}, {"m": probs})
    t, p = labels[~missing], probs.argmax(-1)[~missing]
    iou = [((t == c) & (p == c)).sum() / ((t == c) | (p == c)).sum() for c in range(3) if ((t == c) | (p == c)).any()]
    assert got["m_iou"] == pytest.approx(np.mean(iou), rel=1e-6)


def test_a_channels_first_heads_sparse_targets_and_equal_axes_line_up():
    """Sparse targets [B, H, W] of a channels-first head (loss axis 1, and -3 on another term: the
    same axis at rank 4) are compared with the argmax over C per pixel; moving their axis 1 (H)
    last, as the prediction's, made them [B, W, H]."""
    rng = np.random.default_rng(23)
    b, c, h, w = 5, 4, 3, 6
    probs = rng.dirichlet(np.ones(c), (b, h, w)).transpose(0, 3, 1, 2).astype("float32")
    labels = rng.integers(0, c, (b, h, w))
    spec = {"outputs": {"m": {"loss": [{"name": "categorical_crossentropy", "params": {"axis": 1}},
                                       {"loss": {"name": "cce", "params": {"axis": -3}}, "name": "again"}],
                              "metrics": ["sparse_categorical_accuracy"]}}}
    got = _head_metrics(spec, {"m": labels}, {"m": probs})
    assert got["m_sparse_categorical_accuracy"] == pytest.approx((probs.argmax(1) == labels).mean(), rel=1e-6)


def test_dice_axis_is_summed_not_a_class_axis():
    """Dice's `axis: 1` sums over H of [B, H, W, C]: the metrics keep the classes on the last axis."""
    rng = np.random.default_rng(24)
    b, h, w, c = 4, 3, 5, 6
    probs = rng.dirichlet(np.ones(c), (b, h, w)).astype("float32")
    labels = rng.integers(0, c, (b, h, w))
    spec = {"outputs": {"m": {"loss": {"name": "dice", "params": {"axis": 1}}, "metrics": ["accuracy"]}}}
    got = _head_metrics(spec, {"m": np.eye(c, dtype="float32")[labels]}, {"m": probs})
    assert got["m_accuracy"] == pytest.approx((probs.argmax(-1) == labels).mean(), rel=1e-6)


def test_a_head_whose_losses_reduce_different_axes_is_refused_at_the_head():
    spec = {"outputs": {"m": {"loss": [{"name": "categorical_crossentropy", "params": {"axis": 1}},
                                       {"loss": {"name": "categorical_crossentropy", "params": {"axis": 2}}, "name": "ce2"}],
                              "metrics": ["accuracy"]}}}
    with pytest.raises(ml.SpecError, match=r"outputs\.m.*reduce different axes \[1, 2\]"):
        HeadMetrics(ml.load_spec(spec))


# --- a fit --------------------------------------------------------------------------------------


def test_a_short_fit_on_nan_targets_runs_and_logs_the_per_label_values():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="trunk")(x_in)
    model = keras.Model(x_in, {"tags": keras.layers.Dense(K, activation="sigmoid", name="tags")(h),
                               "reg": keras.layers.Dense(2, name="reg")(h),
                               "cls": keras.layers.Dense(C, activation="softmax", name="cls")(h)})
    spec = {"outputs": {
        "tags": {"loss": "bce", "mask_value": float("nan"), "reduction": "weighted_mean",
                 "metrics": ["binary_accuracy"]},
        "reg": {"loss": "mse", "mask_value": float("nan"), "reduction": "weighted_mean"},
        "cls": {"loss": "sparse_categorical_crossentropy", "mask_value": float("nan"),
                "reduction": "weighted_mean"}}}
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.05))
    rng = np.random.default_rng(12)
    n = 32
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"tags": (rng.random((n, K)) < 0.5).astype("float32"), "reg": rng.normal(size=(n, 2)).astype("float32"),
         "cls": rng.integers(0, C, n).astype("float32")}
    missing = {k: rng.random(v.shape) < MISSING for k, v in y.items()}
    for k in y:
        y[k][missing[k]] = np.nan
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in hist.values())
    res = model.evaluate(x, y, batch_size=n, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)
    valid = {k: ~m for k, m in missing.items()}
    t = np.nan_to_num(y["tags"])
    pt = np.clip(pred["tags"], 1e-7, 1 - 1e-7)
    assert res["tags_loss"] == pytest.approx(_bce(t, pt)[valid["tags"]].mean(), rel=1e-4)
    assert res["reg_loss"] == pytest.approx(((pred["reg"] - y["reg"]) ** 2)[valid["reg"]].mean(), rel=1e-4)
    ids = np.nan_to_num(y["cls"]).astype(int)
    ce = -np.log(pred["cls"][np.arange(n), ids])
    assert res["cls_loss"] == pytest.approx(ce[valid["cls"]].mean(), rel=1e-4)
    hit = (pred["tags"] > 0.5) == (t == 1)
    assert res["tags_binary_accuracy"] == pytest.approx(hit[valid["tags"]].mean(), rel=1e-6)


def _masked_fit(strategy, reduction):
    spec = {"outputs": {"tags": {"loss": "bce", "mask_value": float("nan"), "reduction": reduction}}}
    with strategy.scope():
        keras.utils.set_random_seed(0)
        x_in = keras.Input((5,))
        model = keras.Model(x_in, {"tags": keras.layers.Dense(K, activation="sigmoid", name="tags")(x_in)})
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(1.0))
    rng = np.random.default_rng(14)
    x = rng.normal(size=(8, 5)).astype("float32")
    t = (rng.random((8, K)) < 0.5).astype("float32")
    missing = rng.random((8, K)) < MISSING
    missing[:4, :] |= rng.random((4, K)) < 0.5           # the first replica's half misses more
    t[missing] = np.nan
    p = np.clip(model.predict(x, verbose=0)["tags"], 1e-7, 1 - 1e-7)
    before = [v.numpy() for v in model.trainable_variables]
    hist = model.fit(tf.data.Dataset.from_tensors((x, {"tags": t})), epochs=1, verbose=0).history
    step = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    return hist["tags_loss"][0], _bce(np.nan_to_num(t), p) * ~missing, ~missing, step


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum_by_nonzero_weights", "weighted_mean", "sum"])
def test_two_replicas_mask_per_label_as_one_device(reduction):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    one, losses, valid, g1 = _masked_fit(tf.distribute.OneDeviceStrategy(devices[0]), reduction)
    two, _, _, g2 = _masked_fit(ml.mirrored_strategy(devices[:2]), reduction)
    expected = {"sum_over_batch_size": losses.sum() / losses.size, "sum_by_nonzero_weights": losses.sum() / valid.sum(),
                "weighted_mean": losses.sum() / valid.sum(), "sum": losses.sum() / K}[reduction]
    assert one == pytest.approx(expected, rel=1e-5)
    assert two == pytest.approx(expected, rel=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
