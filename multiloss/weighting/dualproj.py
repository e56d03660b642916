"""DualProj, the projection of the mean gradient onto the dual cone (TorchJD's ``DualProj``;
Lopez-Paz & Ranzato, GEM, NeurIPS 2017, Eq. 11).

With ḡ = Σ_i u_i g_i (u: ``weighting.preference`` normalised to sum 1 over the
present tasks; default the mean, 1/T each) the update is

    d = argmin_v ‖v − ḡ‖²   subject to ⟨g_j, v⟩ ≥ 0 for every task j,

which conflicts with no task.  Its dual: d = Gᵀ(u + μ) with
μ = argmin_{μ≥0} ½(u + μ)ᵀM(u + μ), a non-negative quadratic programme on the
Gram matrix (:func:`multiloss.weighting.solvers.nonneg_qp`, exact active sets
for T ≤ 8), so λ = u + μ.  UPGrad is the mean of the T projections of the g_i;
DualProj is the one projection of their mean.  TorchJD solves the same dual
with ``quadprog`` on the Gram matrix divided by its norm plus 1e-4 on the
diagonal (``norm_eps``, ``reg_eps``), which moves the answer by up to that
relative amount; TorchJD's ``pref_vector`` is used as given (not normalised).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec.lazy import tf
from . import solvers
from .base import Params, PreferenceGramWeighting


class DualProjParams(Params):
    solver: Literal["auto", "exact", "coordinate_descent"] = "auto"
    max_iter: int = Field(500, gt=0, description="Coordinate-descent sweeps (T > 8 under auto).")


def dualproj_coefficients(gram, present, preference, solver: str = "auto", max_iter: int = 500):
    """λ = u + μ of DualProj (float64; 0 for absent tasks)."""
    m = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    pref = tf.cast(preference, tf.float64) * p
    u = tf.math.divide_no_nan(pref, tf.reduce_sum(pref))
    mu = solvers.nonneg_qp(m, tf.linalg.matvec(m, u)[None, :], p, solver, max_iter)[0]
    return (u + mu) * p


class DualProj(PreferenceGramWeighting):
    name = "dual_proj"
    Params = DualProjParams
    reference = ("Quinton & Rey, Jacobian descent for multi-objective optimization, 2024 (arXiv:2406.16232), "
                 "TorchJD's DualProj; Lopez-Paz & Ranzato, NeurIPS 2017 (Eq. 11)")

    def combine(self, gram, values, present, ctx):
        p = self.params
        return tf.cast(dualproj_coefficients(gram, present, self.pref, p.solver, p.max_iter), tf.float32)
