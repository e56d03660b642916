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
