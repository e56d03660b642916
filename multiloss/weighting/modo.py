"""MoDo, multi-objective gradient with double sampling (Chen, Fernando, Ying & Chen, NeurIPS 2023).

MGDA's weights from one batch are a biased estimate; MoDo (Algorithm 1) takes
three independent samples z₁, z₂, z₃ per step:

    λ ← Π_Δ(λ − γ (G(z₁) G(z₂)ᵀ λ + ρ λ)),        G(z)Gᵀ(z′)λ: unbiased for the Gram step
    d = G(z₃)ᵀ λ                                   the update of the shared parameters,

Π_Δ the Euclidean projection onto the simplex, λ₀ = 1/T.  **Sampling:** one
``fit`` step cuts its batch into three contiguous parts (sizes ⌊B/3⌋ or ⌈B/3⌉;
shuffle the data so the parts are independent draws): z₁, z₂ and z₃ are the
first, second and third; under ``MirroredStrategy`` part j is the union of
every replica's j-th part.  The per-task gradients of the shared parameters
are taken on each part (3T backward passes besides the T of the whole batch),
the heads get sᵢ∇Lᵢ of the whole batch (the mean of the three parts' for
equal parts: LibMTL divides its heads' summed gradients by 3).  ``gradients:
parameters`` only.  ``rho`` (0: the paper's Algorithm 1) is the ℓ2 term of
the JMLR version and of LibMTL (default 0.1 there); ``gamma`` 0.001 is
LibMTL's default.  A batch of fewer than 3 elements has an empty part, whose
gradients are 0.  LibMTL's ``MoDo`` expects three batches from its own data
loop.
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from .base import Params, SampledRows, StateUpdate
from .solvers import simplex_projection


class MoDoParams(Params):
    gamma: float = Field(0.001, gt=0, description="γ, the step of λ (LibMTL: 0.001).")
    rho: float = Field(0.0, ge=0, description="ρ, the ℓ2 term of λ's step (the paper: 0; LibMTL: 0.1).")


def modo_update(rows, lam, present, gamma: float, rho: float):
    """``(update [P], new λ)`` of MoDo from ``rows`` ``[3, T, P]`` (z₁, z₂, z₃) and λ (float64)."""
    g1, g2, g3 = (tf.cast(rows[j], tf.float64) for j in range(3))
    cross = tf.linalg.matvec(g1, tf.linalg.matvec(g2, lam, transpose_a=True))     # G(z₁)G(z₂)ᵀλ
    lam = simplex_projection(lam - gamma * (cross + rho * lam), present)
    return tf.cast(tf.linalg.matvec(g3, lam, transpose_a=True), rows.dtype), lam


class MoDo(SampledRows):
    name = "modo"
    Params = MoDoParams
    reference = ("Chen, Fernando, Ying & Chen, Three-way trade-off in multi-objective learning: optimization, "
                 "generalization and conflict-avoidance, NeurIPS 2023 (openreview yPkbdJxQ0o)")

    def build(self):
        self.lam = self.keep_iterate("lam")

    def aggregate(self, rows, values, present, ctx):
        update, lam = modo_update(rows, tf.convert_to_tensor(self.lam), present, self.params.gamma,
                                  self.params.rho)
        return update, StateUpdate(tf.cast(lam, tf.float32), {"lam": lam})
