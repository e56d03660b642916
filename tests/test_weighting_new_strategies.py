"""STCH, IMTL-L and IMTL, ConFIG, DualProj and ExcessMTL (issue 19), and ``weighting.preference``.

Each is checked against numpy written from its paper's equations (or TorchJD's definition, for DualProj),
never the code's own output: STCH against the gradient of μ·logsumexp(λ(L − z*)/μ), IMTL against IMTL-G's
closed form on the scaled gradients and the gradient of e^s·L − s, ConFIG against the pseudo-inverse of the
unit gradient rows, DualProj against the primal projection solved by active-set enumeration, ExcessMTL
against its recursion on the gradient rows.  Each in ``fit`` with the guard, saving, XLA and two replicas:
test_weighting_reference.py's ``_NEW``.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_weighting_strategies import _imtl_reference  # IMTL-G's closed form (the paper's §3.1)

import multiloss as ml
from multiloss.weighting.config import config_coefficients
from multiloss.weighting.dualproj import dualproj_coefficients
from multiloss.weighting.excess_mtl import excess_mtl_update
from multiloss.weighting.imtl import imtl_g_coefficients
from multiloss.weighting.moco import MoCoParams, moco_update
from multiloss.weighting.modo import modo_update
from multiloss.weighting.sdmgrad import sdmgrad_update
from multiloss.weighting.solvers import simplex_projection
from multiloss.weighting.stch import stch_value, stch_weights


def _grads(r, t, p=30):
    return r.normal(size=(t, p)) + r.normal(size=(1, p))        # correlated, some pairs in conflict


def _spec_error(tail):
    heads = "outputs:\n  a: {loss: mse}\n  b: {loss: mse}\n"
    with pytest.raises(ml.SpecError) as info:
        ml.load_spec(heads + tail + "\n")
    return str(info.value)


def _two_heads(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,))
    z = keras.layers.Dense(4, activation="tanh", name="trunk")(inp)
    return keras.Model(inp, {"a": keras.layers.Dense(2, name="a")(z), "b": keras.layers.Dense(1, name="b")(z)})


def _xy(n=8, seed=2):
    r = np.random.default_rng(seed)
    return (r.normal(size=(n, 3)).astype("float32"),
            {"a": r.normal(size=(n, 2)).astype("float32"), "b": (3 * r.normal(size=(n, 1))).astype("float32")})


# --- STCH (Lin et al. ICML 2024) -----------------------------------------------------------------------


def _stch(losses, pref, ideal, mu):
    lam = pref / pref.sum()
    a = lam * (losses - ideal) / mu
    return mu * (a.max() + np.log(np.exp(a - a.max()).sum()))


def test_stch_weights_are_the_gradient_of_the_smooth_tchebycheff_value():
    r = np.random.default_rng(0)
    for t in (2, 3, 5):
        for mu in (0.05, 1.0, 20.0):
            losses = r.uniform(0.1, 5.0, size=t)
            pref = r.uniform(0.5, 3.0, size=t)
            ideal = r.uniform(0.0, 0.1, size=t)
            w = stch_weights(losses, np.ones(t), pref, ideal, mu).numpy()
            for i in range(t):                                           # central differences of g_μ
                h = 1e-6 * losses[i]
                up, down = losses.copy(), losses.copy()
                up[i] += h
                down[i] -= h
                fd = (_stch(up, pref, ideal, mu) - _stch(down, pref, ideal, mu)) / (2 * h)
                np.testing.assert_allclose(w[i], fd, rtol=1e-6, atol=1e-9)   # round-off of the difference
            np.testing.assert_allclose(stch_value(losses, np.ones(t), pref, ideal, mu).numpy(),
                                       _stch(losses, pref, ideal, mu), rtol=1e-12)
            # μ·log T from the Tchebycheff max, from above
            lam = pref / pref.sum()
            cheb = np.max(lam * (losses - ideal))
            assert cheb <= _stch(losses, pref, ideal, mu) <= cheb + mu * np.log(t) + 1e-12
    # absent terms are left out of the sum and of the normalisation of λ
    losses, pref = np.array([1.0, 9.0, 2.0]), np.array([1.0, 5.0, 3.0])
    w = stch_weights(losses, np.array([1.0, 0.0, 1.0]), pref, np.zeros(3), 1.0).numpy()
    assert w[1] == 0
    np.testing.assert_allclose(w[[0, 2]], stch_weights(losses[[0, 2]], np.ones(2), pref[[0, 2]], np.zeros(2),
                                                       1.0).numpy(), rtol=1e-12)


def test_stch_at_small_mu_weights_the_tchebycheff_argmax():
    w = stch_weights(np.array([1.0, 3.0]), np.ones(2), np.array([2.0, 1.0]), np.zeros(2), 1e-3).numpy()
    # λ = (2/3, 1/3): λ·L = (0.667, 1.0), so the second term is the max and gets all of its λ
    np.testing.assert_allclose(w, [0.0, 1 / 3], atol=1e-12)


def test_stch_fit_takes_the_gradient_of_the_smooth_tchebycheff_scalarization_with_a_preference():
    spec = {"outputs": {k: {"loss": "mse"} for k in "ab"},
            "weighting": {"strategy": "stch", "params": {"mu": 0.5, "ideal": {"b": 0.2}},
                          "preference": {"a": 3.0, "b": 1.0}}}
    x, y = _xy()
    model = _two_heads()
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.1))
    with tf.GradientTape() as tape:
        out = model(x)
        la, lb = (tf.reduce_mean(tf.square(y[k] - out[k])) for k in "ab")
        value = 0.5 * tf.reduce_logsumexp(tf.stack([0.75 * la / 0.5, 0.25 * (lb - 0.2) / 0.5]))
    want = [w.numpy() - 0.1 * g.numpy() for w, g in zip(model.trainable_variables,
                                                          tape.gradient(value, model.trainable_variables))]
    hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    for got, w in zip(model.trainable_variables, want):
        np.testing.assert_allclose(got.numpy(), w, rtol=1e-4, atol=1e-6)
    la, lb = float(la), float(lb)
    soft = np.exp([0.75 * la / 0.5, 0.25 * (lb - 0.2) / 0.5])
    soft /= soft.sum()
    np.testing.assert_allclose([hist["a_weight"][0], hist["b_weight"][0]], [0.75 * soft[0], 0.25 * soft[1]],
                               rtol=1e-5)


def test_the_preference_is_checked_at_the_spec_boundary():
    msg = _spec_error("weighting: {strategy: stch, preference: {a: 2, c: 1}}")
    assert "weighting.preference.c" in msg and "no term named 'c'" in msg and "['a', 'b']" in msg
    msg = _spec_error("weighting: {strategy: stch, preference: {a: 0, b: 1}}")
    assert "weighting.preference.a" in msg and "> 0" in msg
    assert "weighting.preference.b" in _spec_error("weighting: {strategy: config, preference: {b: -1}}")
    assert "weighting.preference.b" in _spec_error("weighting: {strategy: stch, preference: {b: .inf}}")
    msg = _spec_error("weighting: {strategy: mgda, preference: {a: 2}}")
    assert "weighting.preference" in msg and "'mgda' takes no preference" in msg
    assert "stch, config, dual_proj" in msg
    assert "weighting.params.ideal.c" in _spec_error("weighting: {strategy: stch, params: {ideal: {c: 1}}}")
    spec = ml.load_spec("outputs:\n  a: {loss: mse}\n  b: {loss: mse}\n"
                        "weighting: {strategy: dual_proj, preference: {a: 2}}\n")
    assert spec.to_dict()["weighting"]["preference"] == {"a": 2.0}
    assert ml.build_loss(spec).weighting.strategy.preference_vector().tolist() == [2.0, 1.0]


# --- IMTL (Liu et al. ICLR 2021): IMTL-L and IMTL-L + IMTL-G ------------------------------------------------


def test_imtl_weights_are_imtl_g_on_the_scaled_gradients():
    r = np.random.default_rng(1)
    for t in (2, 3, 4):
        g = _grads(r, t)
        e = np.exp(r.normal(size=t))
        scaled = g * e[:, None]
        alpha = imtl_g_coefficients(scaled @ scaled.T, np.ones(t)).numpy()
        np.testing.assert_allclose(alpha, _imtl_reference(scaled), rtol=1e-8)
        d = alpha @ scaled
        proj = scaled @ d / np.linalg.norm(scaled, axis=1)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-8)              # equal projections on every u_t


@pytest.mark.parametrize("strategy,mode", [("imtl_l", "parameters"), ("imtl", "parameters"),
                                           ("imtl", "representation")])
def test_imtl_fit_steps_match_the_paper_by_hand(strategy, mode):
    """Two SGD steps from s = (0.3, −0.2): θ along IMTL-G of the scaled gradients (imtl) or the gradient of
    Σ w_t(e^{s_t}L_t − s_t) (imtl_l); heads along e^{s_t}∇L_t; s_t along w_t(e^{s_t}L_t − 1)."""
    x, y = _xy()
    lr, w = 0.1, np.array([1.0, 0.5])
    weighting = {"strategy": strategy, "params": {"init": 0.0}}
    if mode != "parameters":
        weighting["gradients"] = mode
    spec = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}}, "weighting": weighting}
    model = _two_heads()
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(lr))
    strat = model.loss.weighting.strategy
    strat.scales.assign([0.3, -0.2])
    ref = _two_heads()
    s = np.array([0.3, -0.2])
    trunk = ref.get_layer("trunk").trainable_variables
    heads = {k: ref.get_layer(k).trainable_variables for k in "ab"}
    for _ in range(2):
        with tf.GradientTape(persistent=True) as tape:
            out = ref(x)
            losses = [tf.reduce_mean(tf.square(y[k] - out[k])) for k in "ab"]
        vals = np.array([float(v) for v in losses])
        per = [tape.gradient(losses[i], trunk) for i in range(2)]
        if strategy == "imtl":
            g = np.stack([w[i] * np.exp(s[i]) * np.concatenate([v.numpy().ravel() for v in per[i]])
                          for i in range(2)])
            if mode == "representation":                                 # IMTL-G on ∇_Z instead
                with tf.GradientTape(persistent=True) as zt:
                    z = ref.get_layer("trunk")(x)
                    zt.watch(z)
                    zl = [tf.reduce_mean(tf.square(y[k] - ref.get_layer(k)(z))) for k in "ab"]
                gz = np.stack([w[i] * np.exp(s[i]) * zt.gradient(zl[i], z).numpy().ravel() for i in range(2)])
                alpha = _imtl_reference(gz)
            else:
                alpha = _imtl_reference(g)
            shared = [sum(alpha[i] * w[i] * np.exp(s[i]) * per[i][k].numpy() for i in range(2))
                      for k in range(len(trunk))]
        else:
            shared = [sum(w[i] * np.exp(s[i]) * per[i][k].numpy() for i in range(2)) for k in range(len(trunk))]
        for v, gv in zip(trunk, shared):
            v.assign(v.numpy() - lr * gv)
        for i, k in enumerate("ab"):
            for v, gv in zip(heads[k], tape.gradient(losses[i], heads[k])):
                v.assign(v.numpy() - lr * w[i] * np.exp(s[i]) * gv.numpy())
        s = s - lr * w * (np.exp(s) * vals - 1.0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for got, want in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(strat.scales.numpy(), s, rtol=1e-5)


# --- ConFIG (Liu, Chu & Thuerey ICLR 2025) ------------------------------------------------------------------


def _config(g, w):
    """The paper's Eq. 2 on the rows: g_c = pinv(U)·w, U the unit rows, then (Σ g_iᵀĝ_c)·ĝ_c."""
    units = g / np.linalg.norm(g, axis=1, keepdims=True)
    gc = np.linalg.pinv(units) @ w
    unit = gc / np.linalg.norm(gc)
    return np.sum(g @ unit) * unit


def test_config_is_the_paper_update_and_has_equal_projections():
    r = np.random.default_rng(3)
    for t in (2, 3, 5):
        for scale in (1e-3, 1.0, 1e3):
            g = _grads(r, t) * r.uniform(0.2, 3.0, size=(t, 1)) * scale
            for w in (np.ones(t), r.uniform(0.5, 2.0, size=t)):
                lam = config_coefficients(g @ g.T, np.ones(t), w).numpy()
                want = _config(g, w)
                np.testing.assert_allclose(lam @ g, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
                cos = (g @ want) / np.linalg.norm(g, axis=1)              # u_iᵀ g_ConFIG ∝ w_i
                np.testing.assert_allclose(cos / w, (cos / w)[0], rtol=1e-8)
                assert np.all(cos > 0)
    g = _grads(r, 4)
    lam = config_coefficients(g @ g.T, np.array([1.0, 0.0, 1.0, 1.0]), np.ones(4)).numpy()
    assert lam[1] == 0
    np.testing.assert_allclose(lam[[0, 2, 3]] @ g[[0, 2, 3]], _config(g[[0, 2, 3]], np.ones(3)), rtol=1e-9)
    # collinear rows (rank 1): the pseudo-inverse answer, the common direction
    g = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]])
    np.testing.assert_allclose(config_coefficients(g @ g.T, np.ones(2), np.ones(2)).numpy() @ g, _config(g, np.ones(2)),
                               rtol=1e-8)


# --- DualProj (TorchJD; GEM's Eq. 11) ---------------------------------------------------------------------


def _dual_proj(g, u):
    """argmin ‖v − ḡ‖² s.t. Gv ≥ 0, ḡ = uᵀG: the primal KKT point of every active set A (v = ḡ + G_Aᵀν with
    G_A v = 0 and multipliers ν ≥ 0), the feasible best."""
    gbar = u @ g
    best, value = None, np.inf
    t = g.shape[0]
    for k in range(t + 1):
        for act in itertools.combinations(range(t), k):
            a = g[list(act)]
            nu = -np.linalg.solve(a @ a.T, a @ gbar) if k else np.zeros(0)
            v = gbar + (nu @ a if k else 0.0)
            if np.all(nu >= -1e-12 * np.abs(nu).max(initial=1.0)) and np.all(g @ v >= -1e-9 * np.linalg.norm(g) * np.linalg.norm(v)):
                if np.sum((v - gbar) ** 2) < value:
                    best, value = v, np.sum((v - gbar) ** 2)
    return best


def test_dual_proj_is_the_projection_of_the_mean_onto_the_dual_cone():
    r = np.random.default_rng(4)
    conflicted = 0
    for t in (2, 3, 5):
        for scale in (1e-3, 1.0, 1e3):
            g = (r.normal(size=(t, 20)) - 0.3 * r.normal(size=(1, 20))) * r.uniform(0.2, 3.0, size=(t, 1)) * scale
            for pref in (np.ones(t), r.uniform(0.5, 3.0, size=t)):
                u = pref / pref.sum()
                lam = dualproj_coefficients(g @ g.T, np.ones(t), pref).numpy()
                want = _dual_proj(g, u)
                np.testing.assert_allclose(lam @ g, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())
                assert np.all(g @ (lam @ g) >= -1e-9 * scale ** 2)
                conflicted += int(np.any(g @ (u @ g) < 0))
    assert conflicted >= 3                                   # the projection was not the identity every time
    g = _grads(r, 3)
    lam = dualproj_coefficients(g @ g.T, np.array([1.0, 1.0, 0.0]), np.ones(3)).numpy()
    assert lam[2] == 0
    np.testing.assert_allclose(lam[:2] @ g[:2], _dual_proj(g[:2], np.full(2, 0.5)), rtol=1e-8)


# --- ExcessMTL (He et al. ICML 2024) ----------------------------------------------------------------------


def _excess(rows_seq, eta, warmup):
    """The paper's recursion (Eqs. 6–7, 9) on a sequence of gradient rows: (updates, α after each step)."""
    t = rows_seq[0].shape[0]
    h, alpha, base = np.zeros_like(rows_seq[0]), np.full(t, 1.0 / t), np.zeros(t)
    updates, alphas = [], []
    for step, g in enumerate(rows_seq):
        h = h + g * g
        e = np.sum(g * g / np.sqrt(h + 1e-7), 1)
        if step < warmup:
            base = base + e / warmup
        else:
            alpha = alpha * np.exp(eta * e / base)
            alpha = alpha / alpha.sum()
        updates.append(alpha @ g)
        alphas.append(alpha)
    return updates, alphas


@pytest.mark.parametrize("warmup", [1, 3])
def test_excess_mtl_follows_the_paper_recursion(warmup):
    r = np.random.default_rng(5)
    t, p = 3, 12
    rows_seq = [(r.normal(size=(t, p)) * np.array([[0.1], [1.0], [3.0]]) * 0.8 ** k).astype("float32")
                for k in range(6)]
    want_u, want_a = _excess([x.astype("float64") for x in rows_seq], 0.5, warmup)
    fisher, alpha = tf.zeros((t, p)), tf.constant(np.full(t, 1 / 3), tf.float64)
    base, count = tf.zeros(t, tf.float64), tf.constant(0.0, tf.float64)
    for rows, wu, wa in zip(rows_seq, want_u, want_a):
        update, fisher, alpha, base, count = excess_mtl_update(tf.constant(rows), fisher, alpha, base, count,
                                                               tf.ones(t), 0.5, warmup)
        np.testing.assert_allclose(alpha.numpy(), wa, rtol=1e-5)
        np.testing.assert_allclose(update.numpy(), wu, rtol=1e-4, atol=1e-6)
    assert not np.allclose(want_a[-1], 1 / 3)                 # the weights moved
    assert "weighting.gradients" in _spec_error("weighting: {strategy: excess_mtl, gradients: representation}")


# --- MoCo (Fernando et al. ICLR 2023) ---------------------------------------------------------------------


def _project(v):
    """argmin_{w∈Δ} ‖w − v‖²: w = max(v − θ, 0) with Σw = 1, θ by bisection (not the sort of the code)."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(v - 0.5 * (lo + hi), 0)


def test_simplex_projection_is_the_nearest_point_of_the_simplex():
    r = np.random.default_rng(6)
    for t in (1, 2, 3, 6):
        for _ in range(20):
            v = r.normal(size=t) * r.choice([0.01, 1.0, 100.0])
            np.testing.assert_allclose(simplex_projection(v, np.ones(t)).numpy(), _project(v), atol=1e-12)
    v = np.array([0.3, 5.0, -0.2, 0.4])
    got = simplex_projection(v, np.array([1.0, 0.0, 1.0, 1.0])).numpy()
    assert got[1] == 0
    np.testing.assert_allclose(got[[0, 2, 3]], _project(v[[0, 2, 3]]), atol=1e-12)


@pytest.mark.parametrize("normalize", [False, True])
def test_moco_follows_the_paper_recursion(normalize):
    """Algorithm 1: yᵢ tracks the gradients, λ a projected step of (YYᵀ + ρI)λ, d = Yᵀλ; six steps."""
    r = np.random.default_rng(7)
    t, p = 3, 10
    params = MoCoParams(beta=0.6, beta_sigma=0.5, gamma=0.2, gamma_sigma=0.3, rho=0.05, normalize=normalize)
    y, lam = np.zeros((t, p)), np.full(t, 1 / 3)
    ty, tlam = tf.zeros((t, p)), tf.constant(lam)
    for step in range(6):
        g = (r.normal(size=(t, p)) + np.array([[1.0], [0.0], [-0.5]])).astype("float32")
        values = r.uniform(0.5, 2.0, size=t).astype("float32")
        h = g.astype("float64")
        if normalize:
            h = h / (np.linalg.norm(h, axis=1, keepdims=True) + 1e-8) * values[:, None]
        k = step + 1.0
        y = y - 0.6 / k ** 0.5 * (y - h)
        lam = _project(lam - 0.2 / k ** 0.3 * (y @ y.T + 0.05 * np.eye(t)) @ lam)
        update, ty, tlam = moco_update(tf.constant(g), ty, tlam, tf.constant(values), tf.ones(t), step, params)
        np.testing.assert_allclose(tlam.numpy(), lam, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(update.numpy(), lam @ y, rtol=1e-4, atol=1e-6)
    assert not np.allclose(lam, 1 / 3)
    assert "weighting.gradients" in _spec_error("weighting: {strategy: moco, gradients: representation}")


# --- MoDo (Chen et al. NeurIPS 2023) and SDMGrad (Xiao et al. NeurIPS 2023): three samples a step ----------


def _modo(g, lam, gamma, rho):
    """Algorithm 1 of MoDo on the rows of z₁, z₂, z₃: (d, λ)."""
    lam = _project(lam - gamma * (g[0] @ (g[1].T @ lam) + rho * lam))
    return lam @ g[2], lam


def _sdmgrad(g, w, lamda, niter, lr):
    """Algorithm 1 of SDMGrad on the rows of ξ, ξ′, ζ: S projected steps on the dual, then d (and w)."""
    cross = g[0] @ g[1].T
    beta = lr / (np.mean(np.sqrt(np.maximum(np.diag(cross), 0))) ** 2 + 1e-8)     # a cross diagonal may be < 0
    for _ in range(niter):
        w = _project(w - beta * (cross @ w + lamda * g[0] @ g[1].mean(0)))
    return (w @ g[2] + lamda * g[2].mean(0)) / (1 + lamda), w


def test_modo_and_sdmgrad_follow_their_algorithms():
    r = np.random.default_rng(8)
    t, p = 3, 12
    lam, w = np.full(t, 1 / 3), np.full(t, 1 / 3)
    tlam, tw = tf.constant(lam), tf.constant(w)
    for _ in range(4):
        common = r.normal(size=(1, 1, p))
        g = (common + r.normal(size=(3, t, p)) * np.array([1.0, 0.5, 2.0])[None, :, None]).astype("float32")
        d, lam = _modo(g.astype("float64"), lam, 0.05, 0.1)
        got, tlam = modo_update(tf.constant(g), tlam, tf.ones(t), 0.05, 0.1)
        np.testing.assert_allclose(tlam.numpy(), lam, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.numpy(), d, rtol=1e-4, atol=1e-6)
        d, w = _sdmgrad(g.astype("float64"), w, 0.3, 20, 5.0)
        got, tw, _ = sdmgrad_update(tf.constant(g), tw, tf.ones(t), 0.3, 20, 5.0)
        np.testing.assert_allclose(tw.numpy(), w, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.numpy(), d, rtol=1e-4, atol=1e-6)
    assert not np.allclose(lam, 1 / 3) and not np.allclose(w, 1 / 3)
    for name in ("modo", "sdmgrad"):
        assert "weighting.gradients" in _spec_error(f"weighting: {{strategy: {name}, gradients: representation}}")


@pytest.mark.parametrize("strategy", ["modo", "sdmgrad"])
def test_one_fit_step_uses_the_three_thirds_of_the_batch(strategy):
    """One SGD step on a batch of 9: z₁, z₂, z₃ (ξ, ξ′, ζ) are its thirds, by a plain tape on each; the trunk
    moves along the algorithm's d, the heads along the whole batch's sᵢ∇Lᵢ."""
    x, y = _xy(9)
    lr, s = 0.1, np.array([1.0, 0.5])
    params = {"gamma": 0.05, "rho": 0.1} if strategy == "modo" else {"lamda": 0.3, "niter": 5, "lr": 2.0}
    spec = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}},
            "weighting": {"strategy": strategy, "params": params}}
    model = _two_heads()
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(lr))
    ref = _two_heads()
    trunk = ref.get_layer("trunk").trainable_variables

    def rows(xs, ys):
        with tf.GradientTape(persistent=True) as tape:
            out = ref(xs)
            losses = [s[i] * tf.reduce_mean(tf.square(ys[k] - out[k])) for i, k in enumerate("ab")]
        return tape, losses, np.stack([np.concatenate([g.numpy().ravel() for g in tape.gradient(v, trunk)])
                                       for v in losses])

    g = np.stack([rows(x[j * 3:(j + 1) * 3], {k: v[j * 3:(j + 1) * 3] for k, v in y.items()})[2] for j in range(3)])
    if strategy == "modo":
        d, _ = _modo(g, np.full(2, 0.5), 0.05, 0.1)
    else:
        d, _ = _sdmgrad(g, np.full(2, 0.5), 0.3, 5, 2.0)
    tape, losses, _ = rows(x, y)
    heads = [(v, sum(tape.gradient(losses[i], v) for i, k in enumerate("ab") if v.path.startswith(k)))
             for k in "ab" for v in ref.get_layer(k).trainable_variables]
    offset = 0
    for v in trunk:
        size = int(np.prod(v.shape))
        v.assign(v.numpy() - lr * d[offset:offset + size].reshape(v.shape))
        offset += size
    for v, gv in heads:
        v.assign(v.numpy() - lr * gv.numpy())
    model.fit(x, y, batch_size=9, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["modo", "sdmgrad"])
def test_three_samples_under_xla_and_on_two_replicas(strategy):
    """Two replicas: part j is the union of each replica's j-th third, so one device fed the batch reordered
    to those unions trains the same; XLA trains as graph mode."""
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    x, y = _xy(12)
    spec = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}},
            "weighting": {"strategy": strategy, "params": {"gamma": 0.05} if strategy == "modo" else {}}}
    order = np.array([0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11])

    def run(dist, perm, jit=False):
        with dist.scope():
            model = _two_heads(3)
            ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.3), jit_compile=jit)
        data = tf.data.Dataset.from_tensors((x[perm], {k: v[perm] for k, v in y.items()})).repeat(3)
        hist = model.fit(data, epochs=2, verbose=0, shuffle=False).history
        return hist, np.concatenate([v.numpy().ravel() for v in model.trainable_variables])

    one = tf.distribute.OneDeviceStrategy(cpus[0])
    want, params = run(one, order)
    got, got_params = run(ml.mirrored_strategy(cpus[:2]),
                          np.arange(12))
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(got_params, params, rtol=1e-4, atol=1e-6)
    want, params = run(one, np.arange(12))
    got, got_params = run(one, np.arange(12), jit=True)
    np.testing.assert_allclose(got_params, params, rtol=1e-4, atol=1e-6)


# --- every new strategy in fit: the guard, saving, XLA, two replicas: in test_weighting_reference's _NEW ----
