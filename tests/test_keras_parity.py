"""Every loss of ``keras.losses`` resolves by function and class name, to Keras's own values."""

import inspect

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.spec import loss_table as L

_NOT_LOSSES = {"get", "serialize", "deserialize", "Loss"}


def _keras_loss_names():
    funcs, classes = [], []
    for name in dir(keras.losses):
        if name.startswith("_") or name in _NOT_LOSSES:
            continue
        obj = getattr(keras.losses, name)
        if inspect.isclass(obj) and issubclass(obj, keras.losses.Loss):
            classes.append(name)
        elif inspect.isfunction(obj):
            funcs.append(name)
    return funcs, classes


def test_every_keras_loss_is_mapped():
    """Fails when a future Keras adds a loss that multiloss does not map yet."""
    funcs, classes = _keras_loss_names()
    assert len(funcs) >= 22 and len(classes) >= 22  # Keras 3.15: 22 of each
    assert sorted(set(funcs) - set(L.KERAS_FUNCTIONS)) == [], "map it in multiloss.spec.loss_table.KERAS_FUNCTIONS"
    assert sorted(set(classes) - set(L.KERAS_CLASSES)) == [], "map it in multiloss.spec.loss_table.KERAS_CLASSES"
    registered = set(ml.losses.names())
    assert set(funcs) | set(classes) <= registered
    # Keras's own short aliases (keras.losses.get("MSE")) resolve too.
    from keras.src.losses import ALL_OBJECTS_DICT

    assert sorted(set(ALL_OBJECTS_DICT) - {"Loss", "LossFunctionWrapper"} - registered) == []


@pytest.mark.parametrize("cname", sorted(L.KERAS_CLASSES))
def test_class_table_matches_the_function_keras_wraps(cname):
    """Each class name maps to the function the Keras class itself wraps."""
    inst = getattr(keras.losses, cname)()
    assert inst.fn.__name__ == L.KERAS_CLASSES[cname]


rng = np.random.default_rng(7)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


POS = (rng.uniform(0.5, 2.0, (4, 3)).astype("float32"), rng.uniform(0.5, 2.0, (4, 3)).astype("float32"))
BIN = ((rng.random((4, 3)) > 0.5).astype("float32"), rng.uniform(0.05, 0.95, (4, 3)).astype("float32"))
LOGIT = ((rng.random((4, 3)) > 0.5).astype("float32"), rng.normal(size=(4, 3)).astype("float32"))
ONEHOT = (np.eye(5, dtype="float32")[rng.integers(0, 5, 4)], _softmax(rng.normal(size=(4, 5))))
LABELS = (rng.integers(0, 5, 4).astype("int32"), _softmax(rng.normal(size=(4, 5))))
_emb = rng.normal(size=(6, 4)).astype("float32")
CIRCLE = (np.array([0, 0, 1, 1, 2, 2], "int32"), _emb / np.linalg.norm(_emb, axis=-1, keepdims=True))
CTC_DATA = (rng.integers(1, 5, (2, 3)).astype("int32"), rng.normal(size=(2, 6, 5)).astype("float32"))

# (class name, params, data): every Keras loss except Dice and Tversky (tested below).
CASES = [
    ("MeanSquaredError", {}, POS), ("MeanAbsoluteError", {}, POS),
    ("MeanAbsolutePercentageError", {}, POS), ("MeanSquaredLogarithmicError", {}, POS),
    ("LogCosh", {}, POS), ("Huber", {"delta": 0.3}, POS), ("Poisson", {}, POS),
    ("BinaryCrossentropy", {"label_smoothing": 0.1}, BIN),
    ("BinaryCrossentropy", {"from_logits": True}, LOGIT),
    ("BinaryFocalCrossentropy", {"gamma": 1.5, "apply_class_balancing": True, "alpha": 0.4}, BIN),
    ("Hinge", {}, LOGIT), ("SquaredHinge", {}, LOGIT),
    ("CategoricalCrossentropy", {"label_smoothing": 0.2}, ONEHOT),
    ("CategoricalFocalCrossentropy", {"alpha": 0.5, "gamma": 1.0}, ONEHOT),
    ("KLDivergence", {}, ONEHOT), ("CategoricalHinge", {}, ONEHOT),
    ("CosineSimilarity", {"axis": -1}, LOGIT),
    ("SparseCategoricalCrossentropy", {}, LABELS),
    ("CategoricalGeneralizedCrossEntropy", {"q": 0.7}, LABELS),
    ("Circle", {"gamma": 10.0, "margin": 0.3}, CIRCLE),
    ("CTC", {}, CTC_DATA),
]


def test_cases_cover_every_keras_loss():
    assert {c for c, _, _ in CASES} | {"Dice", "Tversky"} == set(L.KERAS_CLASSES)


@pytest.mark.parametrize("cname,params,data", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_class_and_function_names_give_keras_values(cname, params, data):
    y_true, y_pred = data
    # Keras's own unreduced values, through its class (reduction=None) and its function.
    expected = np.asarray(getattr(keras.losses, cname)(reduction=None, **params)(y_true, y_pred))
    fname = L.KERAS_CLASSES[cname]
    fn_params = {"q": 0.5, **params} if fname == "categorical_generalized_cross_entropy" else params
    np.testing.assert_allclose(np.asarray(getattr(keras.losses, fname)(y_true, y_pred, **fn_params)),
                               expected, rtol=1e-5, atol=1e-6)
    for name in (cname, fname, f"keras.losses:{cname}"):
        got = np.asarray(ml.losses.get(name, **params)(y_true, y_pred))
        assert got.shape == expected.shape == (len(y_true),)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_generalized_cross_entropy_default_q_and_column_labels():
    y, p = LABELS
    ref = (1 - p[np.arange(4), y] ** 0.5) / 0.5  # (1 - p_y^q) / q with the class's default q
    np.testing.assert_allclose(np.asarray(ml.losses.get("categorical_generalized_cross_entropy")(y, p)), ref,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ml.losses.get("categorical_generalized_cross_entropy")(y[:, None], p)),
                               ref, rtol=1e-5)


def test_dice_and_tversky_differ_from_keras_only_as_documented():
    t = (rng.random((3, 4, 4, 2)) > 0.5).astype("float32")
    p = rng.random((3, 4, 4, 2)).astype("float32")
    axes = (1, 2, 3)
    # With Keras's axis, the same values (up to the smoothing constants).
    for name in ("dice", "Dice"):
        np.testing.assert_allclose(np.asarray(ml.losses.get(name, axis=list(axes))(t, p)),
                                   np.asarray(keras.losses.dice(t, p, axis=axes)), rtol=1e-5)
    # By default, multiloss's is per sample ([B]); Keras's default is one scalar over the batch.
    ours = np.asarray(ml.losses.get("dice")(t, p))
    assert ours.shape == (3,) and np.asarray(keras.losses.dice(t, p)).shape == ()
    np.testing.assert_allclose(ours, np.asarray(keras.losses.dice(t, p, axis=axes)), rtol=1e-5)
    # Tversky: multiloss's alpha weighs false positives Σ(1-t)p (Salehi et al.); Keras's weighs Σ t(1-p).
    tp, fp, fn = (t * p).sum(axes), ((1 - t) * p).sum(axes), (t * (1 - p)).sum(axes)
    ref = 1 - tp / (tp + 0.7 * fp + 0.3 * fn)
    np.testing.assert_allclose(np.asarray(ml.losses.get("Tversky", alpha=0.7, beta=0.3)(t, p)), ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(keras.losses.tversky(t, p, alpha=0.3, beta=0.7, axis=axes)), ref,
                               rtol=1e-5)


def test_import_strings_of_keras_losses_get_their_target_kind():
    assert ml.losses.get("keras.losses:MeanSquaredError").target == "same"
    assert ml.losses.get("keras.losses:SparseCategoricalCrossentropy").target == "sparse"
    assert ml.losses.get("keras.losses:dice").target == "custom"  # Keras's own scalar dice


def test_class_params_name_and_dtype_are_accepted_reduction_is_explained():
    fn = ml.losses.get("Huber", delta=0.3, name="my_huber", dtype="float32")
    np.testing.assert_allclose(np.asarray(fn(*POS)), np.asarray(keras.losses.huber(*POS, delta=0.3)), rtol=1e-6)
    with pytest.raises(TypeError, match="reduction is set on the head or term"):
        ml.losses.get("MeanSquaredError", reduction="sum")
    with pytest.raises(ml.SpecError, match="valid parameters: delta"):
        ml.load_spec("outputs: {a: {loss: {name: Huber, params: {delt: 2}}}}")


@pytest.mark.parametrize("alias,keras_reduction", [("mean", "mean"),
                                                    ("mean_with_sample_weight", "mean_with_sample_weight")])
def test_keras_reduction_aliases_give_keras_values(alias, keras_reduction):
    spec = ml.load_spec(f"outputs: {{a: {{loss: MeanSquaredError, reduction: {alias}}}}}")
    canonical = {"mean": "sum_over_batch_size", "mean_with_sample_weight": "weighted_mean"}[alias]
    assert spec.resolve()[0].reduction == canonical
    assert spec.to_dict()["outputs"]["a"].get("reduction", "sum_over_batch_size") == canonical
    y_true, y_pred = POS
    sw = np.array([1.0, 0.0, 3.0, 0.5], "float32")
    got = float(ml.build_loss(spec).compute({"a": y_true}, {"a": y_pred}, sample_weight=sw).total)
    expected = float(keras.losses.MeanSquaredError(reduction=keras_reduction)(y_true, y_pred, sample_weight=sw))
    per_sample = ((y_true - y_pred) ** 2).mean(-1)
    by_hand = (sw * per_sample).sum() / (4 if alias == "mean" else sw.sum())
    assert got == pytest.approx(expected, rel=1e-5) and got == pytest.approx(by_hand, rel=1e-5)


def test_unknown_reduction_lists_the_canonical_names():
    with pytest.raises(ml.SpecError, match="'sum_over_batch_size'.*got 'avg'"):
        ml.load_spec("outputs: {a: {loss: mse, reduction: avg}}")


def test_parameter_table_matches_keras_signatures():
    """Specs are checked against KERAS_PARAMS without importing Keras; it must be Keras's own signatures."""
    own = {"dice", "tversky", "categorical_generalized_cross_entropy"}   # multiloss's versions, own signatures
    assert set(L.KERAS_PARAMS) == set(L.KERAS_FUNCTIONS) - own
    for fname, params in L.KERAS_PARAMS.items():
        real = tuple(inspect.signature(getattr(keras.losses, fname)).parameters)[2:]
        assert params == real, fname


def test_metric_table_matches_keras():
    from multiloss.core.keras_access import metric_names
    from multiloss.spec.loss_spec import KERAS_METRICS

    assert KERAS_METRICS == set(metric_names())
