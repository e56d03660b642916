"""Gradient accumulation (``optimizer(gradient_accumulation_steps=k)``).

Static weights and loss-weighting strategies go through Keras's own step: they equal native
``model.compile``.  The gradient strategies combine **per micro-batch**: each micro-batch's per-task
gradients are combined by the strategy (PCGrad's projections here), and Keras's optimizer applies the
mean of the k combined gradients every k-th step, with the weights unchanged in between.
"""

import keras
import numpy as np
import tensorflow as tf

import multiloss as ml

SPEC = {"outputs": {"cls": {"loss": "categorical_crossentropy"}, "reg": {"loss": "mse", "weight": 0.5}}}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(6, activation="tanh", name="trunk")(x)
    return keras.Model(x, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                           "reg": keras.layers.Dense(2, name="reg")(h)})


def _data(n=16, seed=1):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, 5)).astype("float32"), {
        "cls": np.eye(3, dtype="float32")[r.integers(0, 3, n)], "reg": (3 * r.normal(size=(n, 2))).astype("float32")}


def test_static_and_uncertainty_weights_equal_native_compile_under_accumulation():
    x, y = _data(32)
    native = _model()
    native.compile(optimizer=keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2),
                   loss={"cls": "categorical_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.5})
    ours = _model()
    ml.compile(ours, SPEC, optimizer=keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2))
    fit = dict(epochs=3, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(ours.fit(x, y, **fit).history["loss"], native.fit(x, y, **fit).history["loss"],
                               rtol=1e-6)
    for a, b in zip(ours.get_weights(), native.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    learned = _model()      # a loss weighting: Keras's own step too; it trains under accumulation
    ml.compile(learned, {**SPEC, "weighting": {"strategy": "uncertainty"}},
               optimizer=keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2))
    assert np.isfinite(learned.fit(x, y, **fit).history["loss"]).all()


def _pcgrad_update(model, x, y):
    """PCGrad (Algorithm 1, two tasks, whole gradient) of one micro-batch, by hand."""
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        out = model(x)
        ce = -tf.reduce_mean(tf.reduce_sum(y["cls"] * tf.math.log(out["cls"]), -1))
        losses = (1.0 * ce, 0.5 * tf.reduce_mean(tf.square(y["reg"] - out["reg"])))     # static weights 1, 0.5
    rows = []
    for loss in losses:
        grads = tape.gradient(loss, variables)
        rows.append(np.concatenate([np.zeros(v.shape).ravel() if g is None else g.numpy().ravel()
                                    for g, v in zip(grads, variables)]).astype("float64"))
    g = np.stack(rows)
    return _project_sum(g), g


def test_pcgrad_combines_each_micro_batch_and_the_optimizer_applies_their_mean():
    x, y = _data(16, seed=5)
    model = _model(seed=3)
    ml.compile(model, {**SPEC, "weighting": {"strategy": "pcgrad", "params": {"scope": "all"}}},
               optimizer=keras.optimizers.SGD(0.5, gradient_accumulation_steps=2))
    halves = [(x[:8], {k: v[:8] for k, v in y.items()}), (x[8:], {k: v[8:] for k, v in y.items()})]
    expected = [_pcgrad_update(model, *half) for half in halves]     # both at the starting weights
    before = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    model.fit(*halves[0], batch_size=8, epochs=1, verbose=0, shuffle=False)
    after_one = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    np.testing.assert_array_equal(after_one, before)                 # micro-batch 1: accumulated only
    model.fit(*halves[1], batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    mean = 0.5 * (expected[0][0] + expected[1][0])
    np.testing.assert_allclose(before - after, 0.5 * mean, rtol=1e-4, atol=1e-7)
    # The projection was exercised, and combining once on the summed gradients would differ.
    assert any(g[0] @ g[1] < 0 for _, g in expected)
    summed = sum(g for _, g in expected) / 2
    once = _project_sum(summed)
    assert not np.allclose(once, mean, rtol=1e-3, atol=1e-6)


def _project_sum(g):
    """Σ_i of g_i projected off g_j where they conflict (PCGrad, two tasks)."""
    return sum(g[i] - min(g[i] @ g[j], 0.0) / (g[j] @ g[j]) * g[j] for i, j in ((0, 1), (1, 0)))
