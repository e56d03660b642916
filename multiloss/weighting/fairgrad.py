"""FairGrad, fair resource allocation in multi-task learning (Ban & Ji, ICML 2024).

The shared update is d = Σ_i w_i g_i with w > 0 solving

    (G Gᵀ w)_i = w_i^{−1/α}     for every task i,

the optimality condition of the α-fair allocation of the tasks'
improvements ⟨g_i, d⟩ = w_i^{−1/α} (α = 1: proportional fairness, Nash-MTL's
equation; α → 0: the plain sum's utility; α → ∞: max-min fairness).  It is the
stationary point of the strictly convex

    f(w) = ½ wᵀMw + Σ_i h(w_i),   h(w) = −log w (α = 1),  −w^{1−1/α}/(1 − 1/α) (else),

found here by Newton steps with a backtracking line search that keeps w > 0,
on the diagonally scaled problem (:func:`fairgrad_weights`), so gradient
norms far apart are as easy as equal ones; w scales as s^{−2α/(α+1)} when the
gradients scale by s.  The authors' code and
LibMTL's ``FairGrad`` solve the same equation with scipy's ``least_squares``
from w = 1/T, bounded to w ≥ 0.
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from .base import GramWeighting, Params

_STEPS = 31            # step sizes t, t/2, …, t·2^−30 tried at once
_RIDGE = 1e-14         # on the scaled diagonal: keeps the systems of identical gradients solvable


class FairGradParams(Params):
    alpha: float = Field(1.0, gt=0, description="α of the α-fair utility (LibMTL's default 1.0).")
    iters: int = Field(50, ge=1, description="Newton iterations at most (it stops when no step lowers the "
                                             "residual).")


def fairgrad_weights(gram, present, alpha: float = 1.0, iters: int = 50):
    """w of FairGrad, ``(Mw)_i = w_i^{−1/α}`` over the present tasks (float64; 0 for absent ones).

    In β = w / c, c_i = M_ii^{−α/(α+1)} (the answer for orthogonal gradients), the equation reads
    R(β)_i = (CMCβ)_i / k_i − β_i^{−1/α} = 0 with k_i = c_i² M_ii: its diagonal terms are of order 1
    whatever the gradient norms.  Newton steps on R (its Jacobian is K⁻¹ times the symmetric positive
    definite CMC + K·diag(β^{−1/α−1}/α)), each the largest of t, t/2, …, t·2^−30 that keeps β > 0 and
    lowers ‖R‖² by a quarter of the linear prediction (the Newton step is a descent direction of it),
    t = min(1, 0.99 of the way to the boundary β = 0).
    """
    m = tf.cast(gram, tf.float64)
    finite = tf.math.is_finite(tf.reduce_sum(m))
    m = tf.math.multiply_no_nan(0.5 * (m + tf.transpose(m)), tf.cast(finite, tf.float64))
    p = tf.cast(present, tf.float64)
    n = m.shape[0]
    m = m * (p[:, None] * p[None, :]) + tf.linalg.diag(1.0 - p)          # absent tasks: decoupled
    diag = tf.linalg.diag_part(m)
    diag = tf.where(diag > 0, diag, 1.0)                                 # a zero gradient: c = 1
    c = tf.pow(diag, -alpha / (alpha + 1.0))
    ms = m * c[:, None] * c[None, :]
    k = diag * c * c
    ms = ms + tf.linalg.diag(_RIDGE * k)
    ts = tf.constant([2.0 ** -j for j in range(_STEPS)], tf.float64)
    one, inf = tf.constant(1.0, tf.float64), tf.constant(float("inf"), tf.float64)

    def residual(beta):                                                  # [..., T]
        return tf.linalg.matmul(beta, ms) / k - tf.pow(beta, -1.0 / alpha)

    def body(i, beta, _):
        r = residual(beta[None, :])[0]
        hess = ms + tf.linalg.diag(k * tf.pow(beta, -1.0 / alpha - 1.0) / alpha)
        pre = tf.math.rsqrt(tf.linalg.diag_part(hess))                   # Jacobi-scaled solve
        step = pre * tf.linalg.solve(hess * pre[:, None] * pre[None, :], (pre * k * r)[:, None])[:, 0]
        # at most 0.99 of the way to the boundary β = 0, then halvings of that
        bound = tf.reduce_min(tf.where(step > 0, beta / tf.where(step > 0, step, one), inf))
        tries = ts * tf.minimum(0.99 * bound, 1.0)
        trial = beta[None, :] - tries[:, None] * step[None, :]
        positive = tf.reduce_all(trial > 0, 1)
        norm2 = tf.reduce_sum(tf.square(residual(tf.where(trial > 0, trial, 1.0))), 1)
        ok = tf.logical_and(positive, norm2 <= (1.0 - 0.5 * tries) * tf.reduce_sum(tf.square(r)))
        first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
        t = tf.where(tf.reduce_any(ok), tf.gather(tries, first), 0.0 * one)
        return i + 1, beta - t * step, t > 0                             # no step lowers ‖R‖: converged

    _, beta, _ = tf.while_loop(lambda i, _, go: tf.logical_and(i < iters, go), body,
                               [tf.constant(0), tf.ones([n], tf.float64), tf.constant(True)])
    w = beta * c * p
    return tf.where(finite, w, tf.fill([n], tf.constant(float("nan"), tf.float64)))


class FairGrad(GramWeighting):
    name = "fairgrad"
    Params = FairGradParams
    reference = "Ban & Ji, Fair resource allocation in multi-task learning, ICML 2024 (arXiv:2402.15638)"

    def combine(self, gram, values, present, ctx):
        return tf.cast(fairgrad_weights(gram, present, self.params.alpha, self.params.iters), tf.float32)
