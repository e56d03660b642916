"""MoCo, stochastic multi-objective gradient with correction (Fernando, Shen, Liu, Chaudhury, Murugesan &
Chen, ICLR 2023).

Stochastic MGDA's direction is biased (the min-norm weights of noisy
gradients are not those of the true ones); MoCo tracks each task's gradient
with a moving average and runs MGDA's weights as an iterate (Algorithm 1):

    yᵢ ← yᵢ − β_t (yᵢ − hᵢ),                                  hᵢ: this step's gradient of task i
    λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρ I) λ),                         Π_Δ: Euclidean projection onto the simplex
    d = Yᵀ λ                                                   the update of the shared parameters,

with β_t = β / t^σ_β and γ_t = γ / t^σ_γ (t = 1, 2, … the step; LibMTL's
parametrisation and defaults), λ₀ = 1/T, Y₀ = 0.  Sampling: one ``fit`` step
is one stochastic sample — hᵢ is the batch's gradient of task i (all tasks
on the same batch); the tracking variable Y carries the earlier batches.
Y is kept per shared parameter (``gradients: parameters`` only: the rows of
``representation`` are new samples every step) and saved with the model, as
λ is (a reloaded model goes on from both).  Terms absent from a batch keep their yᵢ and are left out of the
simplex.  Heads get sᵢ∇Lᵢ.

``normalize: true`` replaces hᵢ by Lᵢ·hᵢ/‖hᵢ‖ (the authors' shared code and
LibMTL's ``MoCo``); LibMTL also replaces Π_Δ by a softmax of the step.
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from .base import Params, RowAggregator, RowBuffer, StateUpdate
from .solvers import simplex_projection


class MoCoParams(Params):
    beta: float = Field(0.5, gt=0, le=1, description="β, the tracking rate of the gradients (LibMTL: 0.5).")
    beta_sigma: float = Field(0.5, ge=0, description="β_t = β / t^σ (LibMTL: 0.5).")
    gamma: float = Field(0.1, gt=0, description="γ, the step of λ (LibMTL: 0.1).")
    gamma_sigma: float = Field(0.5, ge=0, description="γ_t = γ / t^σ (LibMTL: 0.5).")
    rho: float = Field(0.0, ge=0, description="ρ, the ℓ2 regulariser of λ's step.")
    normalize: bool = Field(False, description="hᵢ → Lᵢ·hᵢ/‖hᵢ‖ (the authors' code, LibMTL).")


def moco_update(rows, y, lam, values, present, step, params: MoCoParams):
    """``(update [P], new Y [T, P], new λ [T])`` of one MoCo step (rows float32, λ float64)."""
    p = tf.cast(present, rows.dtype)
    t = tf.cast(step, tf.float64) + 1.0
    h = rows
    if params.normalize:
        h = rows * (tf.cast(values, rows.dtype) / (tf.norm(rows, axis=1) + 1e-8))[:, None]
    beta = tf.cast(params.beta / tf.pow(t, params.beta_sigma), rows.dtype)
    y = tf.where(p[:, None] > 0, y - beta * (y - h), y)
    y64 = tf.cast(y, tf.float64)
    m = tf.matmul(y64, y64, transpose_b=True) + params.rho * tf.eye(y.shape[0], dtype=tf.float64)
    gamma = params.gamma / tf.pow(t, params.gamma_sigma)
    lam = simplex_projection(lam - gamma * tf.linalg.matvec(m, lam), present)
    return tf.tensordot(tf.cast(lam, rows.dtype), y, 1), y, lam


class MoCo(RowBuffer, RowAggregator):
    name = "moco"
    Params = MoCoParams
    gradient_modes = ("parameters",)
    buffer_key = "y"
    reference = ("Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, Mitigating gradient bias in multi-objective "
                 "learning: a provably convergent approach, ICLR 2023 (openreview dLAYGdKTi2)")

    def build(self):
        self.lam = self.keep_iterate("lam")

    def bind_rows(self, size, mode):
        return self.bind_buffer(size, "tracks the per-task gradients of the shared parameters")

    def aggregate(self, rows, values, present, ctx):
        update, y, lam = moco_update(rows, self.buffer(), tf.convert_to_tensor(self.lam), values,
                                     present, ctx.step, self.params)
        return update, StateUpdate(tf.cast(lam, tf.float32), {"y": y, "lam": lam})
