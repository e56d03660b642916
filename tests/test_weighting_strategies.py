"""The new strategies against independent numpy references (their papers' formulas on the vectors).

Every reference below works on the gradient vectors g_i themselves (never on
the Gram matrix the code uses), in numpy/scipy, written from the papers.
"""

import numpy as np
import pytest
import tensorflow as tf

from multiloss.weighting import rng
from multiloss.weighting.aligned_mtl import aligned_coefficients
from multiloss.weighting.dbmtl import dbmtl_coefficients, dbmtl_update
from multiloss.weighting.famo import FAMO, FAMOParams
from multiloss.weighting.graddrop import graddrop_update
from multiloss.weighting.gradvac import gradvac_coefficients
from multiloss.weighting.imtl import imtl_g_coefficients
from multiloss.weighting.nash_mtl import nash_coefficients
from multiloss.weighting.pcgrad import random_order
from multiloss.weighting.upgrad import upgrad_coefficients


def _grads(r, t, p=20, conflict=1.5):
    common = r.normal(size=(1, p))
    g = r.normal(size=(t, p)) * conflict + common
    return g * r.uniform(0.2, 3.0, size=(t, 1))


# --- IMTL-G (Liu et al. ICLR 2021) -------------------------------------------------------------


def _imtl_reference(g):
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0] - g[1:]
    uu = u[0] - u[1:]
    rest = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    return np.concatenate([[1 - rest.sum()], rest])


def test_imtl_g_matches_the_closed_form_and_equalises_the_projections():
    r = np.random.default_rng(0)
    for t in (2, 3, 5):
        g = _grads(r, t)
        alpha = imtl_g_coefficients(g @ g.T, np.ones(t)).numpy()
        np.testing.assert_allclose(alpha, _imtl_reference(g), rtol=1e-8, atol=1e-10)
        update = alpha @ g
        proj = g @ update / np.linalg.norm(g, axis=1)          # ⟨update, u_i⟩: all equal (the paper's aim)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-8)
    # An absent task is left out: the others' answer is the one without it.
    g = _grads(r, 4)
    alpha = imtl_g_coefficients(g @ g.T, np.array([1.0, 0.0, 1.0, 1.0])).numpy()
    assert alpha[1] == 0
    np.testing.assert_allclose(alpha[[0, 2, 3]], _imtl_reference(g[[0, 2, 3]]), rtol=1e-8)


# --- Nash-MTL (Navon et al. ICML 2022) ----------------------------------------------------------


def test_nash_mtl_solves_the_bargaining_equation_on_the_gram_matrix_itself():
    from scipy.optimize import fsolve

    r = np.random.default_rng(1)
    for t in (2, 3, 6):
        g = _grads(r, t, p=30)
        m = g @ g.T                                        # the paper's α_i (GGᵀα)_i = 1, no normalisation
        alpha = nash_coefficients(m, np.ones(t)).numpy()
        start = 1.0 / np.sqrt(np.diag(m))
        ref = fsolve(lambda a, m=m: a * (m @ a) - 1.0, start, xtol=1e-13)
        np.testing.assert_allclose(alpha, ref, rtol=1e-7)
        d = alpha @ g
        np.testing.assert_allclose(g @ d, 1.0 / alpha, rtol=1e-7)
        assert (alpha > 0).all()


# --- Aligned-MTL (Senushkin et al. CVPR 2023) ---------------------------------------------------


def test_aligned_mtl_update_is_the_sum_of_orthonormalised_gradients():
    r = np.random.default_rng(2)
    for t in (2, 3, 5):
        g = _grads(r, t)
        lam = aligned_coefficients(g @ g.T, np.ones(t)).numpy()
        u, s, vt = np.linalg.svd(g, full_matrices=False)    # G = U Σ Vᵀ
        aligned = s.min() * u @ vt                           # rows: orthogonal, norms σ_min
        np.testing.assert_allclose(lam @ g, aligned.sum(0), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(aligned @ aligned.T, s.min() ** 2 * np.eye(t), atol=1e-8 * s.max() ** 2)
    # Rank-deficient: three gradients in a plane; the rank tolerance drops the null direction.
    g = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    u, s, vt = u[:, :2], s[:2], vt[:2]
    lam = aligned_coefficients(g @ g.T, np.ones(3)).numpy()
    np.testing.assert_allclose(lam @ g, (s.min() * u @ vt).sum(0), rtol=1e-7, atol=1e-9)


# --- UPGrad (Quinton & Rey 2024) -----------------------------------------------------------------


def _upgrad_reference(g):
    """Mean of the projections of each g_i onto the dual cone {v: Gv ≥ 0}, by scipy's SLSQP on v."""
    from scipy.optimize import minimize

    out = []
    for gi in g:
        res = minimize(lambda v, gi=gi: 0.5 * np.sum((v - gi) ** 2), gi, jac=lambda v, gi=gi: v - gi,
                       constraints=[{"type": "ineq", "fun": lambda v: g @ v, "jac": lambda v: g}],
                       method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        out.append(res.x)
    return np.mean(out, axis=0)


def test_upgrad_is_the_mean_projection_onto_the_dual_cone_and_conflicts_with_no_task():
    r = np.random.default_rng(3)
    for t in (2, 3, 4):
        g = _grads(r, t, p=8, conflict=2.5)
        lam = upgrad_coefficients(g @ g.T, np.ones(t)).numpy()
        update = lam @ g
        np.testing.assert_allclose(update, _upgrad_reference(g), rtol=1e-5, atol=1e-6 * np.abs(g).max())
        assert (g @ update >= -1e-9 * np.linalg.norm(g) ** 2).all()
    g = np.abs(_grads(r, 3))                              # no conflict: the mean gradient
    np.testing.assert_allclose(upgrad_coefficients(g @ g.T, np.ones(3)).numpy(), np.full(3, 1 / 3), rtol=1e-10)


def test_upgrad_warm_start_gives_the_dual_cone_projection_at_every_step_and_falls_back_when_wrong():
    """The warm start (last step's active sets, then primal-dual active-set rounds) against SLSQP on
    the projection itself, over a drifting sequence with absent tasks and a zero gradient; a wrong
    support with no rounds allowed must still give the exact answer (through the enumeration)."""
    import tensorflow as tf

    from multiloss.weighting import solvers

    r = np.random.default_rng(11)
    t = 6
    support = tf.Variable(np.zeros((t, t)))
    base = _grads(r, t, p=10, conflict=2.5)
    verified = []
    for step in range(12):
        g = base + 0.3 * r.standard_normal(base.shape) * (step % 4 == 0)
        present = np.ones(t)
        if step == 5:
            present[2] = 0.0
        if step == 7:
            g[4] = 0.0
        lam = upgrad_coefficients(g @ g.T, present, support=support).numpy()
        keep = present > 0
        np.testing.assert_allclose(lam[keep] @ g[keep], _upgrad_reference(g[keep]),
                                   rtol=1e-5, atol=1e-6 * np.abs(g).max())
        assert (lam[~keep] == 0).all()
        m = g @ g.T
        _, _, ok = solvers.nonneg_qp_warm(m, m * present[:, None], present, tf.Variable(support))
        verified.append(bool(ok))
    assert all(verified)                    # the stored supports are each step's exact ones
    g = _grads(r, t, p=10, conflict=2.5)
    m = g @ g.T
    wrong = tf.Variable(np.ones((t, t)))
    x, _, ok = solvers.nonneg_qp_warm(m, m, np.ones(t), wrong, sweeps=0)
    assert not bool(ok)
    np.testing.assert_allclose(x.numpy(), solvers.nonneg_qp(m, m, np.ones(t), "exact").numpy(), rtol=1e-12)
    assert (x.numpy() >= 0).all()


# --- GradVac (Wang et al. ICLR 2021) ----------------------------------------------------------


def _gradvac_reference(g, order, targets, beta):
    """Algorithm 2 of the paper (as LibMTL runs it) on the vectors themselves."""
    targets = targets.copy()
    out = []
    for i in range(len(g)):
        gi = g[i].copy()
        for j in order[i]:
            phi = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
            target = targets[i, j]
            if phi < target:
                gi = gi + (np.linalg.norm(gi) * (target * np.sqrt(1 - phi ** 2) - phi * np.sqrt(1 - target ** 2))
                           / (np.linalg.norm(g[j]) * np.sqrt(1 - target ** 2))) * g[j]
            targets[i, j] = (1 - beta) * target + beta * phi
        out.append(gi)
    return np.sum(out, 0), targets


def test_gradvac_matches_algorithm_2_and_sets_the_cosine_to_its_target():
    r = np.random.default_rng(4)
    for t in (2, 3, 4):
        targets = r.uniform(-0.2, 0.6, size=(t, t))
        for step in range(3):
            g = _grads(r, t, conflict=2.0)
            order = random_order(t, 5, step).numpy()
            coef, new = gradvac_coefficients(g @ g.T, order, targets, 0.3)
            want, want_targets = _gradvac_reference(g, order, targets, 0.3)
            np.testing.assert_allclose(coef.numpy().sum(0) @ g, want, rtol=1e-8, atol=1e-9)
            off = ~np.eye(t, dtype=bool)
            np.testing.assert_allclose(new.numpy()[off], want_targets[off], rtol=1e-9, atol=1e-12)
            targets = want_targets
    # Two tasks with cos = −0.5 and target 0.5: the vaccinated g_1 has cos exactly 0.5 with g_2.
    g = np.array([[1.0, 0.0], [-0.5, np.sqrt(3) / 2]])
    coef, _ = gradvac_coefficients(g @ g.T, np.array([[1], [0]]), np.full((2, 2), 0.5), 0.01)
    g1 = coef.numpy()[0] @ g
    assert g1 @ g[1] / np.linalg.norm(g1) == pytest.approx(0.5, rel=1e-10)


# --- DB-MTL (Lin et al. 2023) ---------------------------------------------------------------


def test_db_mtl_scales_every_log_gradient_to_the_largest_norm():
    r = np.random.default_rng(5)
    g = _grads(r, 3)
    losses = np.array([2.0, 0.1, 30.0])
    logs = g / losses[:, None]                                    # ∇ log L_i
    norms = np.linalg.norm(logs, axis=1)
    want = ((norms.max() / norms)[:, None] * logs).sum(0)         # β = 0
    lam = dbmtl_coefficients(g @ g.T, losses, np.ones(3), eps=0.0).numpy()
    np.testing.assert_allclose(lam @ g, want, rtol=1e-10)
    # With averaging (β = 0.9, σ = 0): buffer ← g + β(buffer − g), then the same scaling.
    buf = r.normal(size=g.shape)
    ema = logs + 0.9 * (buf - logs)
    n2 = np.linalg.norm(ema, axis=1)
    update, new, _ = dbmtl_update(tf.constant(g), tf.constant(buf), losses, np.ones(3), 5, 0.9, 0.0, eps=0.0)
    np.testing.assert_allclose(new.numpy(), ema, rtol=1e-12)
    np.testing.assert_allclose(update.numpy(), ((n2.max() / n2)[:, None] * ema).sum(0), rtol=1e-10)


# --- GradDrop (Chen et al. NeurIPS 2020) ------------------------------------------------------


def test_graddrop_keeps_the_sign_chosen_by_the_purity_per_coordinate():
    r = np.random.default_rng(6)
    g = r.normal(size=(3, 50))
    u = r.uniform(size=50)
    purity = 0.5 * (1 + g.sum(0) / np.abs(g).sum(0))
    want = np.where(purity > u, np.where(g > 0, g, 0).sum(0), np.where(g < 0, g, 0).sum(0))
    update, lam = graddrop_update(tf.constant(g), tf.constant(u))
    np.testing.assert_allclose(update.numpy(), want, rtol=1e-12)
    # leak 1 keeps everything; unanimous signs are always kept (P = 1 or 0).
    np.testing.assert_allclose(graddrop_update(tf.constant(g), tf.constant(u), 1.0)[0].numpy(), g.sum(0))
    same = np.abs(g)
    np.testing.assert_allclose(graddrop_update(tf.constant(same), tf.constant(u))[0].numpy(), same.sum(0))
    assert (lam.numpy() >= 0).all() and (lam.numpy() <= 1).all()
    assert 0.0 < rng.uniform(4, 0, 1).numpy().min()


# --- FAMO (Liu et al. NeurIPS 2023) ---------------------------------------------------------


def test_famo_weights_and_logit_updates_follow_the_authors_algorithm():
    """A numpy transcription of the authors' FAMO class (softmax logits, Adam with weight decay)."""
    from multiloss.weighting.base import Context

    class _Term:
        def __init__(self, name):
            self.name = name

    strategy = FAMO(FAMOParams(), [_Term("a"), _Term("b"), _Term("c")])
    strategy.build()
    r = np.random.default_rng(7)
    xi, m, v, t, prev = np.zeros(3), np.zeros(3), np.zeros(3), 0, None
    for step in range(6):
        losses = r.uniform(0.1, 3.0, size=3)
        if prev is not None:
            delta = np.log(prev + 1e-8) - np.log(losses + 1e-8)
            z = np.exp(xi) / np.exp(xi).sum()
            grad = z * (delta - z @ delta) + 0.01 * xi          # softmax Jacobianᵀ δ, + weight decay
            t += 1
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad ** 2
            xi = xi - 0.025 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        prev = losses
        z = np.exp(xi) / np.exp(xi).sum()
        c = 1.0 / (z / (losses + 1e-8)).sum()
        want = c * z / (losses + 1e-8)
        ctx = Context(step=tf.constant(step, tf.int64), training=True, replicas=1)
        got = strategy.weights(tf.constant(losses, tf.float32), tf.ones(3), ctx).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-5)
        np.testing.assert_allclose(strategy.xi.numpy(), xi, rtol=1e-4, atol=1e-6)
        assert got @ losses == pytest.approx(c, rel=1e-5)    # Σ λ_i L_i = (Σ z_i/L_i)⁻¹, a harmonic mean


def _absent_b_history(strategy: str) -> dict:
    """Heads a and b; b's sample weight is 0 in every batch (its labels missing): 3 epochs of 4 steps."""
    import keras

    import multiloss as ml

    keras.utils.set_random_seed(0)
    r = np.random.default_rng(0)
    x = r.normal(size=(32, 4)).astype("float32")
    y = {"a": (x[:, :1] * 2).astype("float32"), "b": x[:, 1:2].astype("float32")}
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    model = keras.Model(inp, {"a": keras.layers.Dense(1, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse"}}, "weighting": {"strategy": strategy}},
               optimizer=keras.optimizers.SGD(0.05))
    sw = {"a": np.ones(32, "float32"), "b": np.zeros(32, "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(8)
    return model.fit(data, epochs=3, verbose=0).history


def test_rlw_leaves_a_term_without_labels_out_of_its_draw():
    """The present term's weight was its share of a draw over both terms (0.33, 0.37, 0.60): a random
    shrink of its step.  Renormalised over the present terms, the only present term weighs 1."""
    assert _absent_b_history("rlw")["a_weight"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-6)


def test_dwa_gives_a_term_never_present_the_neutral_ratio():
    """b has no epoch mean: its ratio was 0/0 = 0, which raised a's weight to 1.217; it is 1 (neutral)."""
    hist = _absent_b_history("dwa")
    r_a = hist["a_loss"][1] / hist["a_loss"][0]           # 4 equal batches an epoch: the epoch mean of a
    expected = 2 * np.exp(r_a / 2) / (np.exp(r_a / 2) + np.exp(1 / 2))
    assert hist["a_weight"][:2] == [1.0, 1.0]
    assert hist["a_weight"][2] == pytest.approx(expected, rel=1e-5)
