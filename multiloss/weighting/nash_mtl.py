"""Nash-MTL, multi-task learning as a bargaining game (Navon et al., ICML 2022).

The update of the shared parameters is Σ_i α_i g_i with α the Nash
bargaining solution: the α > 0 with

    α_i · (Gᵀ G α)_i = 1     for every task i,     i.e.  (M α)_i = 1/α_i,

so every task's directional derivative ⟨g_i, Σ α_j g_j⟩ is 1/α_i.  As in the
authors' code the Gram matrix is first divided by its Frobenius norm (which
multiplies α by √‖M‖_F, the same direction).  The authors solve it by a
sequence of convex programs (cvxpy); here it is the unique minimiser of the
self-concordant ½αᵀMα − Σ log α_i, found by damped Newton steps
(:func:`multiloss.weighting.solvers.nash_weights`): the same point, to
round-off, with no external solver.  ``update_every`` recomputes α only every
so many steps (the authors' ``update_weights_every``).
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import GramWeighting, Params


class NashMTLParams(Params):
    update_every: int = Field(1, ge=1, description="Recompute α every this many steps.")
    iters: int = Field(30, ge=1, description="Damped Newton iterations.")


def nash_coefficients(gram, present, iters: int = 30):
    """α of Nash-MTL for the Gram matrix ``M`` (normalised by ‖M‖_F as in the authors' code), float64."""
    m = tf.cast(gram, tf.float64)
    m = m / tf.maximum(tf.norm(m), 1e-300)
    return solvers.nash_weights(m, present, iters)


class NashMTL(GramWeighting):
    name = "nash_mtl"
    Params = NashMTLParams
    reference = "Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, ICML 2022 (arXiv:2202.01017)"

    def build(self):
        self.keep_current(1.0, "multiloss_nash_weights")

    def combine(self, gram, values, present, ctx):
        every = self.params.update_every

        def fresh():
            return tf.cast(nash_coefficients(gram, present, self.params.iters), tf.float32)

        if every == 1:
            return fresh()
        return tf.cond(tf.equal(tf.math.floormod(tf.cast(ctx.step, tf.int64), every), 0), fresh,
                       lambda: self.current_weights() * tf.cast(present, tf.float32))
