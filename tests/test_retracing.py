"""A second ``fit`` with another sample-weight rank retraces as in Keras (TensorFlow relaxes the signature to
an unknown rank); the losses equal those of a fresh model that sees the same call first."""

import keras
import numpy as np

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


def test_fit_again_after_a_fit_that_failed_while_tracing():
    """A first fit whose data lacks a target fails while Keras traces its step; the same model's fit on
    the fixed data trains (it raised "Creating variables on a non-first call to a function decorated
    with tf.function": the failed trace had not made the head's accuracy variables), as a fresh one."""
    import tensorflow as tf

    spec = ("outputs: {image: {loss: mse}, score: {loss: mse, weight: 0.5, metrics: [mae]}, "
            "kind: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}}")

    def model(seed=0):
        keras.utils.set_random_seed(seed)
        x = keras.Input((4, 4, 1), name="x")
        h = keras.layers.Conv2D(2, 1, activation="tanh", name="trunk")(x)
        flat = keras.layers.Flatten()(h)
        return keras.Model(x, {"image": keras.layers.Conv2D(1, 1, name="image")(h),
                               "score": keras.layers.Dense(1, name="score")(flat),
                               "kind": keras.layers.Dense(3, activation="softmax", name="kind")(flat)})

    rng = np.random.default_rng(1)
    x = rng.random((16, 4, 4, 1)).astype("float32")
    y = {"image": rng.random((16, 4, 4, 1)).astype("float32"), "score": rng.random((16, 1)).astype("float32"),
         "kind": rng.integers(0, 3, 16)}
    lacking = {k: v for k, v in y.items() if k != "score"}
    failed, fresh = model(), model()
    for m in (failed, fresh):
        ml.compile(m, spec, optimizer=keras.optimizers.SGD(0.1))
    try:
        failed.fit(tf.data.Dataset.from_tensor_slices((x, lacking)).batch(8), epochs=1, verbose=0)
    except ml.SpecError as exc:
        assert "y has no target 'score'" in str(exc)
    else:
        raise AssertionError("a fit without the score target trained")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    again, first = (m.fit(data, epochs=2, verbose=0).history for m in (failed, fresh))
    for key in ("loss", "score_mae", "kind_accuracy", "image_loss"):
        np.testing.assert_allclose(again[key], first[key], rtol=1e-6, err_msg=key)
