"""Mixed precision: a loss-scale overflow is handed to Keras's LossScaleOptimizer, a real NaN still stops.

Under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer``
whose scale starts at 2¹⁵.  The regression target here is large (σ = 500), so
the scaled output gradient 2·|ŷ − y|/16·scale overflows float16 (max 65504)
until the scale has been halved to about 2⁸: those steps must be skipped and
the scale lowered exactly as in Keras's own step, never taken for a NaN.
"""

import math

import keras
import numpy as np
import pytest

import multiloss as ml

SPEC = {"outputs": {"a": {"loss": "mse", "weight": 1.0}, "b": {"loss": "mse", "weight": 0.5}}}
STEPS_PER_EPOCH, EPOCHS, INITIAL_SCALE = 4, 4, 2.0 ** 15


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, activation="tanh", name="trunk")(x)
    h = keras.layers.Dense(8, activation="tanh", name="rep")(h)
    return keras.Model(x, {"a": keras.layers.Dense(1, name="a")(h), "b": keras.layers.Dense(3, name="b")(h)})


def _data(n=16 * STEPS_PER_EPOCH, seed=1):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 4)).astype("float32")
    return x, {"a": (500 * r.normal(size=(n, 1))).astype("float32"), "b": r.normal(size=(n, 3)).astype("float32")}


def _fit(model, x, y, **kw):
    return model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0, **kw).history


def _scale(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))


def _iterations(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_static_weights_equal_native_compile_epoch_by_epoch_with_a_loss_that_overflows(policy):
    x, y = _data()
    native = _model()
    native.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"a": "mse", "b": "mse"},
                   loss_weights={"a": 1.0, "b": 0.5})
    ours = _model()
    ml.compile(ours, SPEC, optimizer=keras.optimizers.Adam(1e-2))
    assert isinstance(ours.optimizer, keras.optimizers.LossScaleOptimizer)
    h_native, h_ours = _fit(native, x, y), _fit(ours, x, y)
    np.testing.assert_allclose(h_ours["loss"], h_native["loss"], rtol=1e-5)
    # The overflow really happened: the scale fell, and as many steps as halvings were skipped.
    assert _scale(ours) == _scale(native) < INITIAL_SCALE
    halvings = round(math.log2(INITIAL_SCALE / _scale(ours)))
    assert halvings >= 3
    assert _iterations(ours) == _iterations(native) == STEPS_PER_EPOCH * EPOCHS - halvings
    for a, b in zip(ours.get_weights(), native.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The logged values are unscaled: the term logs recompose the epoch's total.
    total = h_ours["a_loss"][-1] * 1.0 + h_ours["b_loss"][-1] * 0.5
    assert h_ours["loss"][-1] == pytest.approx(total, rel=1e-5)
    assert h_ours["a_loss"][-1] < 1e6      # σ = 500: an MSE of about 2.5e5, not times the scale


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("strategy", ["pcgrad", "mgda", "uncertainty"])
def test_strategies_train_through_the_overflow_and_a_real_nan_still_stops(policy, strategy):
    x, y = _data()
    model = _model()
    ml.compile(model, {**SPEC, "weighting": {"strategy": strategy}}, optimizer=keras.optimizers.Adam(1e-2))
    hist = _fit(model, x, y)
    assert np.isfinite(hist["loss"]).all()
    halvings = round(math.log2(INITIAL_SCALE / _scale(model)))
    assert halvings >= 3
    assert _iterations(model) == STEPS_PER_EPOCH * EPOCHS - halvings
    assert all(np.isfinite(w).all() for w in model.get_weights())
    weights = model.loss.get_weights()
    assert all(np.isfinite(v) for v in weights.values()), weights

    # Then a real NaN (batch 2 of the next fit): it stops training, naming the term, and is no overflow:
    # the scale stays, step 1 is applied, nothing from step 2 on.
    bad = x.copy()
    bad[20, 2] = np.nan
    scale, steps = _scale(model), _iterations(model)
    with pytest.raises(ml.NonFiniteError, match=r"term 'a'.*epoch 1, step 2"):
        model.fit(bad, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert _scale(model) == scale and _iterations(model) == steps + 1
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_bfloat16_static_weights_equal_native_compile(policy):
    x, y = _data()
    y = {"a": y["a"] / 500, "b": y["b"]}
    native = _model()
    native.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"a": "mse", "b": "mse"},
                   loss_weights={"a": 1.0, "b": 0.5})
    ours = _model()
    ml.compile(ours, SPEC, optimizer=keras.optimizers.Adam(1e-2))
    assert not isinstance(ours.optimizer, keras.optimizers.LossScaleOptimizer)
    np.testing.assert_allclose(_fit(ours, x, y)["loss"], _fit(native, x, y)["loss"], rtol=1e-5)


def test_train_and_incremental_runs_take_train_precision(tmp_path):
    from multiloss.incremental import run_incremental
    from multiloss.run.precision import dtype_policy
    from multiloss.run.train import default_config_path, train

    metrics = train(default_config_path(),
                    ["train.epochs=1", "train.precision=mixed_float16", f"output_dir={tmp_path}", "train.verbose=0"])
    assert keras.config.dtype_policy().name == "float32"        # put back after the run
    assert np.isfinite(metrics["test"]["loss"])
    # Keras saves no model-level policy: a mixed_float16 model reloads with its loss scale under the same
    # policy (as `--resume` does), for native models as well.
    with dtype_policy("mixed_float16"):
        model = keras.saving.load_model(next(tmp_path.glob("*/model.keras")))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {"mixed_float16"}

    summary = run_incremental("configs/incremental_digits.yaml", [
        "train.precision=mixed_bfloat16", "train.epochs=2", "scenario.initial=5", "scenario.increment=5",
        f"output_dir={tmp_path}", "name=inc"], quiet=True)
    assert keras.config.dtype_policy().name == "float32"
    assert len(summary["accuracy"]) == 2 and summary["accuracy"][-1] > 0.3     # 10 classes: chance is 0.1


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_the_incremental_heads_normalise_in_float32_under_mixed_float16(policy):
    """iCaRL's nearest-mean layer (in the saved model.keras) and LUCIR's/PODNet's cosine classifiers
    normalised in float16: ‖f‖² of a feature of norm > 256 overflowed, so every class scored −1 and the
    saved model's argmax was always class 0. Checked against numpy in float64."""
    from multiloss.incremental.network import LocalSimilarityClassifier, NearestMeanScores

    r = np.random.default_rng(0)
    feats = (400 * r.normal(size=(6, 8)) / np.sqrt(8)).astype("float32")      # norms about 400
    means = r.normal(size=(3, 8))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = -((f[:, None] - means[None]) ** 2).sum(-1)
    got = keras.ops.convert_to_numpy(NearestMeanScores(means)(feats))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (got.argmax(1) == expected.argmax(1)).all()
    cosine = LocalSimilarityClassifier(3, proxies=1)
    out = keras.ops.convert_to_numpy(cosine(feats))
    kernel = np.asarray(cosine.kernel, "float64")
    np.testing.assert_allclose(out, f @ (kernel / np.linalg.norm(kernel, axis=0)), rtol=1e-5, atol=1e-6)
