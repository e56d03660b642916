"""MirroredStrategy with two replicas equals one device for every dynamic strategy.

conftest.py splits the CPU into two logical devices.  One global batch of 8
is split 4 + 4 with uneven sample weights.  Each strategy is ``ml.mirrored_strategy``, with
TensorFlow's default collective all-reduce: many of them run different programs in this process.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml


def _run(strategy, name):
    spec = {"outputs": {"a": {"loss": "mse", "weight": 0.7, "reduction": "weighted_mean"},
                        "b": {"loss": "categorical_crossentropy", "class_weight": {1: 3.0}},
                        "c": {"loss": "mse", "weight": 0.5}},
            "weighting": {"strategy": name},
            "schedules": {"c": {"kind": "linear", "start": 1.0, "end": 0.5, "steps": 4}}}
    with strategy.scope():
        keras.utils.set_random_seed(0)
        x_in = keras.Input((5,))
        h = keras.layers.Dense(6, activation="tanh", name="trunk")(x_in)
        model = keras.Model(x_in, {"a": keras.layers.Dense(2, name="a")(h),
                                   "b": keras.layers.Dense(3, activation="softmax", name="b")(h),
                                   "c": keras.layers.Dense(1, name="c")(h)})
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.5))
    r = np.random.default_rng(0)
    x = r.normal(size=(8, 5)).astype("float32")
    y = {"a": r.normal(size=(8, 2)).astype("float32"), "b": np.eye(3, dtype="float32")[[1, 0, 2, 1, 1, 2, 0, 1]],
         "c": r.normal(size=(8, 1)).astype("float32")}
    sw = np.array([1.0, 0.0, 2.0, 0.0, 5.0, 0.5, 3.0, 0.0], "float32")
    data = tf.data.Dataset.from_tensors((x, y, {"a": sw, "b": sw})).repeat(3)
    hist = model.fit(data, epochs=2, verbose=0, shuffle=False).history
    params = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    return hist, params, model.loss.weighting.strategy.get_state()


@pytest.mark.slow
# One strategy per code path: learned parameters (uncertainty), state from all-reduced losses (dwa),
# per-task gradients of one layer (gradnorm) and of every shared parameter with a solver (mgda);
# rlw, pcgrad and cagrad run through the same paths.
@pytest.mark.parametrize("name", ["uncertainty", "dwa", "gradnorm", "mgda"])
def test_two_replicas_equal_one_device(name):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    one = _run(tf.distribute.OneDeviceStrategy(devices[0]), name)
    two = _run(ml.mirrored_strategy(devices[:2]),
               name)
    assert one[0].keys() == two[0].keys()
    for key in one[0]:
        np.testing.assert_allclose(two[0][key], one[0][key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(two[1], one[1], rtol=1e-5, atol=1e-6)
    for key in one[2]:
        np.testing.assert_allclose(two[2][key], one[2][key], rtol=1e-5, atol=1e-6, err_msg=key)
