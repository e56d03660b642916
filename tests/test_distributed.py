"""MirroredStrategy with two replicas equals one device, for every reduction.

conftest.py splits the CPU into two logical devices.  One global batch of 8
is split 4 + 4; sample weights are uneven across the halves, so a
per-replica mean of ratios would differ from the global ratio.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import multiloss as ml


@ml.register_loss("_batch_mean_square_for_tests")
def _scalar(y_true, y_pred):
    """A custom loss returning a scalar (the batch mean): Keras 3.15 doubles these."""
    return ops.mean(ops.square(y_true - y_pred))


def _run(strategy, reduction):
    spec = {
        "outputs": {
            "a": {"loss": "mse", "weight": 0.7, "reduction": reduction},
            "b": {"loss": "categorical_crossentropy", "class_weight": {1: 3.0}, "reduction": reduction},
            "c": {"loss": "_batch_mean_square_for_tests", "weight": 0.5},
        }
    }
    with strategy.scope():
        keras.utils.set_random_seed(0)
        x_in = keras.Input((5,))
        h = keras.layers.Dense(6, activation="tanh")(x_in)
        model = keras.Model(x_in, {
            "a": keras.layers.Dense(2, name="a")(h),
            "b": keras.layers.Dense(3, activation="softmax", name="b")(h),
            "c": keras.layers.Dense(1, name="c")(h),
        })
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(1.0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = {"a": rng.normal(size=(8, 2)).astype("float32"),
         "b": np.eye(3, dtype="float32")[[1, 0, 2, 1, 1, 2, 0, 1]],
         "c": rng.normal(size=(8, 1)).astype("float32")}
    sw = np.array([1.0, 0.0, 2.0, 0.0, 5.0, 0.5, 3.0, 0.0], "float32")
    sw_dict = {"a": sw, "b": sw}
    before = [v.numpy() for v in model.trainable_variables]
    data = tf.data.Dataset.from_tensors((x, y, sw_dict))  # one global batch of 8
    hist = model.fit(data, epochs=1, verbose=0).history
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]  # lr = 1
    return {k: v[0] for k, v in hist.items()}, grads


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ml.REDUCTIONS)
def test_two_replicas_equal_one_device(reduction):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest should provide two logical CPUs"
    one, g1 = _run(tf.distribute.OneDeviceStrategy(devices[0]), reduction)
    two, g2 = _run(ml.mirrored_strategy(devices[:2]), reduction)
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    flat1 = np.concatenate([g.ravel() for g in g1])
    flat2 = np.concatenate([g.ravel() for g in g2])
    assert np.linalg.norm(flat1) > 1e-3
    assert np.linalg.norm(flat2 - flat1) / np.linalg.norm(flat1) < 1e-5


def test_one_strategy_after_another_in_one_process_trains():
    """A second MirroredStrategy in a process reuses the first one's collective keys and fails
    ("Shape mismatch in the collective instance 100", tensorflow#62790; native Keras alike).
    ``ml.mirrored_strategy`` gives each one keys of its own: three models of different shapes
    train one after another, each to the one-device step."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    x = np.linspace(-1, 1, 40, dtype="float32").reshape(8, 5)
    y = {"y": np.linspace(0, 1, 8, dtype="float32").reshape(8, 1)}
    for width in (3, 7, 2):          # different shapes to all-reduce each time
        steps = []
        for strategy in (tf.distribute.OneDeviceStrategy(devices[0]), ml.mirrored_strategy(devices[:2])):
            with strategy.scope():
                keras.utils.set_random_seed(width)
                x_in = keras.Input((5,))
                model = keras.Model(x_in, {"y": keras.layers.Dense(1, name="y")(
                    keras.layers.Dense(width, activation="tanh")(x_in))})
                ml.compile(model, {"outputs": {"y": {"loss": "mse"}}}, optimizer=keras.optimizers.SGD(1.0))
            before = [v.numpy() for v in model.trainable_variables]
            model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
            steps.append(np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)]))
        assert np.linalg.norm(steps[0]) > 1e-3
        np.testing.assert_allclose(steps[1], steps[0], rtol=1e-5, atol=1e-7)
