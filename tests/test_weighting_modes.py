"""Representation gradients (MGDA-UB), PCGrad's whole-gradient scope, the new strategies under fit,
register_strategy and the collapse warning.

The references are written independently: per-task gradients from a plain
``tf.GradientTape`` on the model's layers, the strategy's formula in numpy,
the expected SGD step by hand.
"""

import logging
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.core import gradients as weighting_step
from multiloss.weighting import STRATEGIES, Params, Strategy, WeightCollapseWarning
from multiloss.weighting.pcgrad import random_order

NEW = ["nash_mtl", "imtl_g", "gradvac", "aligned_mtl", "upgrad", "famo", "db_mtl", "graddrop",
       "stch", "imtl_l", "imtl", "config", "dual_proj", "excess_mtl", "moco", "modo", "sdmgrad"]
GRADIENT = ["pcgrad", "mgda", "cagrad", "nash_mtl", "imtl_g", "gradvac", "aligned_mtl", "upgrad", "db_mtl",
            "graddrop", "imtl", "config", "dual_proj"]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(6, activation="tanh", name="trunk")(x)
    z = keras.layers.Dense(4, activation="tanh", name="rep")(h)
    return keras.Model(x, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(z),
                           "reg": keras.layers.Dense(2, name="reg")(z)})


def _data(n=16, seed=1):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 5)).astype("float32")
    return x, {"cls": np.eye(3, dtype="float32")[r.integers(0, 3, n)],
               "reg": (3 * r.normal(size=(n, 2))).astype("float32")}


def _spec(strategy, mode="parameters", **params):
    spec = {"outputs": {"cls": {"loss": "categorical_crossentropy", "weight": 1.0},
                        "reg": {"loss": "mse", "weight": 0.5}},
            "weighting": {"strategy": strategy, "params": params}}
    if mode != "parameters":
        spec["weighting"]["gradients"] = mode
    return spec


def _losses(model, x, y):
    out = model(x)
    ce = -tf.reduce_mean(tf.reduce_sum(y["cls"] * tf.math.log(out["cls"]), -1))
    mse = tf.reduce_mean(tf.square(y["reg"] - out["reg"]))
    return [1.0 * ce, 0.5 * mse]                  # static weights 1 and 0.5


def _min_norm_two(g):
    """MGDA's closed form for two gradients (Sener & Koltun, Algorithm 1)."""
    a = (g[1] - g[0]) @ g[1] / max(np.sum((g[0] - g[1]) ** 2), 1e-300)
    a = float(np.clip(a, 0.0, 1.0))
    return np.array([a, 1 - a])


@pytest.mark.parametrize("stitch_max", [None, 0])
def test_mgda_ub_moves_the_trunk_along_the_min_norm_combination_of_representation_gradients(stitch_max, monkeypatch):
    if stitch_max is not None:                  # the rows stacked by Pack instead of DynamicStitch
        monkeypatch.setattr(weighting_step, "STITCH_MAX", stitch_max)
    model = _model(seed=2)
    ml.compile(model, _spec("mgda", "representation"), optimizer=keras.optimizers.SGD(1.0))
    x, y = _data()
    rep = model.get_layer("rep")
    trunk_vars = model.get_layer("trunk").trainable_variables + rep.trainable_variables
    # Independent reference: Z from the layers, ∇_Z of each scaled loss, the closed form, one backprop.
    with tf.GradientTape(persistent=True) as tape:
        z = rep(model.get_layer("trunk")(x))
        tape.watch(z)
        heads = {"cls": model.get_layer("cls")(z), "reg": model.get_layer("reg")(z)}
        ce = -tf.reduce_mean(tf.reduce_sum(y["cls"] * tf.math.log(heads["cls"]), -1))
        mse = 0.5 * tf.reduce_mean(tf.square(y["reg"] - heads["reg"]))
    gz = np.stack([tape.gradient(v, z).numpy().ravel() for v in (ce, mse)]).astype("float64")
    lam = _min_norm_two(gz)
    dz = (lam[0] * gz[0] + lam[1] * gz[1]).reshape(z.shape).astype("float32")
    want_trunk = [g.numpy() for g in tape.gradient(z, trunk_vars, output_gradients=tf.constant(dz))]
    want_cls = [g.numpy() for g in tape.gradient(ce, model.get_layer("cls").trainable_variables)]
    before = [v.numpy() for v in trunk_vars]
    cls_before = [v.numpy() for v in model.get_layer("cls").trainable_variables]
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    for b, v, g in zip(before, trunk_vars, want_trunk):
        np.testing.assert_allclose(b - v.numpy(), g, rtol=2e-4, atol=1e-7)
    for b, v, g in zip(cls_before, model.get_layer("cls").trainable_variables, want_cls):
        np.testing.assert_allclose(b - v.numpy(), g, rtol=2e-4, atol=1e-7)    # heads: their own gradient
    np.testing.assert_allclose([hist["cls_weight"][0], hist["reg_weight"][0]], lam * [1.0, 0.5], rtol=1e-4)
    assert model.loss.weighting.representation.names == ["rep"]


def test_row_stacking_gives_np_stack_on_both_sides_of_the_stitch_limit_and_with_a_dynamic_batch():
    r = np.random.default_rng(0)
    small = [r.normal(size=(4, 8)).astype("float32") for _ in range(3)]
    large = [r.normal(size=(2, weighting_step.STITCH_MAX)).astype("float32") for _ in range(3)]
    for rows in (small, large):
        np.testing.assert_array_equal(weighting_step._stack([tf.constant(a) for a in rows]).numpy(), np.stack(rows))
        dynamic = tf.function(lambda *t: weighting_step._stack(list(t)),
                              input_signature=[tf.TensorSpec([None, rows[0].shape[1]], tf.float32)] * 3)
        np.testing.assert_array_equal(dynamic(*rows).numpy(), np.stack(rows))


def test_pcgrad_whole_gradient_scope_is_algorithm_1_on_every_parameter():
    model = _model(seed=3)
    ml.compile(model, _spec("pcgrad", scope="all", seed=4), optimizer=keras.optimizers.SGD(1.0))
    x, y = _data(seed=5)
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        losses = _losses(model, x, y)
    flat = []
    for v in losses:
        gs = tape.gradient(v, variables)
        flat.append(np.concatenate([np.zeros(w.shape).ravel() if g is None else g.numpy().ravel()
                                    for g, w in zip(gs, variables)]).astype("float64"))
    g = np.stack(flat)
    order = random_order(2, 4, 0).numpy()
    update = []
    for i in range(2):                                          # Algorithm 1 on the whole gradient
        gi = g[i].copy()
        for j in order[i]:
            if gi @ g[j] < 0:
                gi = gi - gi @ g[j] / (g[j] @ g[j]) * g[j]
        update.append(gi)
    update = np.sum(update, 0)
    before = np.concatenate([v.numpy().ravel() for v in variables])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    after = np.concatenate([v.numpy().ravel() for v in variables])
    np.testing.assert_allclose(before - after, update, rtol=1e-3, atol=1e-6)
    assert g[0] @ g[1] < 0                                     # a conflict: the projection is exercised


@pytest.mark.parametrize("strategy,mode", [(s, "parameters") for s in NEW]
                         + [(s, "representation") for s in GRADIENT])
def test_every_new_strategy_and_mode_trains_and_logs_the_weighted_sum(strategy, mode):
    model = _model()
    ml.compile(model, _spec(strategy, mode), optimizer=keras.optimizers.Adam(0.05))
    x, y = _data()
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    w = np.stack([hist["cls_weight"], hist["reg_weight"]], 1)
    terms = np.stack([hist["cls_loss"], hist["reg_loss"]], 1)
    assert np.isfinite(w).all() and np.isfinite(hist["loss"]).all()
    if strategy in ("famo",):     # weights change every step: the epoch loss is the mean of per-step sums
        assert hist["loss"][0] < terms[0].sum() * 1.5
    else:
        state = model.loss.weighting.strategy.get_state()
        assert all(np.isfinite(np.asarray(v)).all() for v in state.values())


@pytest.mark.slow
@pytest.mark.parametrize("strategy,mode", [("imtl_g", "parameters"), ("aligned_mtl", "parameters"),
                                           ("upgrad", "parameters"), ("db_mtl", "parameters"),
                                           ("nash_mtl", "representation"), ("graddrop", "representation"),
                                           ("gradvac", "representation")])
def test_jit_compile_gives_the_same_training(strategy, mode):
    x, y = _data(32)
    runs = []
    for jit in (False, True):
        model = _model(seed=3)
        ml.compile(model, _spec(strategy, mode), optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        runs.append(model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False).history)
    for key in runs[0]:
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-4, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("strategy,mode", [("mgda", "representation"), ("upgrad", "representation"),
                                           ("graddrop", "parameters"), ("db_mtl", "parameters")])
def test_two_replicas_equal_one_device_in_both_modes(strategy, mode):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    x, y = _data(8)
    sw = np.array([1.0, 0.0, 2.0, 0.0, 5.0, 0.5, 3.0, 0.0], "float32")
    out = []
    for dist in (tf.distribute.OneDeviceStrategy(devices[0]),
                 ml.mirrored_strategy(devices[:2])):
        with dist.scope():
            model = _model(seed=8)
            ml.compile(model, _spec(strategy, mode), optimizer=keras.optimizers.SGD(0.5))
        data = tf.data.Dataset.from_tensors((x, y, {"cls": sw, "reg": sw})).repeat(3)
        hist = model.fit(data, epochs=2, verbose=0, shuffle=False).history
        out.append((hist, np.concatenate([v.numpy().ravel() for v in model.trainable_variables])))
    for key in out[0][0]:
        np.testing.assert_allclose(out[1][0][key], out[0][0][key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-5, atol=1e-6)


def test_saving_keeps_a_new_strategys_state_and_the_representation_mode(tmp_path):
    x, y = _data(32)
    model = _model(seed=6)
    ml.compile(model, _spec("gradvac", "representation", beta=0.5), optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    state = model.loss.weighting.strategy.get_state()
    assert np.abs(np.asarray(state["targets"])).sum() > 0
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.weighting.strategy.get_state() == state
    assert loaded.loss.weighting.representation.names == ["rep"]
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)            # training resumes in the same mode


# --- register_strategy, validation, the collapse warning -------------------------------------


class Fading(Strategy):
    """Test strategy: term 0's weight falls to 1e-4 after the first step."""

    name = "fading"

    def build(self):
        from multiloss.weighting.base import state_variable

        self.current = state_variable(np.ones(self.num_terms), "fading_weights")
        self.state = {"current": self.current}

    def weights(self, values, present, ctx):
        if ctx.training:
            lam = tf.where(tf.range(self.num_terms) == 0, 1e-4, 1.0)
            self.current.assign(lam)
        return tf.convert_to_tensor(self.current)


def test_register_strategy_by_class_and_import_string_and_the_collapse_warning(caplog):
    module = types.ModuleType("user_strategies")

    class Halves(Strategy):
        name = "halves"

        def weights(self, values, present, ctx):
            return tf.fill([self.num_terms], 0.5)

    module.Halves = Halves
    sys.modules["user_strategies"] = module
    try:
        assert ml.register_strategy("user_strategies:Halves") is Halves and STRATEGIES["halves"] is Halves
        assert ml.register_strategy(Fading) is Fading
        with pytest.raises(ValueError, match="taken"):
            ml.register_strategy(Halves, name="mgda")
        with pytest.raises(TypeError, match="not a subclass"):
            ml.register_strategy(dict)
        model = _model()
        ml.compile(model, _spec("halves"), optimizer="sgd")
        hist = model.fit(*_data(), batch_size=8, epochs=1, verbose=0).history
        assert hist["cls_weight"] == [0.5] and hist["reg_weight"] == [0.25]
        # An import string works in the spec without registering.
        model = _model()
        ml.compile(model, _spec("user_strategies:Halves"), optimizer="sgd")
        # The collapse warning: term `cls` stays at 1e-4 of its start for a whole epoch, named once.
        model = _model()
        ml.compile(model, _spec("fading"), optimizer="sgd")
        with caplog.at_level(logging.WARNING, logger="multiloss.weighting"), \
                pytest.warns(WeightCollapseWarning, match="term 'cls'") as record:
            model.fit(*_data(), batch_size=8, epochs=3, verbose=0)
        collapse = [str(w.message) for w in record if issubclass(w.category, WeightCollapseWarning)]
        assert len(collapse) == 1 and "term 'reg'" not in collapse[0] and "epoch 1," in collapse[0]
        assert sum("term 'cls'" in r.getMessage() for r in caplog.records) == 1
    finally:
        STRATEGIES.unregister("halves", "fading")
        sys.modules.pop("user_strategies", None)


def test_no_collapse_warning_for_balanced_weights(recwarn):
    model = _model()
    ml.compile(model, _spec("mgda"), optimizer="sgd")
    model.fit(*_data(), batch_size=8, epochs=2, verbose=0)
    assert not [w for w in recwarn if issubclass(w.category, WeightCollapseWarning)]


HEADS = "outputs:\n  cls: {loss: categorical_crossentropy}\n  reg: {loss: mse, weight: 0.5}\n"


@pytest.mark.parametrize("tail,where,message", [
    ("weighting: {strategy: mgda, gradients: representaton}", "weighting.gradients",
     "unknown gradient mode 'representaton'; did you mean 'representation'? valid: parameters, representation"),
    ("weighting: {strategy: gradnorm, gradients: representation}", "weighting.gradients",
     "balances the gradients of its layer W"),
    ("weighting: {strategy: famo, gradients: representation}", "weighting.gradients", "uses no per-task gradients"),
    ("weighting: {strategy: mgda, representation: [rep]}", "weighting.representation",
     "only used with gradients: representation"),
    ("weighting: {strategy: nash_mtl, params: {update_evry: 2}}", "weighting.params.update_evry",
     "valid: update_every, iters"),
    ("weighting: {strategy: nash-mtl}", "weighting.strategy", "did you mean 'nash_mtl'?"),
    ("weighting: {strategy: 'no_such_module:Thing'}", "weighting.strategy", "does not import"),
])
def test_new_spec_fields_are_validated(tail, where, message):
    with pytest.raises(ml.SpecError) as info:
        ml.load_spec(HEADS + tail + "\n")
    rendered = str(info.value)
    assert f":4: {where}:" in rendered, rendered
    assert message in rendered, rendered


def test_representation_layer_is_checked_against_the_model():
    model = _model()
    spec = _spec("mgda", "representation")
    spec["weighting"]["representation"] = ["reps"]
    with pytest.raises(ml.SpecError, match="no layer 'reps'; did you mean 'rep'"):
        ml.compile(model, spec, optimizer="sgd")
    spec["weighting"]["representation"] = ["trunk"]             # an earlier cut: rep's variables are shared
    with pytest.raises(ml.SpecError, match="lie after the representation"):
        ml.compile(model, spec, optimizer="sgd")


def test_custom_params_are_validated_like_built_ins():
    class WithParams(Params):
        gain: float = 1.0

    class Scaled(Strategy):
        name = "scaled_test"
        Params = WithParams

    ml.register_strategy(Scaled)
    try:
        with pytest.raises(ml.SpecError, match="strategy 'scaled_test' has no parameter 'gian'; valid: gain"):
            ml.load_spec(HEADS + "weighting: {strategy: scaled_test, params: {gian: 2}}\n")
    finally:
        STRATEGIES.unregister("scaled_test")
