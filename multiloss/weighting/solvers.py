"""Small simplex-constrained solvers on a Gram matrix, written with ``tf``.

They run inside the train step on the ``[T, T]`` Gram matrix ``M = G Gᵀ`` of
the per-task gradients (never on the gradients themselves), in float64.

* :func:`min_norm` — MGDA's problem ``min_{α∈Δ} αᵀMα``: the min-norm point
  of the convex hull of the gradients.
* :func:`cagrad_weights` — CAGrad's dual ``min_{w∈Δ} wᵀMb + ρ·√(wᵀMw)``
  (:func:`cagrad_direction`: with the coefficients of its update).
* :func:`nonneg_qp` — ``min_{x≥0} ½xᵀAx + bᵀx`` for several b (UPGrad's projections).
* :func:`nash_weights` — Nash-MTL's bargaining solution ``α ⊙ (Mα) = 1``.
* :func:`simplex_projection` — the Euclidean projection onto the simplex (MoCo, MoDo, SDMGrad).

**Scale.**  Every solver first normalises the Gram matrix by its diagonal:
``M̃ = DMD`` with ``D = diag(1/‖g_i‖)``, so M̃ has a unit diagonal whatever
the gradient norms (1e-6 and 1e6 alike), and solves in the variables
``β = D⁻¹α``, mapping back at the end.  On the simplex ``Σα = 1`` becomes
``dᵀβ = 1`` (``d_i = 1/‖g_i‖``); the restricted KKT systems are then
``M̃_S z = d_S`` (MGDA) — well conditioned unless gradients are collinear.
A zero gradient (``M_ii = 0``) is an exact answer of MGDA by itself (its
vertex has norm 0) and is returned as such; a ridge of 1e-14 on the *unit*
diagonal keeps the systems of collinear or identical gradients solvable: it
perturbs task i's term by 1e-14·α_i²‖g_i‖², a relative error at round-off
level on every scale (the old ridge, 1e-10 × the mean diagonal, swamped a
task 1e4–1e6 times smaller than the others).

``exact`` enumerates every support S of the simplex (2^T − 1 of them), solves
the KKT equations restricted to S in one batched linear solve, and keeps the
best feasible candidate: no loop, exact to float64 round-off, cheap for
T ≤ 8 (255 systems of size ≤ 8).

**Warm start** (:func:`min_norm_warm`, :func:`cagrad_warm`; the MGDA and
CAGrad strategies keep the last support in a variable).  The optimal
support rarely changes between steps, so the KKT point on the previous
support is computed first (one solve of size T) and *verified*: primal
feasibility as in the enumeration (weights ≥ 0, support ⊆ present tasks;
CAGrad: a real root of the quadratic in its multiplier) and dual feasibility
for every present task off the support (MGDA: ⟨g_i, d⟩ ≥ ‖d‖²; CAGrad:
⟨g_i, d⟩ ≥ F(w)).  The problems are convex, so a point passing both is
optimal; otherwise the enumeration runs, in the false branch of a ``tf.cond``
(graph mode and XLA run only the branch taken), as one non-inlined call.  The
dual test has no tolerance: a spurious failure costs one enumeration, while
a tolerance above round-off would override the ridge's choice among
identical gradients.  The answer is the enumeration's, except where several
points are optimal to round-off (identical gradient rows): the split of
weight between tied tasks may then differ, the combined gradient does not.
A Gram matrix with a NaN or Inf (a step the non-finite guard skips) gives
NaN weights rather than an error from a solve.

``frank_wolfe`` is the iterative solver of
Sener & Koltun (2018, Algorithm 2: Frank-Wolfe with exact line search), with
away steps so that it converges linearly, in a ``tf.while_loop``; it stops
when the Frank-Wolfe duality gap — an upper bound on ``f(α) − f*`` — is at
most ``tol × f(α)`` (a relative suboptimality of ``tol``), or after
``max_iter`` iterations.  ``auto`` picks ``exact`` for T ≤ 8.  ``present``
(0/1 per task) restricts the simplex to the tasks present in the batch.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..spec.lazy import tf

EXACT_MAX_TASKS = 8
RIDGE = 1e-14
_F64 = "float64"


def _supports(num: int, empty: bool = False) -> np.ndarray:
    rows = [[1.0 if i in s else 0.0 for i in range(num)]
            for k in range(0 if empty else 1, num + 1) for s in itertools.combinations(range(num), k)]
    return np.array(rows, "float64")


def _scaled(gram, present):
    """``(M̃, d, p, zero)``: the unit-diagonal Gram matrix, d = 1/‖g‖ (1 for a zero gradient),
    the present mask, and which present tasks have a zero gradient."""
    m = tf.cast(gram, _F64)
    # A non-finite Gram matrix (a step the non-finite guard skips) must not make a solve raise
    # ("not invertible"): it is solved as if it were 0, and d carries a NaN.  (A float64 sum of
    # float32 entries cannot overflow: it is non-finite exactly when an entry is.)
    finite = tf.math.is_finite(tf.reduce_sum(m))
    m = tf.math.multiply_no_nan(m, tf.cast(finite, _F64))      # 0 (NaN and Inf included) when not finite
    p = tf.cast(present, _F64)
    diag = tf.linalg.diag_part(m)
    pos = diag > 0
    d = tf.math.rsqrt(tf.where(pos, diag, 1.0))
    ms = 0.5 * (m + tf.transpose(m)) * _column(d) * d           # symmetrised, then D·M·D
    zero = tf.logical_and(tf.logical_not(pos), p > 0)
    return ms + tf.constant(RIDGE * np.eye(m.shape[0]), _F64), tf.where(finite, d, np.nan), p, zero


def _column(x):
    return tf.reshape(x, [-1, 1])


def _prepare(gram, present):
    """The Gram matrix as float64 (symmetrised) and the present mask (Frank-Wolfe)."""
    m = tf.cast(gram, _F64)
    return 0.5 * (m + tf.transpose(m)), tf.cast(present, _F64)


def _restricted(m, masks):
    """The KKT matrix of each support (0/1 ``masks``, ``[n]`` or ``[S, n]``): M on S × S, the identity
    elsewhere (``[n, n]`` or ``[S, n, n]``)."""
    inside = masks[..., :, None] * masks[..., None, :] > 0
    return tf.where(inside, m, tf.eye(m.shape[0], dtype=_F64))


def _pick(cands, objective, feasible):
    big = tf.constant(np.inf, _F64)
    obj = tf.where(feasible, objective, big)
    best = tf.argmin(obj)
    return tf.gather(cands, best)


def _normalise(w, present):
    w = tf.maximum(w, 0.0) * present
    return w / tf.maximum(tf.reduce_sum(w), 1e-300)


def _min_norm_enumerate(ms, d, p):
    """The best feasible KKT point over every support (before :func:`_normalise`)."""
    masks = tf.constant(_supports(ms.shape[0]))
    z = tf.linalg.solve(_restricted(ms, masks), (masks * d[None, :])[:, :, None])[:, :, 0] * masks
    dz = tf.reduce_sum(z * d[None, :], 1)
    alpha = tf.math.divide_no_nan(z, dz[:, None]) * d[None, :]
    allowed = tf.reduce_all(masks <= p[None, :], axis=1)
    feasible = tf.logical_and(tf.logical_and(allowed, dz > 0), tf.reduce_all(alpha >= 0.0, axis=1))
    value = tf.math.reciprocal_no_nan(dz)                   # βᵀM̃β = zᵀd/(dᵀz)² = 1/dᵀz
    return _pick(alpha, value, feasible)


def _zero_vertex(alpha, zero):
    """A zero gradient is the min-norm point by itself: the first one's vertex where there is one."""
    first_zero = tf.one_hot(tf.argmax(tf.cast(zero, tf.int32)), zero.shape[0], dtype=_F64)
    return tf.where(tf.reduce_any(zero), first_zero, alpha)


def min_norm_exact(gram, present):
    """``argmin_{α∈Δ(present)} αᵀMα`` by support enumeration on the scaled problem (float64).

    In β = D⁻¹α: ``min βᵀM̃β`` s.t. ``dᵀβ = 1, β ≥ 0``; on a support S the KKT
    point is ``β_S = z/(d_Sᵀz)``, ``M̃_S z = d_S``.
    """
    ms, d, p, zero = _scaled(gram, present)
    return _zero_vertex(_normalise(_min_norm_enumerate(ms, d, p), p), zero)


def min_norm_warm(gram, present, support):
    """:func:`min_norm_exact` warm-started from a guessed support: ``(α, support of α, verified)``.

    The KKT point on ``support`` (0/1 per task, e.g. the previous step's) is one
    small solve; it is the optimum iff it is primal feasible (the same test as
    the enumeration's: S ⊆ present, dᵀz > 0, α ≥ 0) and dually feasible:
    ``(M̃z)_i ≥ d_i`` (i.e. ⟨g_i, d⟩ ≥ ‖d‖²) for every present task off S.  The
    problem is convex, so a point passing both is optimal; only when the test
    fails (``verified`` false) does the full enumeration run, inside a
    ``tf.cond`` (graph mode runs the branch taken).  The comparison has no
    tolerance: a failed test costs only the enumeration, whereas a tolerance
    above round-off would override the 1e-14 ridge's choice among identical
    gradients.
    """
    ms, d, p, zero = _scaled(gram, present)
    s = tf.cast(support, _F64)
    # The KKT point on S, as in _min_norm_enumerate (written for one support: fewer, smaller ops).  The
    # KKT matrix is the identity off S and the right-hand side 0 there, so z is exactly 0 off S.
    z = tf.reshape(tf.linalg.solve(_restricted(ms, s), _column(s * d)), [-1])
    dz = tf.reduce_sum(z * d)
    alpha = z * (d / dz)
    # Per task: primal (α ≥ 0, S ⊆ present) and dual ((M̃z)_i ≥ d_i off S, for present tasks).
    dual = tf.logical_or(tf.reduce_sum(ms * z, 1) >= d, tf.logical_or(s > 0, p <= 0))
    each = tf.logical_and(tf.logical_and(alpha >= 0.0, s <= p), dual)
    verified = tf.logical_and(tf.reduce_all(each), dz > 0)
    # The warm point is on the simplex already (Σα = dᵀz/dᵀz); the rest only where the check fails.
    alpha = tf.cond(tf.logical_and(verified, tf.logical_not(tf.reduce_any(zero))), lambda: alpha,
                    lambda: _fallback(min_norm_exact, gram, present))
    return alpha, tf.cast(alpha > 0, support.dtype), verified


def _fallback(fn, *args):
    """``fn(*args)`` as one function call in the graph (the enumeration, in the false branch of the warm
    start's ``tf.cond``): a branch not taken costs the executor a step per node, ≈ 10 µs per train step
    for an inlined enumeration on a 2-core CPU, and a single call node costs one."""
    if tf.executing_eagerly():
        return fn(*args)
    return tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})(
        *[tf.convert_to_tensor(a) for a in args])


def _frank_wolfe(grad_fn, line_fn, gap_scale_fn, p, max_iter: int, tol: float):
    """Frank-Wolfe on the simplex of present tasks, with away steps.

    Each iteration moves toward the vertex with the smallest gradient (a
    Frank-Wolfe step, as in Sener & Koltun's Algorithm 2) or away from the
    vertex in use with the largest gradient, whichever gap is larger, with an
    exact line search; away steps make it converge linearly (Lacoste-Julien &
    Jaggi, 2015).  Returns the first iterate whose Frank-Wolfe duality gap
    ``∇f(w)ᵀw − min_i ∇f(w)_i`` (≥ f(w) − f*) is at most ``tol × gap_scale_fn(w)``,
    or the iterate after ``max_iter`` iterations.
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
        done = gap_fw <= tol * gap_scale_fn(w)        # w itself meets the stated gap: keep it
        return i + 1, tf.where(done, w, new), done

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


def uses_exact(solver: str, num: int) -> bool:
    """Whether ``solver`` (``auto``, ``exact`` or ``frank_wolfe``) means support enumeration for ``num`` tasks."""
    return solver == "exact" or (solver == "auto" and num <= EXACT_MAX_TASKS)


def min_norm(gram, present, solver: str = "auto", max_iter: int = 250, tol: float = 1e-6, support=None):
    """MGDA's min-norm weights α (float64, on the simplex of present tasks).

    ``support``: a variable holding the exact solver's warm start (0/1 per task,
    :func:`min_norm_warm`); it is read and then set to this answer's support.
    """
    if uses_exact(solver, gram.shape[0]):
        if support is None:
            return min_norm_exact(gram, present)
        alpha, new, _ = min_norm_warm(gram, present, support)
        support.assign(new)
        return alpha
    return min_norm_frank_wolfe(gram, present, max_iter, tol)


def _cagrad_problem(gram, b, rho, present):
    """``(M̃, d, p, ã, ρ)``: the scaled problem, with ã = D·M·b.

    (ã_i = ⟨g_i, g_0⟩/‖g_i‖ and ρ = c‖g_0‖ are both of the order of ‖g_0‖, which a float32
    Gram matrix bounds far inside the float64 range: no further scaling is needed.)
    """
    ms, d, p, _ = _scaled(gram, present)
    # D·M·b = M̃·(D⁻¹b) (M̃ without its ridge would do as well; the ridge is at round-off level)
    return ms, d, p, tf.reduce_sum(ms * (tf.cast(b, _F64) / d), 1), tf.cast(rho, _F64)


def _cagrad_candidates(ms, d, p, a_s, rho_s, masks):
    """``(w, objective, feasible)`` of the KKT points on each support (row of ``masks``), both roots:
    ``[2S, n]``, ``[2S]``, ``[2S]`` (row 2k: the root μ₊ on support k, row 2k + 1: μ₋)."""
    n = ms.shape[0]
    dm = masks * d[None, :]
    rhs = tf.stack([dm, masks * a_s[None, :]], axis=2)                        # [S, n, 2]
    zy = tf.linalg.solve(_restricted(ms, masks), rhs) * masks[:, :, None]
    dots = tf.einsum("sn,snk->sk", dm, zy)                                     # dᵀz, dᵀy
    d_z, d_y = dots[:, 0], dots[:, 1]
    a_y = tf.einsum("n,sn->s", a_s, zy[..., 1])
    root = tf.sqrt(tf.maximum(d_y ** 2 - d_z * (a_y - rho_s ** 2), 0.0))
    mu = tf.math.divide_no_nan(d_y[:, None] + tf.constant([1.0, -1.0], _F64)[None, :] * root[:, None],
                               d_z[:, None])                                    # both roots, [S, 2]
    v = tf.reshape(mu[:, :, None] * zy[:, None, :, 0] - zy[:, None, :, 1], [-1, n])
    total = tf.reshape(mu * d_z[:, None] - d_y[:, None], [-1])               # dᵀv
    w = tf.math.divide_no_nan(v, total[:, None]) * d[None, :] * tf.cast(total > 0, _F64)[:, None]
    # The objective from scalars: with β = v/dᵀv, vᵀM̃v = μ²dᵀz − 2μdᵀy + ãᵀy and ãᵀv = μdᵀy − ãᵀy.
    mu_f = tf.reshape(mu, [-1])
    dz2, dy2, ay2 = (tf.repeat(x, 2) for x in (d_z, d_y, a_y))
    quad = tf.math.divide_no_nan(mu_f ** 2 * dz2 - 2.0 * mu_f * dy2 + ay2, total ** 2)
    lin = tf.math.divide_no_nan(mu_f * dy2 - ay2, total)
    return w, lin + rho_s * tf.sqrt(tf.maximum(quad, 0.0)), _cagrad_feasible(w, p)


def _cagrad_feasible(w, p):
    feasible = tf.reduce_all(tf.logical_and(w >= 0.0, tf.logical_or(w <= 0.0, p[None, :] > 0)), axis=1)
    return tf.logical_and(feasible, tf.abs(tf.reduce_sum(w, 1) - 1.0) < 1e-9)


def _cagrad_enumerate(ms, d, p, a_s, rho_s):
    """The best feasible candidate over every support and vertex (before :func:`_normalise`)."""
    n = ms.shape[0]
    w, obj, _ = _cagrad_candidates(ms, d, p, a_s, rho_s, tf.constant(_supports(n)))
    # Vertices of the simplex are candidates too (they need no interior KKT point): β = e_i/d_i.
    w = tf.concat([w, tf.eye(n, dtype=_F64)], 0)
    obj = tf.concat([obj, a_s / d + rho_s * tf.sqrt(tf.maximum(tf.linalg.diag_part(ms) / d ** 2, 0.0))], 0)
    return _pick(w, obj, _cagrad_feasible(w, p))


def cagrad_exact(gram, b, rho, present):
    """``argmin_{w∈Δ} wᵀMb + ρ√(wᵀMw)`` by support enumeration on the scaled problem.

    In β = D⁻¹w (``dᵀβ = 1``) with ã = D·Mb, the KKT conditions on a support S
    give ``β ∝ μ·z − y`` with ``z = M̃_S⁻¹d_S``, ``y = M̃_S⁻¹ã_S`` and μ a root of
    ``(dᵀz)μ² − 2(dᵀy)μ + ãᵀy − ρ² = 0``; both roots are candidates, and so are
    the vertices.
    """
    ms, d, p, a_s, rho_s = _cagrad_problem(gram, b, rho, present)
    return _normalise(_cagrad_enumerate(ms, d, p, a_s, rho_s), p)


def cagrad_warm(gram, b, rho, present, support):
    """:func:`cagrad_exact` warm-started from a guessed support: ``(w, u, support of w, verified)``,
    with ``u = (ρ/‖g_w‖)·w`` (see :func:`cagrad_direction`).

    The KKT point β ∝ v = μz − y on ``support`` (root μ₊; one small solve) is the
    optimum iff the quadratic in μ has a real root (then vᵀM̃v = ρ²), the point
    passes the enumeration's feasibility test (w ≥ 0 on present tasks, Σw = 1)
    and, for every present task off S, ``∇F(β)_i ≥ μ·d_i`` (⟨g_i, d⟩ ≥ F(w)):
    F is convex; with vᵀM̃v = ρ² the gradient is ``∇F(β) = ã + M̃v`` and μ = F(β)
    is the multiplier of dᵀβ = 1 (``ã_S + M̃_S v_S = μ d_S`` on S).  There
    ‖g_w‖ = ρ/dᵀv, so u = ρ·w/‖g_w‖ = d∘v with no further product.  Otherwise
    (``verified`` false) the full enumeration runs, inside a ``tf.cond``.  No
    tolerance, as in :func:`min_norm_warm`.
    """
    ms, d, p, a_s, rho_s = _cagrad_problem(gram, b, rho, present)
    s = tf.cast(support, _F64)
    # The KKT point on S with the root μ₊, as in _cagrad_candidates (written for one support; z and y
    # are exactly 0 off S, where the KKT matrix is the identity and the right-hand side 0).
    da = tf.stack([d, a_s], 1)
    zy = tf.linalg.solve(_restricted(ms, s), da * _column(s))
    z, y = tf.unstack(zy, axis=1)
    d_z, d_y, _, a_y = tf.unstack(tf.reshape(tf.matmul(da, zy, transpose_a=True), [4]))   # dᵀz, dᵀy, ·, ãᵀy
    disc = d_y * d_y - d_z * (a_y - rho_s * rho_s)
    # Without a real root (disc < 0: not a KKT point) or with an empty S, μ and dᵀv are NaN: not verified.
    mu = (d_y + tf.sqrt(disc)) / d_z
    v = mu * z - y
    total = mu * d_z - d_y                                                     # dᵀv, so Σw = 1
    dv = d * v
    w = dv / total
    # Per task: primal (w ≥ 0, S ⊆ present) and dual (∇F_i ≥ μ d_i off S, for present tasks).
    dual = tf.logical_or(a_s + tf.reduce_sum(ms * v, 1) >= mu * d, tf.logical_or(s > 0, p <= 0))
    each = tf.logical_and(tf.logical_and(w >= 0.0, s <= p), dual)
    verified = tf.logical_and(tf.reduce_all(each), total > 0)

    def enumerate_(gram, b, rho, present):
        best = cagrad_exact(gram, b, rho, present)
        return best, _beyond_mean(gram, rho, best)

    w, u = tf.cond(verified, lambda: (w, dv), lambda: _fallback(enumerate_, gram, b, rho, present))
    return w, u, tf.cast(w > 0, support.dtype), verified


def _beyond_mean(gram, rho, w):
    """``u = (ρ/‖g_w‖)·w`` from the Gram matrix (0 where ρ or g_w is 0)."""
    gw = tf.sqrt(tf.maximum(tf.einsum("i,ij,j->", w, tf.cast(gram, _F64), w), 0.0))
    return tf.math.divide_no_nan(tf.cast(rho, _F64), gw) * w


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
    """CAGrad's dual weights w (float64, on the simplex of present tasks), without a warm start."""
    if uses_exact(solver, gram.shape[0]):
        return cagrad_exact(gram, b, rho, present)
    return cagrad_frank_wolfe(gram, b, rho, present, max_iter, tol)


def cagrad_direction(gram, b, rho, present, solver: str = "auto", max_iter: int = 250, tol: float = 1e-6,
                     support=None):
    """``(w, u)``: CAGrad's dual weights and ``u = (ρ/‖g_w‖)·w``, so that its direction is
    ``g_0 + Σ u_i g_i`` (float64).  ``support``: the exact solver's warm start, as in :func:`min_norm`."""
    if support is not None and uses_exact(solver, gram.shape[0]):
        w, u, new, _ = cagrad_warm(gram, b, rho, present, support)
        support.assign(new)
        return w, u
    w = cagrad_weights(gram, b, rho, present, solver, max_iter, tol)
    return w, _beyond_mean(gram, rho, w)


def nonneg_qp(gram, b, present, solver: str = "auto", max_iter: int = 500):
    """``argmin_{x≥0} ½xᵀMx + b_kᵀx`` for each row b_k of ``b`` ``[K, T]`` (float64, ``[K, T]``).

    Tasks not present are held at 0.  ``exact`` (T ≤ 8 under ``auto``) enumerates
    the 2^T active sets on the unit-diagonal scaled problem (x = Dξ) and keeps
    the feasible candidate of least objective; otherwise projected coordinate
    descent (``max_iter`` sweeps), which converges for a positive semidefinite M.
    """
    ms, d, p, _ = _scaled(gram, present)
    bs = tf.cast(b, _F64) * d[None, :]                      # ½ξᵀM̃ξ + (Db)ᵀξ
    n = ms.shape[0]
    if uses_exact(solver, n):
        masks = tf.constant(_supports(n, empty=True)) * p[None, :]
        a = _restricted(ms, masks)                           # [S, n, n]
        rhs = -tf.transpose(bs)[None, :, :] * masks[:, :, None]      # [S, n, K]
        xi = tf.linalg.solve(a, rhs) * masks[:, :, None]     # [S, n, K]
        feasible = tf.reduce_all(xi >= 0.0, axis=1)          # [S, K]
        # ½ξᵀM̃ξ + b̃ᵀξ = ½b̃ᵀξ at a KKT point of S (M̃_S ξ_S = −b̃_S, ξ = 0 off S): no quadratic form
        # over the 2^T candidates (a three-operand einsum cost half the solver's time).
        obj = 0.5 * tf.reduce_sum(xi * tf.transpose(bs)[None, :, :], axis=1)
        obj = tf.where(feasible, obj, tf.constant(np.inf, _F64))
        best = tf.argmin(obj, axis=0)                        # [K]
        xi = tf.transpose(tf.gather(tf.transpose(xi, [2, 0, 1]), best, axis=1, batch_dims=1))  # [n, K]
        return tf.transpose(xi) * d[None, :]
    xi = tf.zeros_like(bs)

    def sweep(i, xi):
        for j in range(n):
            g = tf.linalg.matvec(xi, ms[j]) + bs[:, j]        # ∂/∂ξ_j for every k
            col = tf.maximum(xi[:, j] - g / ms[j, j], 0.0) * p[j]
            xi = tf.concat([xi[:, :j], col[:, None], xi[:, j + 1:]], 1)
        return i + 1, xi

    _, xi = tf.while_loop(lambda i, _: i < max_iter, sweep, [tf.constant(0), xi])
    return xi * d[None, :]


def nonneg_qp_warm(gram, b, present, support, sweeps: int | None = None):
    """:func:`nonneg_qp` (exact) warm-started from guessed supports: ``(x, support of x, verified)``.

    ``support`` ``[K, T]`` (0/1, e.g. the previous step's) gives, per row k, the
    coordinates free to be positive.  The KKT point on a support is one small
    solve per row (``K`` systems, where the enumeration solves ``2^T``); it is the
    optimum iff it is primal feasible (ξ ≥ 0 on S) and dually feasible: the
    gradient ``(M̃ξ + b̃)_j ≥ 0`` for every present j off S.  The problem is
    convex, so a point passing both is optimal.  A row that fails moves to the
    primal-dual active set {j : ξ_j − (M̃ξ + b̃)_j > 0} (Hintermüller, Ito &
    Kunisch 2002), for at most ``sweeps`` (default T) rounds; only if a row still
    fails does the enumeration run, inside a ``tf.cond``, as in
    :func:`min_norm_warm` (no tolerance, for the same reason).  Every answer is
    a verified KKT point or the enumeration's.
    """
    ms, d, p, _ = _scaled(gram, present)
    bs = tf.cast(b, _F64) * d[None, :]
    n = ms.shape[0]
    held = p[None, :] <= 0                                   # absent tasks are held at 0

    def kkt(s):
        xi = tf.linalg.solve(_restricted(ms, s), (-bs * s)[:, :, None])[:, :, 0] * s      # [K, n]
        grad = tf.linalg.matmul(xi, ms) + bs                 # M̃ symmetric: row k is M̃ξ_k + b̃_k
        ok = tf.logical_and(xi >= 0.0, tf.logical_or(grad >= 0.0, tf.logical_or(s > 0, held)))
        return xi, grad, tf.reduce_all(ok)

    def body(i, s, xi, grad, ok):
        s = tf.cast(tf.logical_and(xi - grad > 0.0, tf.logical_not(held)), _F64)
        return (i + 1, s, *kkt(s))

    s0 = tf.cast(support, _F64) * p[None, :]
    _, _, xi, _, verified = tf.while_loop(
        lambda i, s, xi, grad, ok: tf.logical_and(i < (n if sweeps is None else sweeps), tf.logical_not(ok)),
        body, [tf.constant(0), s0, *kkt(s0)])
    x = tf.cond(verified, lambda: xi * d[None, :],
                lambda: _fallback(lambda g, bb, pp: nonneg_qp(g, bb, pp, "exact"), gram, b, present))
    return x, tf.cast(x > 0, support.dtype), verified


def nash_weights(gram, present, iters: int = 30):
    """Nash-MTL's bargaining weights: the α > 0 with ``α_i (Mα)_i = 1`` for present tasks (float64).

    It is the minimiser of the self-concordant ``½αᵀMα − Σ log α_i``, found by
    damped Newton steps (step ``1/(1 + decrement)``, which stays in α > 0 and
    converges quadratically) on the unit-diagonal problem in β = D⁻¹α (the
    same function up to a constant).  Absent tasks get 0.  For singular M (a
    Pareto-stationary point: the function is unbounded) the 1e-14 ridge keeps
    α finite but large.
    """
    ms, d, p, _ = _scaled(gram, present)
    n = ms.shape[0]
    # Absent tasks: decouple them (identity rows), then zero them at the end.
    keep = p[:, None] * p[None, :]
    ms = ms * keep + tf.linalg.diag(1.0 - p)
    beta = tf.ones([n], _F64)

    def body(i, beta):
        grad = tf.linalg.matvec(ms, beta) - 1.0 / beta
        hess = ms + tf.linalg.diag(1.0 / beta ** 2)
        step = tf.linalg.solve(hess, grad[:, None])[:, 0]
        dec = tf.sqrt(tf.maximum(tf.tensordot(grad, step, 1), 0.0))
        return i + 1, beta - step / (1.0 + dec)

    _, beta = tf.while_loop(lambda i, _: i < iters, body, [tf.constant(0), beta])
    return beta * d * p


def simplex_projection(v, present):
    """The Euclidean projection of ``v`` onto the simplex of the present entries (float64; 0 elsewhere).

    Sort-based (Held, Wolfe & Crowder 1974): θ = (Σ_{j≤k} u_j − 1)/k for the largest k with
    u_k > (Σ_{j≤k} u_j − 1)/k, u sorted decreasing; the projection is max(v − θ, 0).
    """
    v = tf.cast(v, tf.float64)
    p = tf.cast(present, tf.float64) > 0
    low = tf.reduce_min(tf.where(p, v, np.inf)) - 2.0 * (tf.reduce_max(tf.abs(v)) + 1.0) * v.shape[0]
    vp = tf.where(p, v, low)                         # absent entries sort last and end at 0
    u = tf.sort(vp, direction="DESCENDING")
    k = tf.range(1, v.shape[0] + 1, dtype=tf.float64)
    theta_k = (tf.cumsum(u) - 1.0) / k
    last = tf.reduce_max(tf.where(u > theta_k, k, 1.0))
    theta = tf.gather(theta_k, tf.cast(last, tf.int32) - 1)
    return tf.where(p, tf.maximum(vp - theta, 0.0), 0.0)
