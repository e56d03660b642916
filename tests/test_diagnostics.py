"""Per-task gradient norms and cosines on the shared parameters, against hand-written gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.core.diagnostics import GradientDiagnostics, cosine_similarity, gradient_norms, task_gradients

SPEC = """
outputs:
  o:
    loss:
      - {loss: mse, name: up}
      - {loss: {name: "tests.test_diagnostics:mse_to_negated"}, name: down}
  side: {loss: mae}
"""


def mse_to_negated(y_true, y_pred):
    """MSE against the negated target: its gradient opposes `up`'s."""
    return tf.reduce_mean(tf.square(-y_true - y_pred), axis=-1)


def _model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    h = keras.layers.Dense(6, activation="tanh", name="trunk")(x)
    return keras.Model(x, {"o": keras.layers.Dense(2, name="o")(h), "side": keras.layers.Dense(1, name="side")(h)})


def _data(n=24):
    r = np.random.default_rng(0)
    x = r.normal(size=(n, 4)).astype("float32")
    return x, {"o": (2 + r.normal(size=(n, 2))).astype("float32"), "side": r.normal(size=(n, 1)).astype("float32")}


def _reference(model, x, y):
    """Each term's gradient of the shared parameters from its own hand-written loss.

    Shared: the trunk (every term) and the head `o` (the terms `up` and `down`).
    """
    losses = {
        "up": lambda p: tf.reduce_mean(tf.square(y["o"] - p["o"])),
        "down": lambda p: tf.reduce_mean(tf.square(-y["o"] - p["o"])),
        "side": lambda p: tf.reduce_mean(tf.abs(y["side"] - p["side"])),
    }
    shared = model.get_layer("trunk").trainable_variables + model.get_layer("o").trainable_variables
    rows = []
    for fn in losses.values():
        with tf.GradientTape() as tape:
            loss = fn(model(x))
        grads = tape.gradient(loss, shared)
        rows.append(np.concatenate([np.zeros(v.shape).ravel() if g is None else g.numpy().ravel()
                                    for g, v in zip(grads, shared)]))
    return np.stack(rows)


def test_norms_and_cosines_match_hand_written_gradients_of_the_shared_parameters():
    model = ml.compile(_model(), SPEC, optimizer="sgd")
    x, y = _data()
    grads = task_gradients(model, x, y)
    assert grads.names == ["up", "down", "side"]
    assert [v.path for v in grads.variables] == ["trunk/kernel", "trunk/bias", "o/kernel", "o/bias"]
    want = _reference(model, x, y)
    np.testing.assert_allclose(grads.matrix, want, rtol=1e-5, atol=1e-7)
    norms, cos = gradient_norms(want), cosine_similarity(want)
    np.testing.assert_allclose(gradient_norms(grads.matrix), np.linalg.norm(want, axis=1), rtol=1e-6)
    assert cos[0, 1] < -0.5                    # `up` and `down` conflict
    np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-12)
    assert cos[0, 2] == pytest.approx(want[0] @ want[2] / (norms[0] * norms[2]), rel=1e-12)


def test_the_callback_logs_each_epoch_to_history_and_tensorboard(tmp_path):
    model = ml.compile(_model(), SPEC, optimizer=keras.optimizers.SGD(0.05))
    x, y = _data()
    probe = (x[:8], {k: v[:8] for k, v in y.items()})
    tb = keras.callbacks.TensorBoard(str(tmp_path))
    # Given after TensorBoard on purpose: fit puts multiloss's callbacks first.
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tb, GradientDiagnostics(probe)]).history
    keys = {"up_grad_norm", "down_grad_norm", "side_grad_norm", "up__down_grad_cos", "up__side_grad_cos",
            "down__side_grad_cos"}
    assert keys <= set(hist) and all(len(hist[k]) == 2 for k in keys)
    last = _reference(model, *probe)            # the weights after the last epoch
    assert hist["up_grad_norm"][-1] == pytest.approx(np.linalg.norm(last[0]), rel=1e-5)
    assert hist["up__down_grad_cos"][-1] == pytest.approx(cosine_similarity(last)[0, 1], rel=1e-5)
    tags = set()
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in event.summary.value}
    assert {"epoch_up_grad_norm", "epoch_up__down_grad_cos"} <= tags
