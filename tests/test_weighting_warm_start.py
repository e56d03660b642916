"""The warm-started exact solvers (``min_norm_warm``, ``cagrad_warm``) against full enumeration.

A warm start solves only the KKT system on the previous step's support and
runs the enumeration when that point fails the optimality test, so its answer
must be the enumeration's whatever the hint (where duplicated gradient rows tie,
their combined gradient must be): the references are
``min_norm_exact`` and ``cagrad_exact`` (themselves tested against exact
certificates in test_weighting_solvers.py).  The tests also check that the
fallback is taken exactly when the hint is not the optimal support — a
check that accepted a wrong hint, or never accepted one, fails them.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.weighting import solvers


def _unit_rows(r, t, lo, hi, p=12):
    g = r.normal(size=(t, p))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g * 10.0 ** r.uniform(lo, hi, (t, 1))


def _cagrad_args(m, present, c=0.5):
    b = present / present.sum()
    return b, c * np.sqrt(max(b @ m @ b, 0.0))


def _warm(kind, m, present, hint):
    if kind == "mgda":
        return solvers.min_norm_warm(m, present, hint)
    b, rho = _cagrad_args(m, present)
    w, u, support, verified = solvers.cagrad_warm(m, b, rho, present, hint)
    # u = (ρ/‖g_w‖)·w, the update's coefficients beyond g_0 (from d∘v on the warm path)
    want = rho / np.sqrt(max(w.numpy() @ m @ w.numpy(), 0.0)) * w.numpy() if rho > 0 else 0 * w.numpy()
    np.testing.assert_allclose(u.numpy(), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    return w, support, verified


def _enumerated(kind, m, present):
    if kind == "mgda":
        return solvers.min_norm_exact(m, present).numpy()
    b, rho = _cagrad_args(m, present)
    return solvers.cagrad_exact(m, b, rho, present).numpy()


@pytest.mark.parametrize("kind", ["mgda", "cagrad"])
def test_a_sequence_of_steps_gives_the_enumerations_answers_and_falls_back_exactly_on_a_support_change(kind):
    r = np.random.default_rng(11)
    taken = {True: 0, False: 0}
    for seq in range(12):
        t = int(r.integers(2, 9))
        lo, hi = [(0, 0), (-3, 3), (-6, 6)][seq % 3]            # norms up to 10¹² apart
        base = _unit_rows(r, t, 0, 0)
        scale = 10.0 ** r.uniform(lo, hi, (t, 1))
        hint = np.ones(t, "float32")
        for k in range(8):
            # small drifts (the support usually stays) and, every fourth step, a jump (it usually changes)
            g = (base + r.normal(size=base.shape) * (1.5 if k % 4 == 3 else 0.05)) * scale
            present = np.ones(t)
            if k % 3 == 2:
                present[r.integers(t)] = 0.0                      # a task absent from the batch
            m = g @ g.T
            want = _enumerated(kind, m, present)
            got, support, verified = _warm(kind, m, present, hint)
            got, support, verified = got.numpy(), support.numpy(), bool(verified)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(support, (want > 0).astype("float32"))
            # the fast path is taken iff the hint was the optimal support
            assert verified == bool(np.array_equal(hint, support)), (seq, k, hint, support)
            taken[verified] += 1
            hint = support
    assert taken[True] >= 20 and taken[False] >= 20, taken        # both branches exercised


def _nondegenerate(kind, t, size):
    """Gradients whose optimum has ``size`` tasks in its support, each with a clear weight."""
    r = np.random.default_rng(5)
    while True:
        g = _unit_rows(r, t, -2, 2)
        m = g @ g.T
        w = _enumerated(kind, m, np.ones(t))
        inside = w[w > 0]
        if len(inside) == size and inside.min() > 1e-3:
            return m, w


@pytest.mark.parametrize("kind,size", [("mgda", 2), ("mgda", 4), ("cagrad", 2), ("cagrad", 3)])
def test_every_hint_gives_the_enumerations_answer_and_only_the_optimal_support_is_accepted(kind, size):
    t = 5
    m, want = _nondegenerate(kind, t, size)
    best = (want > 0).astype("float32")
    for hint in itertools.product([0.0, 1.0], repeat=t):          # every support, the empty one too
        hint = np.array(hint, "float32")
        got, support, verified = _warm(kind, m, np.ones(t), hint)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(support.numpy(), best)
        assert bool(verified) == bool(np.array_equal(hint, best)), hint


@pytest.mark.parametrize("delta", [1e-6, -1e-6])
def test_a_task_just_inside_or_outside_the_cagrad_support_is_decided_like_the_enumeration(delta):
    # Four tasks and their optimum (support S); a fifth task with ⟨g_5, d⟩ = F(w)(1 − δ): for δ > 0 it
    # enters the support with a weight ~δ (the hint S must then be refused), for δ < 0 it stays out.
    # The objective gains O(δ²) by it, so δ must stay well above √(round-off): at δ = 1e-10 the gain
    # is under float64's resolution and which support the enumeration keeps depends on the BLAS.
    r = np.random.default_rng(3)
    b4 = np.ones(4) / 4
    while True:
        base = r.normal(size=(4, 6))
        m = base @ base.T
        rho = 0.5 * np.sqrt(b4 @ m @ b4)
        w = solvers.cagrad_exact(m, b4, rho, np.ones(4)).numpy()
        if ((w > 1e-3) | (w == 0)).all() and (w > 0).sum() >= 2:
            break
    gw, g0 = w @ base, b4 @ base
    d = g0 + rho * gw / np.linalg.norm(gw)
    level = gw @ g0 + rho * np.linalg.norm(gw)
    u = r.normal(size=6)
    u -= (u @ d) / (d @ d) * d
    g = np.vstack([base, level * (1 - delta) / (d @ d) * d + u])
    b = np.append(b4, 0.0)                          # the same g_0: task 5 only takes part in the dual
    rho = 0.5 * np.sqrt(b @ g @ g.T @ b)
    want = solvers.cagrad_exact(g @ g.T, b, rho, np.ones(5)).numpy()
    assert (want[4] > 1e-11) == (delta > 0)
    got, _, _, verified = solvers.cagrad_warm(g @ g.T, b, rho, np.ones(5), np.append(w > 0, 0).astype("float32"))
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-13)
    assert bool(verified) == (delta < 0)


def test_identical_parallel_and_zero_gradients_keep_the_enumerations_choice():
    ones = np.ones(3)
    # Identical gradients: every point of the simplex has the same norm without the 1e-14 ridge, which
    # favours the full support; a tolerance in the dual test above round-off would accept a vertex hint.
    g = np.array([[1.0, 2.0, 0.0]] * 3)
    want = solvers.min_norm_exact(g @ g.T, ones).numpy()
    assert (want > 0.3).all()                     # every task in the support (up to the solve's round-off)
    for hint in ([1, 0, 0], [1, 1, 0], [1, 1, 1]):
        got, _, verified = solvers.min_norm_warm(g @ g.T, ones, np.array(hint, "float32"))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
        assert bool(verified) == (hint == [1, 1, 1])
    g = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [3.0, 6.0, 0.0]])     # identical and parallel
    want = solvers.min_norm_exact(g @ g.T, ones).numpy()
    for hint in itertools.product([0.0, 1.0], repeat=3):
        got, _, _ = solvers.min_norm_warm(g @ g.T, ones, np.array(hint, "float32"))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    g = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [2.0, 4.0, 1.0]])     # a zero gradient: its vertex
    for hint in ([1, 1, 1], [0, 1, 0], [1, 0, 1]):
        got, support, _ = solvers.min_norm_warm(g @ g.T, ones, np.array(hint, "float32"))
        np.testing.assert_array_equal(got.numpy(), [0, 1, 0])
        np.testing.assert_array_equal(support.numpy(), [0, 1, 0])
    b, rho = _cagrad_args(g @ g.T, ones)
    for hint in ([1, 1, 1], [0, 1, 0], [1, 0, 1]):
        got = solvers.cagrad_warm(g @ g.T, b, rho, ones, np.array(hint, "float32"))[0]
        np.testing.assert_allclose(got.numpy(), solvers.cagrad_exact(g @ g.T, b, rho, ones).numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["mgda", "cagrad"])
def test_duplicated_tasks_give_the_enumerations_update_whatever_the_hint(kind):
    # Two identical gradient rows tie: how the weight splits between them is decided by round-off (in
    # the enumeration as in the warm start), so the weights may differ there; Σ w_i g_i and the
    # objective may not.
    r = np.random.default_rng(8)
    for _ in range(20):
        t = int(r.integers(3, 7))
        g = _unit_rows(r, t, -1, 1)
        g[int(r.integers(1, t))] = g[0]
        m, ones = g @ g.T, np.ones(t)
        want = _enumerated(kind, m, ones)
        for hint in (np.ones(t, "float32"), (want > 0).astype("float32"), (r.uniform(size=t) > 0.5).astype("float32")):
            got = _warm(kind, m, ones, hint)[0].numpy()
            np.testing.assert_allclose(got @ g, want @ g, rtol=1e-9, atol=1e-12 * np.abs(g).max())
    g = np.array([[1.0, 2.0, 0.0]] * 3)                    # all identical: the same update
    b, rho = _cagrad_args(g @ g.T, np.ones(3))
    want = solvers.cagrad_exact(g @ g.T, b, rho, np.ones(3)).numpy()
    for hint in itertools.product([0.0, 1.0], repeat=3):
        got = solvers.cagrad_warm(g @ g.T, b, rho, np.ones(3), np.array(hint, "float32"))[0].numpy()
        np.testing.assert_allclose(got @ g, want @ g, rtol=1e-12)


@pytest.mark.parametrize("kind", ["mgda", "cagrad"])
def test_a_non_finite_gram_leaves_a_hint_that_the_next_step_recovers_from(kind):
    r = np.random.default_rng(2)
    g = _unit_rows(r, 4, -1, 1)
    bad = np.full((4, 4), np.nan)
    _, hint, verified = _warm(kind, bad, np.ones(4), np.ones(4, "float32"))
    assert not bool(verified) and np.isin(hint.numpy(), [0.0, 1.0]).all()
    got, _, verified = _warm(kind, g @ g.T, np.ones(4), hint.numpy())
    np.testing.assert_allclose(got.numpy(), _enumerated(kind, g @ g.T, np.ones(4)), rtol=0, atol=1e-12)


def test_warm_solvers_under_xla_take_either_branch():
    r = np.random.default_rng(4)
    t = 5
    for kind, size in (("mgda", 2), ("cagrad", 3)):
        m, want = _nondegenerate(kind, t, size)
        b, rho = _cagrad_args(m, np.ones(t))
        if kind == "mgda":
            fn = tf.function(lambda m, h: solvers.min_norm_warm(m, tf.ones(t, tf.float64), h), jit_compile=True)
        else:
            def warm(m, h, b=b, rho=rho):
                w, _, support, verified = solvers.cagrad_warm(m, b, rho, tf.ones(t, tf.float64), h)
                return w, support, verified

            fn = tf.function(warm, jit_compile=True)
        for hint in ((want > 0).astype("float32"), np.ones(t, "float32"), (r.uniform(size=t) > 0.5).astype("float32")):
            got, support, verified = fn(tf.constant(m), tf.constant(hint))
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
            assert bool(verified) == bool(np.array_equal(hint, support.numpy()))


# --- through fit ----------------------------------------------------------------------------------


def _model(seed=0, heads=4):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6,), name="x")
    z = keras.layers.Dense(8, activation="tanh", name="rep")(keras.layers.Dense(8, activation="tanh", name="trunk")(x))
    return keras.Model(x, {f"t{i}": keras.layers.Dense(2, name=f"t{i}")(z) for i in range(heads)})


def _spec(strategy, heads=4, **weighting):
    return {"outputs": {f"t{i}": {"loss": "mse", "weight": 1.0 + 0.5 * i} for i in range(heads)},
            "weighting": {"strategy": strategy, "gradients": "representation", **weighting}}


def _data(n=32, heads=4, seed=1):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 6)).astype("float32")
    # conflicting targets, so that the optimal supports are proper subsets now and then
    return x, {f"t{i}": ((-1) ** i * x[:, :2] + r.normal(size=(n, 2))).astype("float32") for i in range(heads)}


def _cagrad_enumerated(m, b, rho, present):
    """``(w, u)`` by enumeration, u = (ρ/‖g_w‖)·w written out here."""
    w = solvers.cagrad_exact(m, b, rho, present)
    m64 = tf.cast(m, tf.float64)
    return w, tf.math.divide_no_nan(tf.cast(rho, tf.float64), tf.sqrt(tf.reduce_sum(w * tf.linalg.matvec(m64, w)))) * w


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mgda", "cagrad"])
def test_fit_with_the_warm_start_equals_fit_with_enumeration_under_jit_and_not(strategy, monkeypatch):
    x, y = _data()
    runs = {}
    for label, jit, warm in (("warm", False, True), ("warm+xla", True, True), ("enumeration", False, False)):
        if not warm:   # the strategies without their hint: every step enumerates
            monkeypatch.setattr(solvers, "min_norm_warm", lambda m, p, s: (solvers.min_norm_exact(m, p), s, False))
            monkeypatch.setattr(solvers, "cagrad_warm", lambda m, b, rho, p, s: _cagrad_enumerated(m, b, rho, p) + (s, False))
        model = _model(seed=3)
        ml.compile(model, _spec(strategy), optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        runs[label] = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False).history
        support = model.loss.weighting.strategy.support.numpy()
        assert np.isin(support, [0.0, 1.0]).all()
        if strategy == "mgda" and warm:               # the hint is the support of the last α (= λ)
            current = model.loss.weighting.strategy.current.numpy()
            np.testing.assert_array_equal(support, (current > 0).astype("float32"))
        monkeypatch.undo()
    for key in runs["enumeration"]:
        np.testing.assert_allclose(runs["warm"][key], runs["enumeration"][key], rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(runs["warm+xla"][key], runs["enumeration"][key], rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_cagrad_with_its_hint_on_two_replicas_equals_one_device_and_saves(tmp_path):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    x, y = _data(8)
    out = []
    for dist in (tf.distribute.OneDeviceStrategy(devices[0]),
                 ml.mirrored_strategy(devices[:2])):
        with dist.scope():
            model = _model(seed=8)
            ml.compile(model, _spec("cagrad"), optimizer=keras.optimizers.SGD(0.3))
        data = tf.data.Dataset.from_tensors((x, y)).repeat(4)
        hist = model.fit(data, epochs=2, verbose=0, shuffle=False).history
        out.append((hist, np.concatenate([v.numpy().ravel() for v in model.trainable_variables]),
                    np.asarray(model.loss.weighting.strategy.support.numpy())))
    for key in out[0][0]:
        np.testing.assert_allclose(out[1][0][key], out[0][0][key], rtol=1e-5, err_msg=key)
    # (the enumeration alone differs by as much here: CAGrad's weights amplify the Gram's round-off)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out[1][2], out[0][2])
    # The hint is saved with the state, so a reloaded model takes the same solver path.
    model = _model(seed=8)
    ml.compile(model, _spec("cagrad"), optimizer=keras.optimizers.SGD(0.3))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    state = model.loss.weighting.strategy.get_state()
    assert set(state) == {"current", "support"}
    np.testing.assert_array_equal(state["support"], model.loss.weighting.strategy.support.numpy())
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.weighting.strategy.get_state() == state
    np.testing.assert_array_equal(loaded.loss.weighting.strategy.support.numpy(), state["support"])
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_representation_heads_get_their_scaled_gradients_from_the_short_passes():
    # db_mtl (β = 0): head i gets s_i·∇L_i/L_i; static weights 1, 1.5, 2, 2.5 (reference: a plain tape).
    x, y = _data(16)
    model = _model(seed=5)
    ml.compile(model, _spec("db_mtl", params={"beta": 0.0}), optimizer=keras.optimizers.SGD(1.0))
    heads = [model.get_layer(f"t{i}") for i in range(4)]
    with tf.GradientTape(persistent=True) as tape:
        out = model(x)
        losses = [tf.reduce_mean(tf.square(y[f"t{i}"] - out[f"t{i}"])) for i in range(4)]
    want = [[(1.0 + 0.5 * i) / (float(losses[i]) + 1e-8) * g.numpy()
             for g in tape.gradient(losses[i], heads[i].trainable_variables)] for i in range(4)]
    before = [[v.numpy() for v in h.trainable_variables] for h in heads]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for i, h in enumerate(heads):
        for b, v, g in zip(before[i], h.trainable_variables, want[i]):
            np.testing.assert_allclose(b - v.numpy(), g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["mgda", "cagrad"])
def test_a_nan_input_row_is_skipped_not_an_error_from_the_solver(strategy):
    # All gradients NaN: the Gram matrix is all NaN; a solve on it used to raise "not invertible".
    x, y = _data(16)
    x[5] = np.nan
    model = _model(seed=2)
    ml.compile(model, _spec(strategy), optimizer=keras.optimizers.SGD(0.1), nonfinite="skip")
    hist = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history
    assert hist["nonfinite_skipped"] == [1.0, 1.0] and int(model.optimizer.iterations) == 6
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isin(model.loss.weighting.strategy.support.numpy(), [0.0, 1.0]).all()
