"""UPGrad, unconflicting projection of gradients (Quinton & Rey, 2024; TorchJD).

Each task gradient g_i is projected onto the dual cone of the task
gradients, {v : ⟨g_j, v⟩ ≥ 0 for all j}; the update is the mean of the
projections, so it conflicts with no task.  The projection of g_i is
Gᵀw⁽ⁱ⁾ with w⁽ⁱ⁾ = e_i + μ, μ = argmin_{μ≥0} ‖Gᵀ(e_i + μ)‖² (the dual of the
projection), a non-negative quadratic programme on the Gram matrix
(:func:`multiloss.weighting.solvers.nonneg_qp`: exact active sets for T ≤ 8,
coordinate descent beyond; the exact solver starts each step from the last
step's active sets and enumerates only when they fail the KKT test).
λ = mean_i w⁽ⁱ⁾ (TorchJD's default preference, the mean).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import GramWeighting, Params, state_variable


class UPGradParams(Params):
    solver: Literal["auto", "exact", "coordinate_descent"] = "auto"
    max_iter: int = Field(500, gt=0, description="Coordinate-descent sweeps (T > 8 under auto).")


def upgrad_coefficients(gram, present, solver: str = "auto", max_iter: int = 500, support=None):
    """λ = mean over present i of w⁽ⁱ⁾ (float64).

    ``support``: a ``[T, T]`` variable holding the exact solver's warm start (row i: the
    constraints active in w⁽ⁱ⁾, :func:`~multiloss.weighting.solvers.nonneg_qp_warm`); it is
    read and then set to this answer's supports.
    """
    m = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    n = m.shape[0]
    if support is not None and solvers.uses_exact(solver, n):
        mu, new, _ = solvers.nonneg_qp_warm(m, m * p[:, None], p, support)     # row i: b = M e_i
        support.assign(new)
    else:
        mu = solvers.nonneg_qp(m, m * p[:, None], p, solver, max_iter)
    w = (tf.eye(n, dtype=tf.float64) + mu) * p[:, None] * p[None, :]
    return tf.reduce_sum(w, 0) / tf.maximum(tf.reduce_sum(p), 1.0)


class UPGrad(GramWeighting):
    name = "upgrad"
    Params = UPGradParams
    reference = "Quinton & Rey, Jacobian descent for multi-objective optimization, 2024 (arXiv:2406.16232)"

    def build(self):
        self.keep_current(1.0 / self.num_terms, "multiloss_upgrad_weights")
        # The exact solver's warm start, as MGDA's: each row's active constraints at the last step
        # (none at first: no conflict).  A hint verified every step, kept in the state so that a
        # resumed run takes the same path.
        self.support = state_variable(np.zeros((self.num_terms, self.num_terms)), "multiloss_upgrad_support",
                                      dtype="float64")
        self.state["support"] = self.support

    def combine(self, gram, values, present, ctx):
        p = self.params
        return tf.cast(upgrad_coefficients(gram, present, p.solver, p.max_iter, self.support), tf.float32)
