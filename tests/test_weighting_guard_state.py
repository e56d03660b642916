"""A skipped step (``nonfinite: skip``) puts back every part of a strategy's state, DB-MTL's averages too."""

import keras
import numpy as np

import multiloss as ml
from multiloss.weighting.base import RowAggregator

SPEC = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}},
        "weighting": {"strategy": "db_mtl", "params": {"beta": 0.9}}}


def _model():
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="trunk")(x)
    model = keras.Model(x, {"a": keras.layers.Dense(2, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})
    ml.compile(model, SPEC, optimizer=keras.optimizers.SGD(0.1), nonfinite="skip")
    return model


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = {"a": rng.normal(size=(8, 2)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    y["b"][5] = np.nan                                   # the second batch of 4: term b is NaN
    return x, y


def test_db_mtl_averages_are_put_back_after_a_skipped_step():
    x, y = _data()
    model = _model()
    strategy = model.loss.weighting.strategy
    assert strategy.active_kind() is RowAggregator and "buffer" in strategy.state   # β > 0: per-parameter averages
    hist = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0).history
    assert hist["nonfinite_skipped"] == [1.0, 1.0, 1.0]               # only the NaN batch, every epoch
    # The same as training on the finite batch alone: the skipped steps left no trace in the averages.
    reference = _model()
    reference.fit(x[:4], {k: v[:4] for k, v in y.items()}, batch_size=4, epochs=3, shuffle=False, verbose=0)
    got, want = strategy.buffer.numpy(), reference.loss.weighting.strategy.buffer.numpy()
    assert np.isfinite(got).all() and np.abs(want).sum() > 0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert set(strategy.get_state()) == {"current", "buffer"}        # the averages are saved too
    np.testing.assert_array_equal(strategy.get_state()["buffer"], got)
