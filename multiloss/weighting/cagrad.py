"""CAGrad, conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021).

With g_0 the mean gradient of the K tasks present in the batch, CAGrad
takes the direction within a ball around g_0 that maximises the worst task's
improvement:

    max_d min_i ⟨g_i, d⟩   s.t.  ‖d − g_0‖ ≤ c‖g_0‖.

Its dual is  min_{w∈Δ} g_wᵀg_0 + c‖g_0‖·‖g_w‖  (g_w = Σ w_i g_i), and

    d = g_0 + (c‖g_0‖ / ‖g_w‖) g_w,

so ‖d − g_0‖ = c‖g_0‖ and c = 0 gives the mean gradient.  As in the
authors' code the update is d / (1 + c²) (``rescale: 1``; ``0``: d;
``2``: d / (1 + c)) times K, "to match the sum loss".  The strategy weights
λ_k = K (1/K + c‖g_0‖ w_k / ‖g_w‖) / rescale are the coefficients of the
g_k in that update.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import GramWeighting, Params, state_variable


class CAGradParams(Params):
    c: float = Field(0.5, ge=0, description="Radius of the ball around the mean gradient, in units of ‖g_0‖.")
    rescale: Literal[0, 1, 2] = 1
    solver: Literal["auto", "exact", "frank_wolfe"] = "auto"
    max_iter: int = Field(250, gt=0)
    tol: float = Field(1e-6, gt=0)


def cagrad_coefficients(gram, present, c: float, rescale: int = 1, solver: str = "auto",
                        max_iter: int = 250, tol: float = 1e-6, support=None):
    """``(λ, w)``: the update Σ λ_k g_k and the dual weights w (float64).

    ``support``: the exact solver's warm-start variable (:func:`solvers.cagrad_warm`), read and updated.
    """
    gram = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    k = tf.maximum(tf.reduce_sum(p), 1.0)
    b = p / k
    g0_norm = tf.sqrt(tf.maximum(tf.reduce_sum(b * tf.reduce_sum(gram * b, 1)), 0.0))
    rho = c * g0_norm
    w, u = solvers.cagrad_direction(gram, b, rho, p, solver, max_iter, tol, support)      # u = (ρ/‖g_w‖)·w
    div = {0: 1.0, 1: 1.0 + c ** 2, 2: 1.0 + c}[rescale]
    return k * (b + u) / div, w


class CAGrad(GramWeighting):
    name = "cagrad"
    Params = CAGradParams
    reference = "Liu, Liu, Jin, Stone & Liu, NeurIPS 2021 (arXiv:2110.14048)"

    def build(self):
        self.keep_current(1.0, "multiloss_cagrad_weights")
        # The exact solver's warm start: the support of the last dual weights.  Only a hint (each step
        # verifies it and enumerates when it fails: a wrong hint costs one enumeration), but kept in the
        # state (saved, put back after a skipped step) so that a resumed run takes the same path, to the bit.
        self.support = state_variable(np.ones(self.num_terms), "multiloss_cagrad_support", dtype="float64")
        self.state["support"] = self.support

    def combine(self, gram, values, present, ctx):
        p = self.params
        lam, _ = cagrad_coefficients(gram, present, p.c, p.rescale, p.solver, p.max_iter, p.tol, self.support)
        return tf.cast(lam, tf.float32)
