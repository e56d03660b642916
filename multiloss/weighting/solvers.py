"""Small simplex-constrained solvers on a Gram matrix, written with ``tf``.

They run inside the train step on the ``[T, T]`` Gram matrix ``M = G Gᵀ`` of
the per-task gradients (never on the gradients themselves), in float64.

* :func:`min_norm` — MGDA's problem ``min_{α∈Δ} αᵀMα``: the min-norm point
  of the convex hull of the gradients.
* :func:`cagrad_weights` — CAGrad's dual ``min_{w∈Δ} wᵀMb + ρ·√(wᵀMw)``.

``exact`` enumerates every support S of the simplex (2^T − 1 of them), solves
the KKT equations restricted to S in one batched linear solve, and keeps the
best feasible candidate: no loop, exact up to round-off, cheap for T ≤ 8
(255 systems of size ≤ 9).  ``frank_wolfe`` is the iterative solver of
Sener & Koltun (2018, Algorithm 2: Frank-Wolfe with exact line search), with
away steps so that it converges linearly, in a ``tf.while_loop``; it stops
at a relative duality gap of ``tol``.  ``auto`` picks ``exact`` for T ≤ 8.  ``present`` (0/1 per
task) restricts the simplex to the tasks present in the batch.
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

EXACT_MAX_TASKS = 8
_F64 = tf.float64


def _supports(num: int) -> np.ndarray:
    rows = [[1.0 if i in s else 0.0 for i in range(num)]
            for k in range(1, num + 1) for s in itertools.combinations(range(num), k)]
    return np.array(rows, "float64")


def _prepare(gram, present):
    m = tf.cast(gram, _F64)
    m = 0.5 * (m + tf.transpose(m))
    n = m.shape[0]
    p = tf.cast(present, _F64)
    # A tiny ridge keeps every restricted system solvable (collinear gradients).
    ridge = 1e-10 * (tf.linalg.trace(m) / n + 1e-30)
    return m + ridge * tf.eye(n, dtype=_F64), p


def _restricted(m, masks):
    """``(K, eye)`` for the KKT matrix of every support: M on S, identity off S."""
    n = m.shape[0]
    eye = tf.eye(n, dtype=_F64)
    inside = masks[:, :, None] * masks[:, None, :]
    return inside * m[None] + (1.0 - masks)[:, :, None] * eye[None]


def _pick(cands, objective, feasible):
    big = tf.constant(np.inf, _F64)
    obj = tf.where(feasible, objective, big)
    best = tf.argmin(obj)
    return tf.gather(cands, best)


def _normalise(w, present):
    w = tf.maximum(w, 0.0) * present
    return w / tf.maximum(tf.reduce_sum(w), 1e-300)


def min_norm_exact(gram, present):
    """``argmin_{α∈Δ(present)} αᵀMα`` by support enumeration (float64)."""
    m, p = _prepare(gram, present)
    n = m.shape[0]
    masks = tf.constant(_supports(n))
    s = masks.shape[0]
    a = _restricted(m, masks)
    kkt = tf.concat([tf.concat([a, masks[:, :, None]], 2),
                     tf.concat([masks[:, None, :], tf.zeros([s, 1, 1], _F64)], 2)], 1)
    rhs = tf.concat([tf.zeros([s, n, 1], _F64), tf.ones([s, 1, 1], _F64)], 1)
    sol = tf.linalg.solve(kkt, rhs)[:, :n, 0] * masks
    allowed = tf.reduce_all(masks <= p[None, :], axis=1)
    feasible = tf.logical_and(allowed, tf.reduce_all(sol >= -1e-9, axis=1))
    value = tf.einsum("si,ij,sj->s", sol, m, sol)
    return _normalise(_pick(sol, value, feasible), p)


def _frank_wolfe(grad_fn, line_fn, gap_scale_fn, p, max_iter: int, tol: float):
    """Frank-Wolfe on the simplex of present tasks, with away steps.

    Each iteration moves toward the vertex with the smallest gradient (a
    Frank-Wolfe step, as in Sener & Koltun's Algorithm 2) or away from the
    vertex in use with the largest gradient, whichever gap is larger, with an
    exact line search; away steps make it converge linearly (Lacoste-Julien &
    Jaggi, 2015).  Stops when the Frank-Wolfe duality gap is below
    ``tol × gap_scale_fn(w)`` or after ``max_iter`` iterations.
    """
    n = p.shape[0]
    w0 = p / tf.maximum(tf.reduce_sum(p), 1.0)
    inf = tf.constant(np.inf, _F64)

    def body(i, w, _):
        grad = grad_fn(w)
        t = tf.argmin(tf.where(p > 0, grad, inf))
        a = tf.argmax(tf.where(w > 0, grad, -inf))
        gw = tf.tensordot(grad, w, 1)
        gap_fw = gw - tf.gather(grad, t)
        gap_away = tf.gather(grad, a) - gw
        use_fw = gap_fw >= gap_away
        w_a = tf.gather(w, a)
        u = tf.where(use_fw, tf.one_hot(t, n, dtype=_F64) - w, w - tf.one_hot(a, n, dtype=_F64))
        gamma_max = tf.where(use_fw, tf.constant(1.0, _F64), w_a / tf.maximum(1.0 - w_a, 1e-300))
        gamma = line_fn(w, u, gamma_max)
        new = tf.maximum(w + gamma * u, 0.0) * p
        new = new / tf.maximum(tf.reduce_sum(new), 1e-300)
        return i + 1, new, gap_fw <= tol * gap_scale_fn(w)

    _, w, _ = tf.while_loop(lambda i, w, done: tf.logical_and(i < max_iter, tf.logical_not(done)),
                            body, [tf.constant(0), w0, tf.constant(False)])
    return _normalise(w, p)


def min_norm_frank_wolfe(gram, present, max_iter: int = 250, tol: float = 1e-6):
    """Sener & Koltun (2018), Algorithm 2 (Frank-Wolfe, exact line search), with away steps."""
    m, p = _prepare(gram, present)

    def line(w, u, gamma_max):
        # min over γ of (w + γu)ᵀM(w + γu): γ = −uᵀMw / uᵀMu (Algorithm 1 for a segment).
        mu = tf.linalg.matvec(m, u)
        curv, slope = tf.tensordot(u, mu, 1), tf.tensordot(mu, w, 1)
        best = tf.where(curv > 0, -slope / tf.maximum(curv, 1e-300),
                        tf.where(slope < 0, gamma_max, tf.constant(0.0, _F64)))
        return tf.clip_by_value(best, 0.0, gamma_max)

    return _frank_wolfe(lambda w: tf.linalg.matvec(m, w), line,
                        lambda w: tf.einsum("i,ij,j->", w, m, w), p, max_iter, tol)


def min_norm(gram, present, solver: str = "auto", max_iter: int = 250, tol: float = 1e-6):
    """MGDA's min-norm weights α (float64, on the simplex of present tasks)."""
    if solver == "exact" or (solver == "auto" and gram.shape[0] <= EXACT_MAX_TASKS):
        return min_norm_exact(gram, present)
    return min_norm_frank_wolfe(gram, present, max_iter, tol)


def _cagrad_objective(w, m, a, rho):
    quad = tf.einsum("...i,ij,...j->...", w, m, w)
    return tf.einsum("...i,i->...", w, a) + rho * tf.sqrt(tf.maximum(quad, 0.0))


def cagrad_exact(gram, b, rho, present):
    """``argmin_{w∈Δ} wᵀMb + ρ√(wᵀMw)`` by support enumeration.

    On a support S the KKT conditions give ``w ∝ μ·z − y`` with
    ``z = M_S⁻¹1``, ``y = M_S⁻¹(Mb)_S`` and μ a root of
    ``(1ᵀz)μ² − 2(1ᵀy)μ + (Mb)_Sᵀy − ρ² = 0``; both roots are candidates.
    """
    m, p = _prepare(gram, present)
    n = m.shape[0]
    a = tf.linalg.matvec(m, tf.cast(b, _F64))
    rho = tf.cast(rho, _F64)
    masks = tf.constant(_supports(n))
    sys = _restricted(m, masks)
    rhs = tf.stack([masks, masks * a[None, :]], axis=2)          # [S, n, 2]
    zy = tf.linalg.solve(sys, rhs) * masks[:, :, None]
    z, y = zy[..., 0], zy[..., 1]
    one_z = tf.reduce_sum(z, 1)
    one_y = tf.reduce_sum(y, 1)
    a_y = tf.reduce_sum(y * a[None, :], 1)
    disc = tf.maximum(one_y ** 2 - one_z * (a_y - rho ** 2), 0.0)
    cands = []
    for sign in (1.0, -1.0):
        mu = (one_y + sign * tf.sqrt(disc)) / one_z
        v = mu[:, None] * z - y
        total = tf.reduce_sum(v, 1, keepdims=True)
        cands.append(tf.math.divide_no_nan(v, total) * tf.cast(total > 0, _F64))
    # Vertices of the simplex are candidates too (they need no interior KKT point).
    cands.append(tf.eye(n, dtype=_F64))
    w = tf.concat(cands, 0)
    allowed = tf.reduce_all(tf.logical_or(w <= 1e-12, p[None, :] > 0), axis=1)
    on_simplex = tf.logical_and(tf.reduce_all(w >= -1e-9, 1),
                                tf.abs(tf.reduce_sum(w, 1) - 1.0) < 1e-6)
    feasible = tf.logical_and(allowed, on_simplex)
    return _normalise(_pick(w, _cagrad_objective(w, m, a, rho), feasible), p)


def cagrad_frank_wolfe(gram, b, rho, present, max_iter: int = 250, tol: float = 1e-6):
    """Frank-Wolfe (with away steps) on CAGrad's dual, with a closed-form line search."""
    m, p = _prepare(gram, present)
    a = tf.linalg.matvec(m, tf.cast(b, _F64))
    rho = tf.cast(rho, _F64)
    zero = tf.constant(0.0, _F64)

    def grad(w):
        mw = tf.linalg.matvec(m, w)
        return a + rho * mw / tf.sqrt(tf.maximum(tf.tensordot(w, mw, 1), 1e-300))

    def line(w, u, gamma_max):
        # F(w + γu) = const + kγ + ρ√(Aγ² + 2Bγ + C) is convex in γ; F'(γ) = 0 in closed form.
        mw, mu = tf.linalg.matvec(m, w), tf.linalg.matvec(m, u)
        big_a, big_b, c = tf.tensordot(u, mu, 1), tf.tensordot(u, mw, 1), tf.tensordot(w, mw, 1)
        k = tf.tensordot(u, a, 1)
        d = rho ** 2 * big_a - k ** 2
        root = (-big_b - k * tf.sqrt(tf.maximum(big_a * c - big_b ** 2, 0.0) / tf.maximum(d, 1e-300))) \
            / tf.maximum(big_a, 1e-300)
        # Without an interior root F is monotone along u: go to the end where it is smaller.
        edge = tf.where(k < 0, gamma_max, zero)
        return tf.clip_by_value(tf.where(tf.logical_and(d > 0, big_a > 0), root, edge), 0.0, gamma_max)

    def scale(w):
        mw = tf.linalg.matvec(m, w)
        return tf.abs(tf.tensordot(w, a, 1)) + rho * tf.sqrt(tf.maximum(tf.tensordot(w, mw, 1), 0.0)) + 1e-300

    return _frank_wolfe(grad, line, scale, p, max_iter, tol)


def cagrad_weights(gram, b, rho, present, solver: str = "auto", max_iter: int = 250, tol: float = 1e-6):
    """CAGrad's dual weights w (float64, on the simplex of present tasks)."""
    if solver == "exact" or (solver == "auto" and gram.shape[0] <= EXACT_MAX_TASKS):
        return cagrad_exact(gram, b, rho, present)
    return cagrad_frank_wolfe(gram, b, rho, present, max_iter, tol)
