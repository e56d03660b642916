"""CompositeLoss's public ways to read per-term values: ``compute``, ``elementwise`` (all or some terms),
``parts`` (numerators, denominators, presence) and ``term_index``; they agree with each other."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import test_semantics  # noqa: F401  (registers _pairwise_for_tests and _stacked_for_tests)

import multiloss as ml
from multiloss.core.composite import TermParts
from multiloss.core.model import guard_labels

SPEC = {"outputs": {"a": {"loss": "mse", "weight": 0.5, "mask_value": -1.0},
                    "b": {"loss": "mae", "reduction": "sum"}}}


def _data():
    r = np.random.default_rng(0)
    y_true = {"a": r.normal(size=(4, 2)).astype("float32"), "b": r.normal(size=(4, 1)).astype("float32")}
    y_true["a"][1] = -1.0                                              # one masked row
    y_pred = {"a": r.normal(size=(4, 2)).astype("float32"), "b": r.normal(size=(4, 1)).astype("float32")}
    return y_true, y_pred


def test_parts_values_and_stacked_equal_compute():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    parts = composite.parts(y_true, y_pred)
    assert isinstance(parts, TermParts) and len(parts.numerators) == 2
    np.testing.assert_array_equal(np.asarray(parts.present), [1.0, 1.0])
    result = composite.compute(y_true, y_pred)
    want = [float(result.losses[n]) for n in composite.term_names]
    np.testing.assert_allclose([float(v) for v in parts.values()], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(parts.stacked()), want, rtol=1e-6)
    np.testing.assert_allclose(float(parts.numerators[0]) / float(parts.denominators[0]), want[0], rtol=1e-6)
    assert composite.parts(y_true, y_pred, present=False).present is None


def test_a_term_absent_from_the_batch_is_not_present():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    y_true["a"][:] = -1.0
    np.testing.assert_array_equal(np.asarray(composite.parts(y_true, y_pred).present), [0.0, 1.0])


def test_elementwise_of_some_terms_needs_only_their_targets():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    every = composite.elementwise(y_true, y_pred)
    some = composite.elementwise({"b": y_true["b"]}, y_pred, terms=["b"])
    assert list(some) == ["b"]
    np.testing.assert_array_equal(np.asarray(some["b"][0]), np.asarray(every["b"][0]))
    with pytest.raises(KeyError, match="unknown term 'c'"):
        composite.elementwise(y_true, y_pred, terms=["c"])
    assert [composite.term_index(n) for n in composite.term_names] == [0, 1]


@ml.register_loss("_reshaped_for_parts")
def _reshaped(y_true, y_pred):
    """A correct L [B, 1] whose static shape the reshape loses, (None, None): checked when the step runs."""
    values = tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1, keepdims=True)
    return tf.reshape(values, [-1, tf.size(values) // tf.shape(values)[0]])


def _traced(loss_name, mask_value=None):
    composite = ml.build_loss({"outputs": {"score": {"loss": loss_name, "mask_value": mask_value}}})
    spec = tf.TensorSpec([None, 1], "float32")
    return tf.function(lambda t, p: composite.compute({"score": t}, {"score": p}).total,
                       input_signature=[spec, spec], autograph=False)


def test_a_first_axis_of_fixed_size_is_refused_when_tracing():
    """With no fixed batch size, L (2, None) cannot be [B]: a SpecError when tracing, not a TensorFlow error
    at the first step."""
    with pytest.raises(ml.SpecError, match=r"term 'score': its loss returns values L of shape \(2, None\), .*"
                                           r"first axis has size 2 while the batch axis has no fixed size"):
        _traced("_stacked_for_tests", float("nan")).get_concrete_function()


def test_values_whose_shape_is_unknown_when_tracing_are_checked_when_the_step_runs():
    r = np.random.default_rng(3)
    t, p = r.normal(size=(6, 1)).astype("float32"), r.normal(size=(6, 1)).astype("float32")
    assert float(_traced("_reshaped_for_parts")(t, p)) == pytest.approx(np.abs(t - p).mean(), rel=1e-6)
    pairwise = _traced("_pairwise_for_tests")
    with pytest.raises(tf.errors.InvalidArgumentError):
        pairwise(t, p)
    with pytest.raises(ml.SpecError) as info, guard_labels():
        pairwise(t, p)
    assert info.value.problems[0][0] == ("outputs", "score", "loss")
    assert ("term 'score': its loss returns values L of shape (None, None) with 6 entries on axis 1, which "
            "cannot be per-sample or per-element values of output 'score' (y_pred (None, 1), y_true (None, 1))"
            ) in str(info.value)


def test_fit_refuses_values_shaped_batch_by_batch():
    """In a compiled fit on batches of no fixed size, [B, B] values are a SpecError, not a silent wrong loss."""
    r = np.random.default_rng(4)
    x, y = r.normal(size=(10, 3)).astype("float32"), r.normal(size=(10, 1)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"score": keras.layers.Dense(1, name="score")(inputs)})
    ml.compile(model, {"outputs": {"score": {"loss": "_pairwise_for_tests"}}}, optimizer="sgd")
    data = tf.data.Dataset.from_tensor_slices((x, {"score": y})).batch(4)
    with pytest.raises(ml.SpecError, match=r"term 'score': its loss returns values L of shape \(None, None\) "
                                           r"with 4 entries on axis 1"):
        model.fit(data, epochs=1, verbose=0)


def test_a_misspelt_sample_weight_key_is_refused_not_left_unweighted():
    """`{'aa': w}` for head `a` left `a` unweighted without a word, in compute() and in fit on tf.data."""
    spec = "outputs: {a: {loss: mse}, b: {loss: mae}}"
    rng = np.random.default_rng(0)
    y = {"a": rng.normal(size=(8, 2)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    p = {"a": rng.normal(size=(8, 2)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    w = np.linspace(0.0, 2.0, 8).astype("float32")
    loss = ml.build_loss(spec)
    weighted = float(loss.compute(y, p, sample_weight={"a": w}).losses["a"])
    expected = float(np.sum(w * ((y["a"] - p["a"]) ** 2).mean(-1)) / 8)   # Keras's default: Σ w·L / B
    assert weighted == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ml.SpecError, match=r"sample_weight: unknown key 'aa'; did you mean 'a'\? valid: a, b"):
        loss.compute(y, p, sample_weight={"aa": w})
    with pytest.raises(ml.SpecError, match=r"unknown key 'zzz'"):
        loss.compute(y, p, sample_weight={"a": w, "zzz": w})

    x = keras.Input((3,))
    model = keras.Model(x, {"a": keras.layers.Dense(2, name="a")(x), "b": keras.layers.Dense(1, name="b")(x)})
    ml.compile(model, spec, optimizer="sgd")
    data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(8, 3)).astype("float32"), y, {"aa": w})).batch(4)
    with pytest.raises(ml.SpecError, match=r"sample_weight: unknown key 'aa'"):
        model.fit(data, epochs=1, verbose=0)
