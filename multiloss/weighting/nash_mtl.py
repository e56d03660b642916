"""Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022).

The update of the shared parameters is d = Σ_i α_i g_i with α the Nash
bargaining solution of the paper: the α > 0 with

    α_i · (G Gᵀ α)_i = 1     for every task i,     i.e.  (M α)_i = 1/α_i,

on the Gram matrix M = G Gᵀ itself, so every task's directional derivative
⟨g_i, d⟩ is 1/α_i and ‖d‖² = αᵀMα = T at every gradient scale (α scales as
1/‖g‖).  The authors' code (and LibMTL's copy) divides M by its Frobenius norm
for the solver but puts the factor back into the constraint, so it solves the
same equation; it then clips the shared gradient to ``max_norm`` (1.0 by
default there, so its update has norm min(√T, 1)); here ``max_norm: 0``, the
paper's update, is the default.  The authors solve a sequence of at most 20
linearised convex programs (cvxpy, ECOS); here α is the unique minimiser of
the self-concordant ½αᵀMα − Σ log α_i, found by damped Newton steps
(:func:`multiloss.weighting.solvers.nash_weights`, on the diagonally scaled
problem): the same point, to round-off, with no external solver.
``update_every`` recomputes α only every so many steps (the authors'
``update_weights_every``); the clip applies every step, to that step's d.
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import GramWeighting, Params, StateUpdate, state_variable


class NashMTLParams(Params):
    update_every: int = Field(1, ge=1, description="Recompute α every this many steps.")
    iters: int = Field(30, ge=1, description="Damped Newton iterations.")
    max_norm: float = Field(0.0, ge=0, description="Clip ‖Σ α_i g_i‖ to this; 0: no clip (the paper); "
                                                   "the authors' code and LibMTL: 1.0.")


def nash_coefficients(gram, present, iters: int = 30):
    """α of Nash-MTL: α_i (Mα)_i = 1 on the Gram matrix ``M`` itself (the paper's scale), float64."""
    return solvers.nash_weights(tf.cast(gram, tf.float64), present, iters)


def clipped(alpha, gram, max_norm: float):
    """α scaled so that ‖Σ α_i g_i‖ = √(αᵀMα) is at most ``max_norm`` (as torch's ``clip_grad_norm_``)."""
    a = tf.cast(alpha, tf.float64)
    norm = tf.sqrt(tf.maximum(tf.tensordot(a, tf.linalg.matvec(tf.cast(gram, tf.float64), a), 1), 0.0))
    return a * tf.minimum(1.0, max_norm / (norm + 1e-6))


class NashMTL(GramWeighting):
    name = "nash_mtl"
    Params = NashMTLParams
    reference = "Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, ICML 2022 (arXiv:2202.01017)"

    def build(self):
        self.keep_current(1.0, "multiloss_nash_weights")
        # The bargaining α before the clip (what update_every reuses); λ = current is α after it.
        self.alpha = state_variable([1.0] * self.num_terms, "multiloss_nash_alpha")
        self.state["alpha"] = self.alpha

    def combine(self, gram, values, present, ctx):
        p = self.params

        def fresh():
            return nash_coefficients(gram, present, p.iters)

        if p.update_every == 1:
            alpha = fresh()
        else:
            alpha = tf.cond(tf.equal(tf.math.floormod(tf.cast(ctx.step, tf.int64), p.update_every), 0), fresh,
                            lambda: tf.cast(tf.convert_to_tensor(self.alpha), tf.float64)
                            * tf.cast(present, tf.float64))
        lam = clipped(alpha, gram, p.max_norm) if p.max_norm > 0 else alpha
        return StateUpdate(tf.cast(lam, tf.float32), {"alpha": tf.cast(alpha, tf.float32)})
