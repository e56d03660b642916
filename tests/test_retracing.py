"""A second ``fit`` with another sample-weight rank retraces as in Keras (TensorFlow relaxes the signature to
an unknown rank); the losses equal those of a fresh model that sees the same call first."""

import keras
import numpy as np
import pytest

import multiloss as ml

SPEC = "outputs: {image: {loss: mse}, score: {loss: mse, weight: 0.5}}"


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((4, 4, 1), name="x")
    h = keras.layers.Conv2D(2, 1, activation="tanh", name="trunk")(x)
    return keras.Model(x, {"image": keras.layers.Conv2D(1, 1, name="image")(h),
                           "score": keras.layers.Dense(1, name="score")(keras.layers.Flatten()(h))})


def test_a_second_fit_with_per_pixel_weights_after_per_sample_ones_equals_a_fresh_models():
    rng = np.random.default_rng(0)
    x = rng.random((16, 4, 4, 1)).astype("float32")
    y = {"image": rng.random((16, 4, 4, 1)).astype("float32"), "score": rng.random((16, 1)).astype("float32")}
    per_sample = {"image": rng.random(16).astype("float32"), "score": np.ones(16, "float32")}
    per_pixel = {"image": rng.random((16, 4, 4)).astype("float32"), "score": np.ones(16, "float32")}

    def fit(model, weights):
        return model.fit(x, y, sample_weight=weights, epochs=2, batch_size=8, shuffle=False, verbose=0).history

    seen = _model()
    ml.compile(seen, SPEC, optimizer=keras.optimizers.SGD(0.1))
    fit(seen, per_sample)
    fresh = _model()
    fresh.set_weights(seen.get_weights())
    ml.compile(fresh, SPEC, optimizer=keras.optimizers.SGD(0.1))
    retraced, first = fit(seen, per_pixel), fit(fresh, per_pixel)
    for key in ("loss", "image_loss", "score_loss"):
        np.testing.assert_allclose(retraced[key], first[key], rtol=1e-6, err_msg=key)
    assert retraced["image_loss"] != fit(fresh, per_sample)["image_loss"]     # the weights did change the loss


def _three_heads(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((4, 4, 1), name="x")
    h = keras.layers.Conv2D(2, 1, activation="tanh", name="trunk")(x)
    flat = keras.layers.Flatten()(h)
    model = keras.Model(x, {"image": keras.layers.Conv2D(1, 1, name="image")(h),
                            "score": keras.layers.Dense(1, name="score")(flat),
                            "kind": keras.layers.Dense(3, activation="softmax", name="kind")(flat)})
    ml.compile(model, "outputs: {image: {loss: mse}, score: {loss: mse, weight: 0.5, metrics: [mae]}, "
                      "kind: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}}",
               optimizer=keras.optimizers.SGD(0.1))
    return model


def _three_head_data():
    rng = np.random.default_rng(1)
    x = rng.random((16, 4, 4, 1)).astype("float32")
    y = {"image": rng.random((16, 4, 4, 1)).astype("float32"), "score": rng.random((16, 1)).astype("float32"),
         "kind": rng.integers(0, 3, 16)}
    return x, y, {k: v for k, v in y.items() if k != "score"}


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_again_after_a_call_that_failed_while_tracing(method):
    """A first fit (or evaluate) whose data lacks a target fails while Keras traces its step; the same
    model's call on the fixed data works (it raised "Creating variables on a non-first call to a function
    decorated with tf.function": the failed trace had not made the head's accuracy variables), as a
    fresh model's."""
    import tensorflow as tf

    x, y, lacking = _three_head_data()
    failed, fresh = _three_heads(), _three_heads()
    with pytest.raises(ml.SpecError, match="y has no target 'score'"):
        getattr(failed, method)(tf.data.Dataset.from_tensor_slices((x, lacking)).batch(8), verbose=0)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    if method == "fit":
        again, first = (m.fit(data, epochs=2, verbose=0).history for m in (failed, fresh))
    else:
        again, first = (m.evaluate(data, verbose=0, return_dict=True) for m in (failed, fresh))
    for key in ("loss", "score_mae", "kind_accuracy", "image_loss"):
        np.testing.assert_allclose(again[key], first[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_second_call_with_another_target_rank_equals_a_fresh_models(method):
    """Depth targets [B, 4, 4, 1], then [B, 4, 4] on the same model: the relaxed trace saw a target of
    unknown rank ("Cannot iterate over a shape with unknown rank" from the shape check; Keras alone fails
    too); a call whose ranks differ from the last one's now gets a new trace, as a fresh model."""
    rng = np.random.default_rng(2)
    x = rng.random((16, 4, 4, 1)).astype("float32")
    y = {"image": rng.random((16, 4, 4, 1)).astype("float32"), "score": rng.random((16, 1)).astype("float32")}
    flat = {**y, "image": y["image"][..., 0]}

    def call(model, targets):
        if method == "fit":
            return model.fit(x, targets, epochs=2, batch_size=8, shuffle=False, verbose=0).history
        return model.evaluate(x, targets, batch_size=8, verbose=0, return_dict=True)

    seen, fresh = _model(), _model()
    for m in (seen, fresh):
        ml.compile(m, SPEC, optimizer=keras.optimizers.SGD(0.1))
    call(seen, y)
    fresh.set_weights(seen.get_weights())
    again, first = call(seen, flat), call(fresh, flat)
    for key in ("loss", "image_loss", "score_loss"):
        np.testing.assert_allclose(again[key], first[key], rtol=1e-6, err_msg=key)
