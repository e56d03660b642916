"""The simplex solvers on badly scaled, degenerate and larger problems.

The reference is the KKT certificate of each problem, evaluated exactly
(``fractions.Fraction`` on the float64 gradients and weights the solver
returned): for MGDA, d = Σα_i g_i is optimal iff ⟨g_i, d⟩ ≥ ‖d‖² for every
task with equality on the support; for CAGrad's dual F(w) = ⟨g_w, g_0⟩ +
ρ‖g_w‖, d = g_0 + ρ g_w/‖g_w‖ is optimal iff ⟨g_i, d⟩ ≥ F(w) likewise.  The
violations are measured per task in units of ‖g_i‖·‖d‖ (scale-free), so a
task 10⁶ times smaller than the others counts as much as they do.
"""

from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf

from multiloss.weighting import solvers
from multiloss.weighting.cagrad import cagrad_coefficients


def _scaled_gradients(rng, t, lo, hi, p=12):
    """Random directions with norms spread log-uniformly over 10^lo .. 10^hi."""
    g = rng.normal(size=(t, p))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g * 10.0 ** rng.permutation(np.linspace(lo, hi, t))[:, None]


def _exact(x):
    return [Fraction(float(v)) for v in np.ravel(x)]


def _kkt_violation(g, w, d, level):
    """max over tasks of (level − ⟨g_i, d⟩)/(‖g_i‖‖d‖), and |·| on the support (exact arithmetic)."""
    gf = [_exact(row) for row in g]
    df = _exact(d)
    nd = float(sum(x * x for x in df)) ** 0.5
    out = 0.0
    for i, row in enumerate(gf):
        v = float(level - sum(a * b for a, b in zip(row, df))) / (np.linalg.norm(g[i]) * nd)
        out = max(out, abs(v) if w[i] > 0 else v)
    return out


def _mgda_certificate(g, alpha):
    af = _exact(alpha)
    d = [sum(af[i] * Fraction(float(g[i, k])) for i in range(len(af))) for k in range(g.shape[1])]
    dd = sum(x * x for x in d)
    return _kkt_violation(g, alpha, np.array([float(x) for x in d]), dd)


CASES = [(2, 0, 6), (3, 0, 4), (3, 0, 6), (5, -6, 6), (8, -6, 6), (8, 0, 6)]


@pytest.mark.parametrize("t,lo,hi", CASES)
def test_min_norm_is_exact_for_gradient_norms_up_to_1e12_apart(t, lo, hi):
    r = np.random.default_rng(t * 100 + hi - lo)
    for _ in range(3):
        g = _scaled_gradients(r, t, lo, hi)
        alpha = solvers.min_norm_exact(g @ g.T, np.ones(t)).numpy()
        assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0, abs=1e-12)
        assert _mgda_certificate(g, alpha) < 1e-10


def test_min_norm_of_two_tasks_a_million_apart_is_the_closed_form():
    # g1 = (1, 0), g2 = (−1e6, 1e6): α2 = (‖g1‖² − g1·g2) / ‖g1 − g2‖² = (1 + 1e6)/(1 + 2e6 + 2e12).
    g = np.array([[1.0, 0.0], [-1e6, 1e6]])
    a2 = Fraction(1 + 10**6, 1 + 2 * 10**6 + 2 * 10**12)
    alpha = solvers.min_norm_exact(g @ g.T, np.ones(2)).numpy()
    np.testing.assert_allclose(alpha, [float(1 - a2), float(a2)], rtol=1e-12)
    assert alpha[1] == pytest.approx(5e-7, rel=1e-5)       # the small task keeps the big one's share


def test_min_norm_with_zero_identical_and_opposite_gradients():
    ones = np.ones(3)
    g = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [2.0, 4.0, 1.0]])
    np.testing.assert_array_equal(solvers.min_norm_exact(g @ g.T, ones).numpy(), [0, 1, 0])
    g = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [3.0, 6.0, 0.0]])       # identical and parallel
    alpha = solvers.min_norm_exact(g @ g.T, ones).numpy()
    assert alpha[2] == pytest.approx(0.0, abs=1e-12) and alpha.sum() == pytest.approx(1.0)
    g = np.array([[1e-6, 0.0], [-1e6, 0.0]])          # opposite: α ∝ (1e6, 1e-6), d = 0
    alpha = solvers.min_norm_exact(g @ g.T, np.ones(2)).numpy()
    np.testing.assert_allclose(alpha, np.array([1e6, 1e-6]) / (1e6 + 1e-6), rtol=1e-9)
    assert abs(alpha @ g[:, 0]) < 1e-12 * 1e6


def _cagrad_certificate(g, w, c):
    k = len(g)
    g0 = g.mean(0)
    rho = c * np.linalg.norm(g0)
    gw = w @ g
    d = g0 + rho * gw / np.linalg.norm(gw)
    level = gw @ g0 + rho * np.linalg.norm(gw)
    assert k == len(w)
    return _kkt_violation(g, w, d, Fraction(float(level)))


@pytest.mark.parametrize("t,lo,hi", CASES[:5])
def test_cagrad_dual_is_exact_for_badly_scaled_gradients(t, lo, hi):
    r = np.random.default_rng(7 + t * 10 + hi)
    for c in (0.2, 0.5, 2.0):
        g = _scaled_gradients(r, t, lo, hi)
        _, w = cagrad_coefficients(g @ g.T, np.ones(t), c, solver="exact")
        w = w.numpy()
        assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
        # float64 evaluation of F and d: relative round-off ~1e-16 × the largest norm ratio in play
        assert _cagrad_certificate(g, w, c) < 1e-7


def test_frank_wolfe_beyond_eight_tasks_meets_its_stated_duality_gap():
    r = np.random.default_rng(3)
    g = _scaled_gradients(r, 11, -2, 2, p=30)
    m = g @ g.T
    tol = 1e-8
    alpha = solvers.min_norm_frank_wolfe(m, np.ones(11), max_iter=20000, tol=tol).numpy()
    d = alpha @ g
    f = d @ d
    gap = f - (g @ d).min()                         # ≥ f(α) − f*, the stopping rule
    assert 0 <= gap <= tol * f * (1 + 1e-6)
    assert solvers.min_norm(m, np.ones(11)).shape == (11,)          # auto: Frank-Wolfe for T > 8


def test_nonneg_qp_matches_scipy_nnls_exact_and_coordinate_descent():
    from scipy.optimize import nnls

    r = np.random.default_rng(5)
    g = _scaled_gradients(r, 5, -3, 3, p=9)
    m = g @ g.T
    # min_{x≥0} ½xᵀMx − (Mu)ᵀx... use b = M e_i: x = argmin ‖Gᵀ(x + e_i)‖², the UPGrad dual.
    b = m.copy()
    for solver in ("exact", "cd"):
        x = solvers.nonneg_qp(m, b, np.ones(5), solver=solver, max_iter=400).numpy()
        for i in range(5):
            ref, _ = nnls(g.T, -g[i])
            np.testing.assert_allclose(g.T @ x[i], g.T @ ref, atol=1e-6 * np.linalg.norm(g[i]))


def test_nash_weights_solve_the_bargaining_equation():
    from scipy.optimize import least_squares

    r = np.random.default_rng(9)
    for lo, hi in ((0, 0), (-3, 3)):
        g = _scaled_gradients(r, 4, lo, hi, p=8)
        m = g @ g.T
        alpha = solvers.nash_weights(m, np.ones(4)).numpy()
        ref = least_squares(lambda a, m=m: a * (m @ a) - 1, np.ones(4) / np.sqrt(np.diag(m)),
                            bounds=(0, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15).x
        np.testing.assert_allclose(alpha, ref, rtol=1e-6)
        np.testing.assert_allclose(alpha * (m @ alpha), 1.0, rtol=1e-9)
    # orthogonal gradients: α_i = 1/‖g_i‖ (each task's share of the update has norm 1)
    np.testing.assert_allclose(solvers.nash_weights(np.diag([4.0, 1e-6, 1e6]), np.ones(3)).numpy(),
                               [0.5, 1e3, 1e-3], rtol=1e-9)


def test_solvers_run_under_xla():
    g = _scaled_gradients(np.random.default_rng(1), 3, 0, 6)
    m = tf.constant(g @ g.T)
    fn = tf.function(lambda m: (solvers.min_norm_exact(m, tf.ones(3)), solvers.nash_weights(m, tf.ones(3)),
                                solvers.nonneg_qp(m, m, tf.ones(3))), jit_compile=True)
    got = [x.numpy() for x in fn(m)]
    want = [solvers.min_norm_exact(m, tf.ones(3)).numpy(), solvers.nash_weights(m, tf.ones(3)).numpy(),
            solvers.nonneg_qp(m, m, tf.ones(3)).numpy()]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
