"""MGDA, multiple-gradient descent as multi-objective optimisation (Sener & Koltun, NeurIPS 2018).

The update of the shared parameters is the min-norm point of the convex
hull of the task gradients,

    λ = argmin_{λ ∈ Δ} ‖Σ_i λ_i g_i‖²,     update = Σ_i λ_i g_i,

a common descent direction of every task (or 0 at a Pareto-stationary
point).  λ is the strategy weight logged as ``<term>_weight`` (it sums to 1);
the task-specific parameters get their own gradient s_i ∇L_i (Algorithm 2).
``params.solver``: ``exact`` (support enumeration), ``frank_wolfe`` (the
paper's Algorithm 2) or ``auto`` (exact up to 8 tasks).
``params.normalization`` divides g_i before solving, as the authors' code
does: ``none``, ``l2`` (‖g_i‖), ``loss`` (L_i) or ``loss+`` (L_i·‖g_i‖).
A task absent from the batch is left out of the hull.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import GramWeighting, Params, state_variable

Solver = Literal["auto", "exact", "frank_wolfe"]


class MGDAParams(Params):
    solver: Solver = "auto"
    normalization: Literal["none", "l2", "loss", "loss+"] = "none"
    max_iter: int = Field(250, gt=0, description="Frank-Wolfe iterations at most.")
    tol: float = Field(1e-6, gt=0, description="Frank-Wolfe stops at a duality gap ≤ tol × ‖d‖² (relative suboptimality ≤ tol).")


class MGDA(GramWeighting):
    name = "mgda"
    Params = MGDAParams
    reference = "Sener & Koltun, NeurIPS 2018 (arXiv:1810.04650)"

    def build(self):
        self.keep_current(1.0 / self.num_terms, "multiloss_mgda_weights")
        # The exact solver's warm start: the support of the last α.  Only a hint (each step
        # verifies it and enumerates when it fails: a wrong hint costs one enumeration), but kept in the
        # state (saved, put back after a skipped step) so that a resumed run takes the same path, to the bit.
        self.support = state_variable(np.ones(self.num_terms), "multiloss_mgda_support", dtype="float64")
        self.state["support"] = self.support

    def combine(self, gram, values, present, ctx):
        gram = tf.cast(gram, tf.float64)
        norm = self.params.normalization
        if norm != "none":
            g = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            loss = tf.cast(values, tf.float64)
            n = {"l2": g, "loss": loss, "loss+": loss * g}[norm]
            n = tf.where(n > 0, n, tf.ones_like(n))
            gram = gram / (n[:, None] * n[None, :])
        p = self.params
        return tf.cast(solvers.min_norm(gram, present, p.solver, p.max_iter, p.tol, self.support), tf.float32)
