"""The strategies' formulas against independent computations (numpy, brute force, the papers)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from multiloss.weighting import rng, solvers
from multiloss.weighting.cagrad import cagrad_coefficients
from multiloss.weighting.dwa import dwa_weights
from multiloss.weighting.gradnorm import gradnorm_loss
from multiloss.weighting.pcgrad import pcgrad_coefficients, random_order
from multiloss.weighting.rlw import rlw_sample


def _grads(rng_, t, p=40, conflict=1.0):
    """Random task gradients with a common component (so some pairs agree, some conflict)."""
    common = rng_.normal(size=(1, p))
    g = rng_.normal(size=(t, p)) * conflict + common
    return g * rng_.uniform(0.2, 3.0, size=(t, 1))


# --- DWA (Liu et al. 2019) ----------------------------------------------------------


def test_dwa_matches_the_formula_sums_to_k_and_equal_ratios_give_ones():
    r = np.random.default_rng(0)
    for k in (2, 3, 7):
        prev, prev2 = r.uniform(0.1, 5, k), r.uniform(0.1, 5, k)
        for temp in (0.5, 2.0, 10.0):
            got = np.asarray(dwa_weights(prev, prev2, temp))
            ratio = prev / prev2
            want = k * np.exp(ratio / temp) / np.exp(ratio / temp).sum()
            np.testing.assert_allclose(got, want, rtol=1e-5)
            assert got.sum() == pytest.approx(k, rel=1e-6)
        same = r.uniform(0.1, 5, k)
        np.testing.assert_allclose(np.asarray(dwa_weights(3 * same, same, 2.0)), np.ones(k), rtol=1e-6)


# --- RLW (Lin et al. 2022) ------------------------------------------------------------


def _splitmix(z):
    z = np.uint64(z)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform_reference(num, seed, step, stream):
    with np.errstate(over="ignore"):
        key = _splitmix(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(stream + 1))
        key = _splitmix(key ^ np.uint64(step))
        return np.array([(int(_splitmix(key + np.uint64(0x9E3779B97F4A7C15) * np.uint64(i))) >> 11) + 0.5
                         for i in range(1, num + 1)]) * 2.0 ** -53


def test_rlw_is_seeded_on_the_simplex_and_softmax_of_standard_normals():
    # The draws equal an independent numpy SplitMix64 + Box–Muller, and softmax of them.
    for seed, step in ((0, 0), (3, 17), (12345, 10 ** 6)):
        u1, u2 = _uniform_reference(4, seed, step, 0), _uniform_reference(4, seed, step, 1)
        z = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
        np.testing.assert_allclose(rlw_sample(4, seed, step).numpy(), np.exp(z) / np.exp(z).sum(), rtol=1e-6)
    draw = tf.function(lambda s, seed, dist: tf.map_fn(lambda t: rlw_sample(3, seed, t, dist), s,
                                                       fn_output_signature=tf.float32))
    steps = tf.range(2000, dtype=tf.int64)
    w = draw(steps, 7, "normal").numpy()
    np.testing.assert_array_equal(w, draw(steps, 7, "normal").numpy())  # same seed, same weights
    assert not np.allclose(w, draw(steps, 8, "normal").numpy())         # another seed, other weights
    assert (w > 0).all() and np.allclose(w.sum(1), 1.0, atol=1e-6)      # on the simplex
    # log(w0 / w1) = z0 - z1 ~ N(0, 2): mean 0, variance 2.
    d = np.log(w[:, 0] / w[:, 1])
    assert abs(d.mean()) < 0.1 and d.var() == pytest.approx(2.0, rel=0.1)
    # Dir(1,1,1): mean 1/3, variance (K-1)/(K²(K+1)) = 1/18.
    wd = draw(steps, 1, "dirichlet").numpy()
    assert np.allclose(wd.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(wd.mean(0), 1 / 3, atol=0.02)
    np.testing.assert_allclose(wd.var(0), 1 / 18, rtol=0.15)


def test_rng_draws_are_uniform_and_identical_under_xla():
    u = rng.uniform(20000, 5, 3).numpy()
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and u.var() == pytest.approx(1 / 12, rel=0.03)
    xla = tf.function(lambda s: rng.uniform(6, 9, s), jit_compile=True)
    np.testing.assert_array_equal(xla(tf.constant(4, tf.int64)).numpy(), rng.uniform(6, 9, 4).numpy())
    xla = tf.function(lambda s: rlw_sample(6, 9, s), jit_compile=True)       # log/cos may differ by an ulp
    np.testing.assert_allclose(xla(tf.constant(4, tf.int64)).numpy(), rlw_sample(6, 9, 4).numpy(), rtol=1e-6)


# --- GradNorm (Chen et al. 2018) -------------------------------------------------------


def _gradnorm_reference(norms, w, ratios, alpha):
    g = w * norms
    r = ratios / ratios.mean()
    target = g.mean() * r ** alpha
    return np.abs(g - target).sum()


def test_gradnorm_loss_is_zero_at_equal_norms_and_rates_and_matches_the_formula():
    norms = np.array([2.0, 0.5, 4.0], "float32")
    w = np.array([1.0, 4.0, 0.5], "float32")            # w·n = 2, 2, 2
    l_grad, grad = gradnorm_loss(norms, w, np.array([0.7, 0.7, 0.7]), 1.5)
    assert float(l_grad) == 0.0
    r = np.random.default_rng(1)
    for _ in range(5):
        norms, w, ratios = r.uniform(0.1, 3, 4), r.uniform(0.2, 2, 4), r.uniform(0.2, 1.5, 4)
        l_grad, grad = gradnorm_loss(norms, w, ratios, 1.5)
        assert float(l_grad) == pytest.approx(_gradnorm_reference(norms, w, ratios, 1.5), rel=1e-5)
        # ∂L_grad/∂w_i with Ḡ·r^α held constant, by central differences of the formula.
        target = (w * norms).mean() * (ratios / ratios.mean()) ** 1.5
        for i in range(4):
            e = np.zeros(4)
            e[i] = 1e-4
            fd = (np.abs((w + e) * norms - target).sum() - np.abs((w - e) * norms - target).sum()) / 2e-4
            assert float(grad[i]) == pytest.approx(fd, rel=1e-3)


# --- PCGrad (Yu et al. 2020) ---------------------------------------------------------------


def _pcgrad_reference(g, order):
    """Algorithm 1 of the paper on the gradient vectors themselves."""
    out = []
    for i in range(len(g)):
        gi = g[i].copy()
        for j in order[i]:
            dot = gi @ g[j]
            if dot < 0:
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.sum(out, axis=0)


def _pcgrad_update(g, order):
    coef = pcgrad_coefficients(tf.constant(g @ g.T), tf.constant(order)).numpy()
    return coef.sum(0) @ g


def test_pcgrad_equals_the_plain_sum_without_conflict():
    r = np.random.default_rng(2)
    g = np.abs(r.normal(size=(4, 30)))                     # all dot products positive
    order = random_order(4, 0, 5).numpy()
    np.testing.assert_allclose(_pcgrad_update(g, order), g.sum(0), rtol=1e-12)


def test_pcgrad_matches_algorithm_1_and_each_update_agrees_with_both_gradients_for_two_tasks():
    r = np.random.default_rng(3)
    for t in (2, 3, 5):
        for step in range(6):
            g = _grads(r, t, conflict=2.0)
            order = random_order(t, 11, step).numpy()
            for i in range(t):                              # a permutation of the other tasks
                assert sorted(order[i]) == sorted(set(range(t)) - {i})
            update = _pcgrad_update(g, order)
            np.testing.assert_allclose(update, _pcgrad_reference(g, order), rtol=1e-9, atol=1e-9)
            if t == 2:
                assert update @ g[0] >= -1e-9 and update @ g[1] >= -1e-9
    # A conflicting pair, by construction.
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    update = _pcgrad_update(g, random_order(2, 0, 0).numpy())
    assert g[0] @ g[1] < 0 and update @ g[0] >= 0 and update @ g[1] >= 0


# --- MGDA (Sener & Koltun 2018) and CAGrad (Liu et al. 2021) ------------------------------------


def _min_norm_brute_force(g, present):
    """Enumerate every support, solve the equality-constrained problem on it, keep the best feasible."""
    idx = [i for i in range(len(g)) if present[i]]
    m = g @ g.T
    best, best_a = np.inf, None
    for k in range(1, len(idx) + 1):
        for s in itertools.combinations(idx, k):
            ms = m[np.ix_(s, s)]
            kkt = np.block([[ms, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(kkt, np.r_[np.zeros(k), 1.0], rcond=None)[0][:k]
            if (sol >= -1e-12).all():
                a = np.zeros(len(g))
                a[list(s)] = sol
                v = a @ m @ a
                if v < best:
                    best, best_a = v, a
    return best, best_a


@pytest.mark.parametrize("solver", ["exact", "frank_wolfe"])
def test_mgda_is_the_min_norm_point_of_the_convex_hull(solver):
    r = np.random.default_rng(4)
    for t in (2, 3, 4, 6):
        for trial in range(4):
            g = _grads(r, t)
            present = np.ones(t)
            if trial == 3:
                present[0] = 0                              # a task absent from the batch
            alpha = solvers.min_norm(tf.constant(g @ g.T), tf.constant(present), solver).numpy()
            assert alpha.sum() == pytest.approx(1.0) and (alpha >= 0).all() and (alpha[present == 0] == 0).all()
            best, _ = _min_norm_brute_force(g, present)
            got = alpha @ g @ g.T @ alpha
            assert best * (1 - 1e-9) - 1e-12 <= got <= best * (1 + 1e-8) + 1e-12
            # Min-norm ⇒ a common descent direction: d·g_i ≥ ‖d‖² for every present task.
            d = alpha @ g
            assert (g[present == 1] @ d >= d @ d * (1 - 1e-6) - 1e-9).all()


def test_mgda_solution_of_two_tasks_is_the_closed_form():
    g = np.array([[2.0, 0.0], [0.0, 1.0]])
    alpha = solvers.min_norm(tf.constant(g @ g.T), tf.constant(np.ones(2))).numpy()
    # min over γ of ‖γ g1 + (1-γ) g2‖²: γ = (g2-g1)·g2 / ‖g1-g2‖² = 1/5.
    np.testing.assert_allclose(alpha, [0.2, 0.8], atol=1e-9)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    r = np.random.default_rng(5)
    g = _grads(r, 4)
    lam, _ = cagrad_coefficients(tf.constant(g @ g.T), tf.ones(4), 0.0, rescale=0)
    np.testing.assert_allclose((lam.numpy() @ g) / 4, g.mean(0), rtol=1e-10)


@pytest.mark.parametrize("solver", ["exact", "frank_wolfe"])
def test_cagrad_satisfies_the_constraint_and_maximises_the_worst_improvement(solver):
    r = np.random.default_rng(6)
    for t in (2, 3, 5):
        for c in (0.2, 0.5, 0.9):
            g = _grads(r, t, conflict=1.5)
            lam, w = cagrad_coefficients(tf.constant(g @ g.T), tf.ones(t), c, rescale=0, solver=solver)
            d = (lam.numpy() / t) @ g                          # the paper's d (rescale 0, before × K)
            g0 = g.mean(0)
            # ‖d − g0‖ ≤ c‖g0‖, with equality (d lies on the ball's surface).
            assert np.linalg.norm(d - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-6)
            # The dual objective is at its minimum (multi-start SLSQP as the independent reference).
            a, rho = g @ g.T @ np.full(t, 1 / t), c * np.linalg.norm(g0)
            def obj(x, a=a, rho=rho, m=g @ g.T):
                return x @ a + rho * np.sqrt(max(x @ m @ x, 0.0))

            ref = min(minimize(obj, r.dirichlet(np.ones(t)), method="SLSQP", bounds=[(0, 1)] * t,
                               constraints={"type": "eq", "fun": lambda x: x.sum() - 1},
                               options={"ftol": 1e-14, "maxiter": 500}).fun for _ in range(10))
            got = obj(w.numpy())
            assert got <= ref + 1e-7 * abs(ref) + 1e-9
            # Brute force over the ball: no feasible direction improves the worst task more than d.
            u = r.normal(size=(20000, g.shape[1]))
            u *= (rho * r.uniform(0, 1, (20000, 1)) ** (1 / g.shape[1])) / np.linalg.norm(u, axis=1, keepdims=True)
            worst_sampled = (g @ (g0 + u).T).min(0).max()
            assert (g @ d).min() >= worst_sampled - 1e-6 * abs(worst_sampled)


def test_cagrad_rescale_and_sum_convention_follow_the_authors_code():
    r = np.random.default_rng(7)
    g = _grads(r, 3)
    gram = tf.constant(g @ g.T)
    lam0, w = cagrad_coefficients(gram, tf.ones(3), 0.4, rescale=0)
    lam1, _ = cagrad_coefficients(gram, tf.ones(3), 0.4, rescale=1)
    lam2, _ = cagrad_coefficients(gram, tf.ones(3), 0.4, rescale=2)
    np.testing.assert_allclose(lam1.numpy(), lam0.numpy() / (1 + 0.4 ** 2), rtol=1e-12)
    np.testing.assert_allclose(lam2.numpy(), lam0.numpy() / 1.4, rtol=1e-12)
    # λ_k = K (1/K + c‖g0‖ w_k / ‖g_w‖): the update is K × (g0 + c‖g0‖ g_w/‖g_w‖).
    gw = w.numpy() @ g
    g0 = g.mean(0)
    want = 3 * (g0 + 0.4 * np.linalg.norm(g0) * gw / np.linalg.norm(gw))
    np.testing.assert_allclose(lam0.numpy() @ g, want, rtol=1e-9)


def test_frank_wolfe_runs_under_xla_and_a_zero_gram_is_harmless():
    r = np.random.default_rng(8)
    g = _grads(r, 5)
    gram, present = tf.constant(g @ g.T), tf.constant(np.ones(5))
    fw = tf.function(lambda m, p: solvers.min_norm(m, p, "frank_wolfe"), jit_compile=True)
    np.testing.assert_allclose(fw(gram, present).numpy(), solvers.min_norm(gram, present, "exact").numpy(),
                               atol=1e-5)   # FW stops at a relative duality gap of 1e-6
    zero = solvers.min_norm(tf.zeros((3, 3), tf.float64), tf.ones(3, tf.float64)).numpy()
    assert np.isfinite(zero).all() and zero.sum() == pytest.approx(1.0)
