"""Every strategy through plain `fit`: logged weights, exactness, partial labels, XLA, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml

STRATEGIES = ["uncertainty", "dwa", "rlw", "gradnorm", "pcgrad", "mgda", "cagrad"]
GRADIENT = ["gradnorm", "pcgrad", "mgda", "cagrad"]


def _model(seed=0, l2=0.0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5,), name="x")
    reg = keras.regularizers.L2(l2) if l2 else None
    h = keras.layers.Dense(6, activation="tanh", name="trunk", kernel_regularizer=reg)(x)
    return keras.Model(x, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                           "reg": keras.layers.Dense(2, name="reg")(h)})


def _data(n=32, seed=1):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 5)).astype("float32")
    return x, {"cls": np.eye(3, dtype="float32")[r.integers(0, 3, n)],
               "reg": (3 * r.normal(size=(n, 2))).astype("float32")}


def _spec(strategy, **params):
    return {"outputs": {"cls": {"loss": "categorical_crossentropy", "weight": 1.0},
                        "reg": {"loss": "mse", "weight": 0.5}},
            "weighting": {"strategy": strategy, "params": params}}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_and_the_logged_loss_is_the_weighted_sum(strategy):
    model = _model()
    ml.compile(model, _spec(strategy), optimizer=keras.optimizers.Adam(0.05))
    x, y = _data()
    hist = model.fit(x, y, batch_size=32, epochs=4, verbose=0).history    # one step an epoch
    w = np.stack([hist["cls_weight"], hist["reg_weight"]], 1)
    terms = np.stack([hist["cls_loss"], hist["reg_loss"]], 1)
    total = (w * terms).sum(1)
    if strategy == "uncertainty":
        # λ = c·exp(-s): c = 1 (cross-entropy → classification), ½ (mse → regression); objective adds Σ ½ s.
        s = -np.log(w / np.array([1.0 * 1.0, 0.5 * 0.5]))
        total = total + (np.array([1.0, 0.5]) * 0.5 * s).sum(1)
    np.testing.assert_allclose(hist["loss"], total, rtol=1e-5)
    strategy_w = w / np.array([1.0, 0.5])                       # divide out the static weights
    if strategy == "dwa":
        np.testing.assert_allclose(strategy_w[:2], 1.0)         # the first two epochs
        ratio = terms[1] / terms[0]                              # L(t-1)/L(t-2) for epoch 3
        want = 2 * np.exp(ratio / 2.0) / np.exp(ratio / 2.0).sum()
        np.testing.assert_allclose(strategy_w[2], want, rtol=1e-5)
    if strategy in ("rlw", "mgda"):
        np.testing.assert_allclose(strategy_w.sum(1), 1.0, rtol=1e-5)   # on the simplex
    if strategy == "gradnorm":
        np.testing.assert_allclose(strategy_w.sum(1), 2.0, rtol=1e-5)   # renormalised to T
        state = model.loss.weighting.strategy.get_state()
        assert sum(state["w"]) == pytest.approx(2.0, rel=1e-6)
    assert not np.allclose(strategy_w, strategy_w[0]) or strategy in ("pcgrad",)


@pytest.mark.slow
# cagrad: the step of pcgrad and mgda too; rlw's draws are checked under XLA in test_weighting_math.
@pytest.mark.parametrize("strategy", ["gradnorm", "cagrad"])
def test_jit_compile_gives_the_same_training(strategy):
    x, y = _data(48)
    runs = []
    for jit in (False, True):
        model = _model(seed=3)
        ml.compile(model, _spec(strategy), optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        runs.append(model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False).history)
    for key in runs[0]:
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-4, err_msg=key)


def _trunk_grad_of(model, x, y, head, l2=0.0):
    """∇ of one head's plain mean loss (plus the L2 penalty) w.r.t. the trunk, written independently."""
    trunk = model.get_layer("trunk")
    with tf.GradientTape() as tape:
        pred = model(x)[head]
        if head == "reg":
            loss = tf.reduce_mean(tf.square(y[head] - pred))
        else:
            loss = -tf.reduce_mean(tf.reduce_sum(y[head] * tf.math.log(pred), -1))
        loss += l2 * tf.reduce_sum(tf.square(trunk.kernel))
    return [g.numpy() for g in tape.gradient(loss, trunk.trainable_variables)]


_CAGRAD = (1 + 0.5) / (1 + 0.5 ** 2)   # K = 1: d = g(1 + c), rescaled by 1/(1 + c²)
_PARTIAL = [(s, f, m) for s, f in [("pcgrad", 1.0), ("mgda", 1.0), ("gradnorm", 1.0), ("cagrad", _CAGRAD)]
            for m in ("sample_weight", "mask_value")]
_PARTIAL += [("mgda+vectorize", 1.0, "sample_weight"), ("gradnorm+vectorize", 1.0, "sample_weight")]
# With one task present every new gradient strategy's update is that task's gradient (λ = 1), Nash-MTL's
# its unit gradient (the paper's α(Mα) = 1 for one task: α = 1/‖g‖; factor None).
_PARTIAL += [(s, 1.0, "sample_weight") for s in ("imtl_g", "gradvac", "aligned_mtl", "upgrad", "graddrop")]
_PARTIAL += [("nash_mtl", None, "sample_weight")]
# Issue 19's: λ = 1 for one task (IMTL's scales start at 0); ExcessMTL's α is 1/T during its warm-up step and
# MoCo's tracked gradient β₁·g = 0.5·g at step 1.  (MoDo and SDMGrad move along one third of the batch.)
_PARTIAL += [(s, 1.0, "sample_weight") for s in ("stch", "imtl_l", "imtl", "config", "dual_proj")]
_PARTIAL += [("excess_mtl", 0.5, "sample_weight"), ("moco", 0.5, "sample_weight")]


@pytest.mark.parametrize("strategy,factor,missing", _PARTIAL)
def test_a_head_without_labels_in_the_batch_is_left_out(strategy, factor, missing):
    """With no label for `cls`, the trunk moves along the `reg` gradient alone (LibMTL cannot do this)."""
    model = _model(seed=4, l2=0.01)
    name, _, vectorize = strategy.partition("+")
    spec = _spec(name)
    spec["weighting"]["vectorize"] = bool(vectorize)
    spec["outputs"]["reg"]["weight"] = 1.0
    if missing == "mask_value":
        spec["outputs"]["cls"]["mask_value"] = -1.0
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(1.0))
    x, y = _data(16)
    if missing == "mask_value":
        y["cls"] = np.full_like(y["cls"], -1.0)
        sw = None
    else:
        sw = {"cls": np.zeros(16, "float32"), "reg": np.ones(16, "float32")}
    g_reg = _trunk_grad_of(model, x, y, "reg")
    g_pen = _trunk_grad_of(model, x, y, "reg", l2=0.01)
    penalty = [b - a for a, b in zip(g_reg, g_pen)]
    before = [v.numpy() for v in model.get_layer("trunk").trainable_variables]
    cls_before = [v.numpy() for v in model.get_layer("cls").trainable_variables]
    data = tf.data.Dataset.from_tensors((x, y) if sw is None else (x, y, sw))
    hist = model.fit(data, epochs=1, verbose=0, shuffle=False).history
    after = [v.numpy() for v in model.get_layer("trunk").trainable_variables]
    if factor is None:
        factor = 1.0 / np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in g_reg))
    for b, a, g, p in zip(before, after, g_reg, penalty):
        np.testing.assert_allclose(b - a, factor * g + p, rtol=2e-4, atol=1e-7)
    for b, v in zip(cls_before, model.get_layer("cls").trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())          # no label, no update
    assert hist["cls_loss"][0] == 0.0


def test_uncertainty_keeps_the_log_variance_of_an_absent_head():
    model = _model(seed=5)
    ml.compile(model, _spec("uncertainty"), optimizer=keras.optimizers.Adam(0.1))
    x, y = _data(32)
    sw = {"cls": np.zeros(32, "float32"), "reg": np.ones(32, "float32")}
    model.fit(x, y, sample_weight=sw, batch_size=8, epochs=2, verbose=0)
    log_vars = model.loss.weighting.strategy.log_vars.numpy()
    assert log_vars[0] == 0.0 and abs(log_vars[1]) > 0.1


def test_uncertainty_log_variance_converges_to_log_l_or_log_2l_for_a_fixed_loss():
    # Two heads whose losses do not depend on anything trainable: L_reg and L_cls are fixed numbers.
    composite = ml.build_loss({"outputs": {"reg": {"loss": "mse"}, "cls": {"loss": "categorical_crossentropy"}},
                               "weighting": {"strategy": "uncertainty"}})
    y_true = {"reg": np.array([[0.0], [2.0]], "float32"), "cls": np.array([[1.0, 0.0], [0.0, 1.0]], "float32")}
    y_pred = {"reg": np.array([[1.5], [0.0]], "float32"), "cls": np.array([[0.3, 0.7], [0.6, 0.4]], "float32")}
    l_reg = np.mean([1.5 ** 2, 2.0 ** 2])
    l_cls = -np.mean([np.log(0.3), np.log(0.4)])
    log_vars = composite.weighting.strategy.log_vars
    opt = keras.optimizers.Adam(0.05)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total = composite.compute(y_true, y_pred).total
        opt.apply_gradients([(tape.gradient(total, log_vars), log_vars)])

    for _ in range(1500):
        step()
    np.testing.assert_allclose(log_vars.numpy(), [np.log(l_reg), np.log(2 * l_cls)], atol=1e-3)


@pytest.mark.slow
def test_uncertainty_recovers_the_noise_levels_of_two_regressions():
    """y₁ = 2x + 8 + 10ε, y₂ = 3x + 3 + ε: the learned σ approach [10, 1].

    Tolerance: 5 % of the residual standard deviations of the least-squares
    fits (the best σ a model can reach on this sample), and 10 % of [10, 1].
    """
    r = np.random.default_rng(0)
    n = 4000
    x = r.normal(size=(n, 1)).astype("float32")
    y = {"y1": (2 * x + 8 + 10 * r.normal(size=(n, 1))).astype("float32"),
         "y2": (3 * x + 3 + r.normal(size=(n, 1))).astype("float32")}
    keras.utils.set_random_seed(0)
    inp = keras.Input((1,))
    h = keras.layers.Dense(8, activation="relu", name="trunk")(inp)
    model = keras.Model(inp, {"y1": keras.layers.Dense(1, name="y1")(h), "y2": keras.layers.Dense(1, name="y2")(h)})
    ml.compile(model, {"outputs": {"y1": {"loss": "mse"}, "y2": {"loss": "mse"}},
                       "weighting": {"strategy": "uncertainty"}}, optimizer=keras.optimizers.Adam(0.05),
               steps_per_execution=20)
    model.fit(x, y, batch_size=100, epochs=40, verbose=0)
    sigma = model.loss.weighting.strategy.sigmas()
    design = np.c_[x, np.ones(n)]
    residual_std = [np.sqrt(np.mean((y[k] - design @ np.linalg.lstsq(design, y[k], rcond=None)[0]) ** 2))
                    for k in ("y1", "y2")]
    np.testing.assert_allclose(sigma, residual_std, rtol=0.05)
    np.testing.assert_allclose(sigma, [10.0, 1.0], rtol=0.10)


@pytest.mark.slow
def test_gradnorm_toy_of_the_paper_balances_the_training_rates():
    """f_i = σ_i·tanh((B + ε_i)x), T = 2, σ = (1, 100), α = 0.12 (Chen et al. 2018, Section 4)."""
    r = np.random.default_rng(0)
    d_in, d_out, n = 25, 10, 2000
    b = r.normal(0, np.sqrt(10), (d_in, d_out))
    eps = [r.normal(0, np.sqrt(3.5), (d_in, d_out)) for _ in range(2)]
    x = (r.normal(size=(n, d_in)) / np.sqrt(d_in * 13.5)).astype("float32")
    y = {f"t{i}": (s * np.tanh(x @ (b + e))).astype("float32") for i, (s, e) in enumerate(zip((1.0, 100.0), eps))}
    rates = {}
    for strategy in ("static", "gradnorm"):
        keras.utils.set_random_seed(1)
        inp = keras.Input((d_in,))
        h = inp
        for k in range(3):
            h = keras.layers.Dense(64, activation="relu", name=f"trunk_{k}")(h)
        model = keras.Model(inp, {f"t{i}": keras.layers.Dense(d_out, name=f"t{i}")(h) for i in range(2)})
        spec = {"outputs": {"t0": {"loss": "mse"}, "t1": {"loss": "mse"}}}
        if strategy == "gradnorm":
            spec["weighting"] = {"strategy": "gradnorm", "params": {"alpha": 0.12, "lr": 0.025}}
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.05, global_clipnorm=1.0), steps_per_execution=20)
        initial = model.evaluate(x, y, verbose=0, return_dict=True)
        hist = model.fit(x, y, batch_size=100, epochs=40, verbose=0).history
        rates[strategy] = [hist[f"t{i}_loss"][-1] / initial[f"t{i}_loss"] for i in range(2)]
        if strategy == "gradnorm":
            w0, w1 = np.array(hist["t0_weight"]), np.array(hist["t1_weight"])
            np.testing.assert_allclose(w0 + w1, 2.0, rtol=1e-5)
            assert (w1 < w0).all() and w1.mean() < 0.5          # the large-σ task is down-weighted
    gap = {k: abs(np.log(v[0] / v[1])) for k, v in rates.items()}
    assert gap["gradnorm"] < 0.25 < gap["static"], rates         # the training rates converge


def test_saving_keeps_the_strategy_state_and_its_optimizer_slots(tmp_path):
    x, y = _data(32)
    for strategy in ("uncertainty", "dwa"):
        model = _model(seed=6)
        ml.compile(model, _spec(strategy), optimizer=keras.optimizers.Adam(0.05))
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        state = model.loss.weighting.strategy.get_state()
        expected = model.evaluate(x, y, verbose=0, return_dict=True)
        model.save(tmp_path / f"{strategy}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{strategy}.keras")
        assert loaded.loss.weighting.strategy.get_state() == state
        got = loaded.evaluate(x, y, verbose=0, return_dict=True)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6), key
        assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
        for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)   # training resumes


def test_weights_go_to_tensorboard_every_step(tmp_path):
    model = _model(seed=7)
    ml.compile(model, _spec("rlw"), optimizer="sgd")
    x, y = _data(32)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    seen = {}
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("multiloss/"):
                    seen.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    assert set(seen) == {"multiloss/cls_weight", "multiloss/reg_weight"}
    assert sorted(seen["multiloss/cls_weight"]) == list(range(1, 9))     # 8 steps
    # Each step's weights are RLW's draw for that step: they sum to 1 (×0.5 for reg's static weight).
    for step in range(1, 9):
        assert seen["multiloss/cls_weight"][step] + 2 * seen["multiloss/reg_weight"][step] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_the_multi_fashion_comparison_script_runs_on_a_small_subset(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "weighting_real.py"
    spec = importlib.util.spec_from_file_location("weighting_real", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--strategies", "mgda", "mgda+rep", "--seeds", "2", "--epochs", "1", "--train-size", "300",
                 "--test-size", "200", "--markdown", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")])
    table = (tmp_path / "r.md").read_text()
    assert "| `mgda` | parameters |" in table and "| `mgda` | representation |" in table
    assert "| single-task | — |" in table and " ± " in table
    out = json.loads((tmp_path / "r.json").read_text())
    assert [(r["strategy"], r["seed"]) for r in out["runs"]] == [("mgda", 0), ("mgda+rep", 0), ("mgda", 1),
                                                                  ("mgda+rep", 1)]
    run, stl = out["runs"][0], out["single_task"]["0"]
    want = 50 * sum((run["accuracy"][t] - stl[t]) / stl[t] for t in ("left", "right"))   # Δm%, by hand
    assert script.delta_m(run["accuracy"], stl) == pytest.approx(want, rel=1e-9)
    other = out["runs"][2]
    dm = [want, 50 * sum((other["accuracy"][t] - out["single_task"]["1"][t]) / out["single_task"]["1"][t]
                         for t in ("left", "right"))]
    assert f"{np.mean(dm):+.2f} ± {np.std(dm, ddof=1):.2f}" in table
    assert sum(run["weights"].values()) == pytest.approx(1.0, rel=1e-4)   # MGDA: on the simplex
