"""Loss semantics against numpy: shapes, element weights, masks, reductions."""

import keras
import numpy as np
import pytest
from keras import ops

import multiloss as ml


@ml.register_loss("_identity_for_tests")
def _identity(y_true, y_pred):
    """L = y_pred: lets a test choose the per-element values directly."""
    return y_pred


@ml.register_loss("_scalar_for_tests")
def _scalar(y_true, y_pred):
    return ops.mean(ops.square(y_true - y_pred))


def _total(spec, y_true, y_pred, sample_weight=None):
    res = ml.build_loss(spec).compute(y_true, y_pred, sample_weight)
    return float(res.total), {k: float(v) for k, v in res.losses.items()}


VALUES = np.array([4.0, 1.0, 2.0, 3.0], "float32")


@pytest.mark.parametrize(
    "reduction, weights, expected",
    [
        ("sum_by_nonzero_weights", [1, 0.5, 3, 9], 37.5 / 4),
        ("sum_by_nonzero_weights", [1, 0, 3, 9], 37.0 / 3),
        ("sum_over_batch_size", [1, 0, 3, 9], 37.0 / 4),
        ("weighted_mean", [1, 0.5, 3, 9], 37.5 / 13.5),
        ("sum", [1, 0.5, 3, 9], 37.5),
        ("sum_over_batch_size", None, 10.0 / 4),
        ("weighted_mean", None, 10.0 / 4),
        ("sum", None, 10.0),
    ],
)
def test_reductions_match_hand_values(reduction, weights, expected):
    spec = {"outputs": {"a": {"loss": "_identity_for_tests", "reduction": reduction}}}
    sw = None if weights is None else np.array(weights, "float32")
    total, _ = _total(spec, {"a": np.zeros(4)}, {"a": VALUES}, sw)
    assert total == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss", ["mse", "categorical_crossentropy"])
def test_dense_output_loss_shape_per_pixel_weights_and_mask(loss):
    """[B,H,W,C] MSE masks per element (L [B,H,W,C]); categorical CE per pixel (L [B,H,W], one missing
    channel masks the whole pixel); W = sample_weight × per-pixel × mask."""
    rng = np.random.default_rng(0)
    B, H, W, C = 3, 5, 4, 3
    logits = rng.normal(size=(B, H, W, C))
    y_pred = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    y_true = rng.uniform(0.1, 1.0, size=(B, H, W, C)).astype("float32")
    y_true[0, 1, 2, :] = 0.0  # missing pixel: every channel equals the mask value
    y_true[2, 0, 0, 1] = 0.0  # one channel missing
    spec = {"outputs": {"img": {"loss": loss, "mask_value": 0.0, "reduction": "weighted_mean"}}}
    composite = ml.build_loss(spec)
    (values, weights), = composite.elementwise({"img": y_true}, {"img": y_pred}).values()
    per_pixel = rng.uniform(0.5, 2.0, size=(B, H, W)).astype("float32")
    if loss == "mse":
        assert tuple(values.shape) == (B, H, W, C)
        L, mask, expand = (y_true - y_pred) ** 2, (y_true != 0).astype("float32"), (lambda a: a[..., None])
    else:
        assert tuple(values.shape) == (B, H, W)
        L = -(y_true * np.log(y_pred)).sum(-1)
        mask, expand = (y_true != 0).all(-1).astype("float32"), (lambda a: a)
    assert mask.sum() == mask.size - (C + 1 if loss == "mse" else 2)
    for sw, w in [(None, mask), (np.array([1.0, 2.0, 0.5], "float32"),
                                 mask * expand(np.array([1.0, 2.0, 0.5])[:, None, None])),
                  (per_pixel, mask * expand(per_pixel))]:
        total, _ = _total(spec, {"img": y_true}, {"img": y_pred}, sw)
        assert total == pytest.approx((w * L).sum() / w.sum(), rel=1e-5)


def test_masked_targets_cannot_leak_nan():
    spec = {"outputs": {"d": {"loss": "msle", "mask_value": -1.0}}}
    y_true = np.array([[1.0], [-1.0], [2.0]], "float32")  # log(1 + -1) would be -inf
    y_pred = np.array([[0.5], [0.3], [1.0]], "float32")
    total, _ = _total(spec, {"d": y_true}, {"d": y_pred})
    ref = np.array([(np.log1p(0.5) - np.log1p(1.0)) ** 2, 0.0, (np.log1p(1.0) - np.log1p(2.0)) ** 2])
    assert np.isfinite(total)
    assert total == pytest.approx(ref.sum() / 3, rel=1e-5)


@pytest.mark.parametrize("sparse", [True, False])
def test_class_weight_counts_class_three_five_times(sparse):
    rng = np.random.default_rng(1)
    labels = np.array([3, 0, 3, 1, 2, 3], "int32")
    probs = rng.dirichlet(np.ones(5), size=6).astype("float32")
    per_sample = -np.log(probs[np.arange(6), labels])
    w = np.where(labels == 3, 5.0, 1.0)
    loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    y = labels if sparse else np.eye(5, dtype="float32")[labels]
    for reduction, expected in [("sum_over_batch_size", (w * per_sample).sum() / 6),
                                ("weighted_mean", (w * per_sample).sum() / w.sum())]:
        spec = {"outputs": {"c": {"loss": loss, "class_weight": {3: 5.0}, "reduction": reduction}}}
        total, _ = _total(spec, {"c": y}, {"c": probs})
        assert total == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse-refused", "one-hot"])
def test_class_weight_and_mask_follow_a_channels_first_class_axis(sparse):
    """With ``axis: 1`` ([B, C, H, W], C = H = W so that a wrong axis still broadcasts) the class ids
    and the missing-label mask are read along axis 1, not the last axis."""
    r = np.random.default_rng(3)
    logits = r.normal(size=(2, 3, 3, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
    labels = r.integers(0, 3, (2, 3, 3))
    missing = np.zeros((2, 3, 3), bool)
    missing[0, 0, :2] = missing[1, 2, 1] = True
    onehot = np.eye(3, dtype="float32")[labels].transpose(0, 3, 1, 2)
    y = np.where(missing, -1, labels).astype("float32") if sparse else np.where(missing[:, None], -1.0, onehot)
    per_pixel = -np.log(np.take_along_axis(probs, labels[:, None], 1)[:, 0])
    w = np.where(labels == 1, 5.0, 1.0) * ~missing
    loss = {"name": "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy",
            "params": {"axis": 1}}
    spec = {"outputs": {"m": {"loss": loss, "class_weight": {1: 5.0}, "mask_value": -1,
                              "reduction": "weighted_mean"}}}
    if sparse:      # Keras's TensorFlow backend takes sparse classes from the last axis only
        with pytest.raises(ml.SpecError, match=r"outputs\.m.*axis 1 .*supports only the last axis; .*"
                                               r"categorical_crossentropy with one-hot targets"):
            _total(spec, {"m": y}, {"m": probs})
        return
    total, _ = _total(spec, {"m": y}, {"m": probs})
    assert total == pytest.approx((w * per_pixel).sum() / w.sum(), rel=1e-5)


def test_class_weight_ids_are_checked_along_a_channels_first_class_axis():
    """[B, 4, 8, 8] with `axis: 1`: id 6 was accepted (the last axis has 8 entries) and weighted nothing;
    id 9 was refused as one of 8 classes."""
    x = keras.Input((8, 8, 3))
    seg = keras.layers.Softmax(axis=1, name="seg")(keras.layers.Permute((3, 1, 2))(keras.layers.Conv2D(4, 1)(x)))
    model = keras.Model(x, {"seg": seg})
    spec = "outputs: {seg: {loss: {name: categorical_crossentropy, params: {axis: 1}}, class_weight: {%s: 3.0}}}"
    with pytest.raises(ml.SpecError, match=r"outputs\.seg\.class_weight: class id\(s\) \[6\] out of range: output "
                                           r"'seg' has 4 classes along axis 1 \(ids 0\.\.3\)"):
        ml.compile(model, spec % 6, optimizer="sgd")
    ml.compile(model, spec % 3, optimizer="sgd")


def test_dice_over_spatial_axes_masks_the_class_whose_pixels_are_missing():
    """Dice with ``axis: [1, 2]`` gives L ``[B, C]`` of ``[B, H, W, C]``: a missing pixel drops its
    (sample, class) pair, not a row of the image."""
    r = np.random.default_rng(4)
    p = r.uniform(0.05, 0.95, size=(2, 3, 3, 3)).astype("float32")
    t = (r.uniform(size=p.shape) > 0.5).astype("float32")
    t[0, 1, 2, 0] = t[1, 0, 0, 2] = -1.0
    keep = np.ones((2, 3), bool)
    keep[0, 0] = keep[1, 2] = False
    dice = 1 - (2 * (t * p).sum((1, 2)) + 1e-6) / (t.sum((1, 2)) + p.sum((1, 2)) + 1e-6)
    spec = {"outputs": {"m": {"loss": {"name": "dice", "params": {"axis": [1, 2]}}, "mask_value": -1,
                              "reduction": "weighted_mean"}}}
    total, _ = _total(spec, {"m": t}, {"m": p})
    assert total == pytest.approx(dice[keep].mean(), rel=1e-5)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "weighted_mean", "sum_by_nonzero_weights", "sum"])
def test_a_weight_per_label_of_a_multi_label_head(reduction):
    """A [B, K] sample weight on a multi-label BCE head weights each label (positives 5×, one label
    ignored): L is evaluated per label.  It was refused (it "cannot weight" L of shape [B])."""
    y = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], "float32")
    p = np.array([[0.2, 0.6, 0.3], [0.7, 0.4, 0.2], [0.1, 0.3, 0.8], [0.3, 0.2, 0.1]], "float32")
    w = np.where(y == 1, 5.0, 1.0).astype("float32")
    w[3, 2] = 0.0
    per_label = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    num = (w * per_label).sum()
    expected = {"sum_over_batch_size": num / 12, "weighted_mean": num / w.sum(),
                "sum_by_nonzero_weights": num / 11, "sum": num / 3}[reduction]   # sum: Σ over samples of the
    spec = {"outputs": {"f": {"loss": "binary_crossentropy", "reduction": reduction}}}   # mean over labels
    total, _ = _total(spec, {"f": y}, {"f": p}, w)
    assert total == pytest.approx(expected, rel=1e-5)
    total, _ = _total(spec, {"f": y}, {"f": p}, {"f": w})
    assert total == pytest.approx(expected, rel=1e-5)


def test_compute_takes_plain_python_lists():
    """Lists of numbers as targets, predictions and sample weights (an AttributeError on .dtype)."""
    spec = {"outputs": {"a": {"loss": "mse"}, "c": {"loss": "sparse_categorical_crossentropy",
                                                     "class_weight": {1: 2.0}}}}
    total, terms = _total(spec, {"a": [[1.0], [3.0]], "c": [1, 0]},
                          {"a": [[0.0], [1.0]], "c": [[0.2, 0.8], [0.6, 0.4]]}, [1.0, 0.5])
    assert terms["a"] == pytest.approx((1 * 1.0 + 4 * 0.5) / 2, rel=1e-6)
    assert terms["c"] == pytest.approx((-np.log(0.8) * 2.0 + -np.log(0.6) * 0.5) / 2, rel=1e-6)
    assert total == pytest.approx(terms["a"] + terms["c"], rel=1e-6)


def test_a_misspelt_target_key_gets_a_did_you_mean():
    spec = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse"}}}
    one = np.ones((2, 1), "float32")
    with pytest.raises(ml.SpecError, match=r"term 'b': y has no target 'b'; did you mean 'bb'\? targets given: "
                                           r"\['a', 'bb'\]"):
        _total(spec, {"a": one, "bb": one}, {"a": one, "b": one})


def test_weighted_sum_of_terms_and_per_head_sample_weights():
    rng = np.random.default_rng(2)
    a_t, a_p = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    b_t, b_p = rng.normal(size=(4, 1)), rng.normal(size=(4, 1))
    spec = {"outputs": {"a": {"loss": "mse", "weight": 0.3}, "b": {"loss": "mae", "weight": 2.0}}}
    sw = {"a": np.array([1, 1, 0, 0], "float32")}  # b has no weights: all count
    total, terms = _total(spec, {"a": a_t, "b": b_t}, {"a": a_p, "b": b_p}, sw)
    la = ((a_t - a_p) ** 2).mean(-1) * sw["a"]
    lb = np.abs(b_t - b_p).mean(-1)
    assert terms["a"] == pytest.approx(la.sum() / 4, rel=1e-5)
    assert terms["b"] == pytest.approx(lb.mean(), rel=1e-5)
    assert total == pytest.approx(0.3 * la.sum() / 4 + 2.0 * lb.mean(), rel=1e-5)


def test_scalar_loss_works_unweighted_and_refuses_weights():
    spec = {"outputs": {"a": {"loss": "_scalar_for_tests"}}}
    t, p = np.array([[1.0], [3.0]], "float32"), np.zeros((2, 1), "float32")
    total, _ = _total(spec, {"a": t}, {"a": p})
    assert total == pytest.approx(5.0)
    with pytest.raises(ml.SpecError, match=r"term 'a': its loss returns a scalar, so sample_weight cannot"):
        _total(spec, {"a": t}, {"a": p}, np.ones(2, "float32"))
    masked = {"outputs": {"a": {"loss": "_scalar_for_tests", "mask_value": 0.0}}}
    with pytest.raises(ml.SpecError, match="mask_value cannot apply"):
        _total(masked, {"a": t}, {"a": p})


def test_label_out_of_range_is_a_spec_error():
    spec = {"outputs": {"c": {"loss": "sparse_categorical_crossentropy"}}}
    probs = np.full((3, 4), 0.25, "float32")
    with pytest.raises(ml.SpecError, match=r"outputs\.c\.loss: term 'c': label 7 out of range .* 0\.\.3"):
        _total(spec, {"c": np.array([0, 7, 1])}, {"c": probs})


def test_target_and_prediction_shapes_that_cannot_match():
    spec = ml.load_spec("outputs:\n  c:\n    loss: categorical_crossentropy\n")
    with pytest.raises(ml.SpecError) as info:
        ml.build_loss(spec).compute({"c": np.zeros((3, 5))}, {"c": np.full((3, 4), 0.25)})
    assert info.value.problems[0][:2] == (("outputs", "c", "loss"), 3)
    assert "target shape (3, 5) cannot match prediction shape (3, 4)" in str(info.value)
    sparse = ml.build_loss({"outputs": {"c": {"loss": "sparse_categorical_crossentropy"}}})
    with pytest.raises(ml.SpecError, match="integer class ids shaped"):
        sparse.compute({"c": np.zeros((3, 4))}, {"c": np.full((3, 4), 0.25)})


def test_per_pixel_weights_cannot_apply_to_per_sample_loss():
    spec = {"outputs": {"s": {"loss": "dice"}}}
    y = np.ones((2, 4, 4, 1), "float32")
    with pytest.raises(ml.SpecError, match=r"term 's': sample_weight of shape \(2, 4, 4\) cannot weight"):
        _total(spec, {"s": y}, {"s": y}, np.ones((2, 4, 4), "float32"))


def test_a_dice_term_beside_a_per_pixel_weighted_head_is_told_how_to_weight_it_apart():
    """Cross-entropy weighted per pixel plus a Dice term on the same labels: the term took the head's
    [B, H, W] weight and was refused with "give it shape [B]", which its key in the dict cannot be."""
    r = np.random.default_rng(5)
    p = r.dirichlet(np.ones(3), size=(2, 4, 4)).astype("float32")
    t = np.eye(3, dtype="float32")[r.integers(0, 3, (2, 4, 4))]
    w = r.uniform(size=(2, 4, 4)).astype("float32")
    spec = {"outputs": {"s": {"loss": "categorical_crossentropy", "reduction": "weighted_mean"}},
            "terms": [{"name": "dice", "outputs": ["s"], "target": "s", "loss": "dice", "weight": 0.5}]}
    with pytest.raises(ml.SpecError, match=r"Term 'dice' is weighted by target 's''s sample weight; to weight it "
                                           r"apart from that head, give the term a target of its own \(`target: "
                                           r"dice_s`"):
        _total(spec, {"s": t}, {"s": p}, {"s": w})
    spec["terms"][0]["target"] = "dice_s"                          # the advice, followed
    total, losses = _total(spec, {"s": t, "dice_s": t}, {"s": p}, {"s": w})
    ce = (w * -(t * np.log(p)).sum(-1)).sum() / w.sum()
    dice = 1 - (2 * (t * p).sum((1, 2, 3)) + 1e-6) / (t.sum((1, 2, 3)) + p.sum((1, 2, 3)) + 1e-6)
    assert losses == pytest.approx({"s": ce, "dice": dice.mean()}, rel=1e-5)
    assert total == pytest.approx(ce + 0.5 * dice.mean(), rel=1e-5)


def test_binary_targets_without_class_axis_and_their_class_weights():
    """Targets [B] against a sigmoid output [B, 1] (as Keras allows); class 1 weighs 4."""
    p = np.array([[0.9], [0.2], [0.6], [0.3]], "float32")
    t = np.array([1.0, 0.0, 0.0, 1.0], "float32")
    bce = -(t * np.log(p[:, 0]) + (1 - t) * np.log(1 - p[:, 0]))
    w = np.where(t == 1, 4.0, 1.0)
    spec = {"outputs": {"b": {"loss": "binary_crossentropy", "class_weight": {1: 4.0},
                              "reduction": "weighted_mean"}}}
    total, _ = _total(spec, {"b": t}, {"b": p})
    assert total == pytest.approx((w * bce).sum() / w.sum(), rel=1e-5)


@ml.register_loss("_pairwise_for_tests")
def _pairwise(y_true, y_pred):
    """[B, 1] against [1, B]: the broadcast mistake that gives L of shape [B, B]."""
    return ops.abs(y_true - ops.transpose(y_pred))


@ml.register_loss("_stacked_for_tests")
def _stacked(y_true, y_pred):
    """L of shape [2, B]: the batch axis is not first."""
    return ops.stack([ops.mean(ops.abs(y_true - y_pred), axis=-1)] * 2, axis=0)


@ml.register_loss("_none_for_tests")
def _returns_none(y_true, y_pred):
    return None


@ml.register_loss("_string_for_tests")
def _returns_string(y_true, y_pred):
    return "oops"


def _score_data():
    rng = np.random.default_rng(0)
    return ({"score": rng.normal(size=(6, 1)).astype("float32")},
            {"score": rng.normal(size=(6, 1)).astype("float32")})


@pytest.mark.parametrize("sample_weight", [None, np.ones(6, "float32")])
def test_loss_values_whose_further_axes_are_not_the_outputs_are_refused(sample_weight):
    """L of shape [B, B] for a [B, 1] output is not per-sample values: a SpecError, not a mean of B² numbers."""
    y_true, y_pred = _score_data()
    spec = {"outputs": {"score": {"loss": "_pairwise_for_tests"}}}
    with pytest.raises(ml.SpecError) as info:
        _total(spec, y_true, y_pred, sample_weight)
    text = str(info.value)
    assert info.value.problems[0][0] == ("outputs", "score", "loss")
    assert "term 'score': its loss returns values L of shape (6, 6)" in text
    assert "y_pred (6, 1), y_true (6, 1)" in text and "axis 1 has size 6 where y_pred has 1" in text
    assert "(6,) or (6, 1)" in text


def test_loss_values_whose_first_axis_is_not_the_batch_are_refused_before_the_mask():
    y_true, y_pred = _score_data()
    y_true["score"][2] = np.nan
    spec = {"outputs": {"score": {"loss": "_stacked_for_tests", "mask_value": float("nan")}}}
    with pytest.raises(ml.SpecError, match=r"term 'score': its loss returns values L of shape \(2, 6\), .*"
                                           r"first axis has size 2 but the batch has 6"):
        _total(spec, y_true, y_pred)


def test_a_mask_that_cannot_weight_the_values_is_named_for_what_it_is():
    """The mask comes from mask_value on y_true: the message says so, with y_true's shape."""
    spec = {"outputs": {"p": {"loss": "_identity_for_tests", "mask_value": -1.0}}}
    y_true, y_pred = np.zeros((3, 5), "float32"), np.zeros((3, 2), "float32")
    with pytest.raises(ml.SpecError, match=r"term 'p': the mask derived from mask_value on y_true of shape "
                                           r"\(3, 5\) cannot weight per-element loss values of shape \(3, 2\)"):
        _total(spec, {"p": y_true}, {"p": y_pred})


@pytest.mark.parametrize("loss, got", [("_none_for_tests", "None"), ("_string_for_tests", "str 'oops'")])
@pytest.mark.parametrize("mask_value", [None, float("nan")])
def test_a_loss_that_returns_no_tensor_is_a_spec_error(loss, got, mask_value):
    y_true, y_pred = _score_data()
    spec = {"outputs": {"score": {"loss": loss, "mask_value": mask_value}}}
    with pytest.raises(ml.SpecError, match=rf"term 'score': its loss returns {got}; a loss must return a tensor "
                                           r"of per-sample values \[B\] or per-element values \[B, d1\.\.dk\]"):
        _total(spec, y_true, y_pred)


@ml.register_loss("_pair_matrix_for_tests")
def _pair_matrix(y_true, y_pred):
    """Over two outputs: one value per pair (i, j) of the batch, [B, B]."""
    a, b = y_pred
    return ops.sum(ops.square(ops.expand_dims(a, 1) - ops.expand_dims(b, 0)), axis=-1)


@ml.register_loss("_pair_stacked_for_tests")
def _pair_stacked(y_true, y_pred):
    a, b = y_pred
    return ops.stack([ops.sum(a * b, axis=-1)] * 2, axis=0)


def test_a_term_over_several_outputs_needs_only_the_batch_axis_first():
    """Values per pair of a batch ([B, B]) are a term's own business; the first axis must be the batch's."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    pairs = ((a[:, None] - b[None]) ** 2).sum(-1)
    ok = {"terms": [{"name": "pair", "outputs": ["a", "b"], "loss": "_pair_matrix_for_tests"}]}
    total, _ = _total(ok, {}, {"a": a, "b": b}, np.ones(4, "float32"))
    assert total == pytest.approx(pairs.mean(), rel=1e-5)
    bad = {"terms": [{"name": "pair", "outputs": ["a", "b"], "loss": "_pair_stacked_for_tests"}]}
    with pytest.raises(ml.SpecError, match=r"term 'pair': its loss returns values L of shape \(2, 4\), .*"
                                           r"outputs 'a', 'b' \(y_pred\[0\] \(4, 3\), y_pred\[1\] \(4, 3\)\)"):
        _total(bad, {}, {"a": a, "b": b})


def test_losses_that_reduce_other_axes_than_the_last_pass_the_shape_check():
    """Per-class Dice over the spatial axes ([B, C] of [B, H, W, C]) and a channels-first crossentropy
    ([B, T] of [B, C, T]) reduce axes other than the last: their L keeps axes of y_pred in order."""
    r = np.random.default_rng(0)
    p = r.uniform(0.05, 0.95, size=(4, 5, 6, 3)).astype("float32")
    t = (r.uniform(size=p.shape) > 0.5).astype("float32")
    dice = ml.build_loss({"outputs": {"m": {"loss": {"name": "dice", "params": {"axis": [1, 2]}}}}})
    assert tuple(dice.elementwise({"m": t}, {"m": p})["m"][0].shape) == (4, 3)
    inter, total = (t * p).sum(axis=(1, 2)), t.sum(axis=(1, 2)) + p.sum(axis=(1, 2))
    assert float(dice.compute({"m": t}, {"m": p}).total) == pytest.approx(
        float(np.mean(1 - 2 * inter / total)), rel=1e-3)      # the smoothing term is tiny against these sums
    pc = r.uniform(0.05, 0.95, size=(4, 3, 7)).astype("float32")
    tc = np.eye(3, dtype="float32")[r.integers(0, 3, (4, 7))].transpose(0, 2, 1)
    first = ml.build_loss({"outputs": {"m": {"loss": {"name": "categorical_crossentropy", "params": {"axis": 1}}}}})
    last = ml.build_loss({"outputs": {"m": {"loss": "categorical_crossentropy"}}})
    assert float(first.compute({"m": tc}, {"m": pc}).total) == pytest.approx(
        float(last.compute({"m": tc.transpose(0, 2, 1)}, {"m": pc.transpose(0, 2, 1)}).total), rel=1e-6)


@pytest.mark.parametrize("bad, shown", [(-1.0, "-1"), (float("nan"), "nan"), (float("inf"), "inf")],
                         ids=["negative", "nan", "inf"])
def test_a_sample_weight_that_is_negative_or_not_finite_is_refused_naming_the_term(bad, shown):
    """Keras accepts a negative weight (the term's loss is then maximised on that example, b_loss -0.79 in
    a probe) and a NaN one (which the guard reported as the term's loss); multiloss names the weight,
    eagerly in compute and from a tf.data pipeline in fit, where the assert runs in the graph."""
    import keras
    import tensorflow as tf

    spec = "outputs:\n  a: {loss: mse}\n  b: {loss: binary_crossentropy, weight: 0.5}\n"
    y = {"a": np.zeros((4, 1), "float32"), "b": np.ones((4, 1), "float32")}
    p = {"a": np.full((4, 1), 0.5, "float32"), "b": np.full((4, 1), 0.7, "float32")}
    weights = {"a": np.ones(4, "float32"), "b": np.array([1, 0, bad, 2], "float32")}
    rule = r"its sample weight holds {}; sample weights must be finite numbers ≥ 0"
    with pytest.raises(ml.SpecError, match=r"outputs\.b\.loss: term 'b': " + rule.format(shown)):
        _total(spec, y, p, weights)
    assert _total(spec, y, p, {**weights, "b": np.array([1, 0, 3, 2], "float32")})[0] > 0   # zeros are fine
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,))
    model = keras.Model(x_in, {"a": keras.layers.Dense(1, name="a")(x_in),
                               "b": keras.layers.Dense(1, activation="sigmoid", name="b")(x_in)})
    ml.compile(model, spec, optimizer="sgd")
    x = np.ones((4, 3), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4)
    with pytest.raises(ml.SpecError, match=r"outputs\.b\.loss: term 'b': " + rule.format(shown)):
        model.fit(data, epochs=1, verbose=0)
