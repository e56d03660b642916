"""SDMGrad, stochastic direction-oriented multi-objective gradient (Xiao, Ban & Ji, NeurIPS 2023).

The direction maximises the worst task's improvement while staying near the
mean gradient g₀ (weight λ); its dual on the simplex is min_w ½‖Gᵀw + λg₀‖², and
Algorithm 1 runs S projected stochastic gradient steps on it with two
independent samples ξ, ξ′, warm-started from the last step's w, then moves
along a third sample ζ:

    w ← Π_Δ(w − β [G(ξ) (G(ξ′)ᵀ w + λ g₀(ξ′))])     S times,
    d = (G(ζ)ᵀ w + λ g₀(ζ)) / (1 + λ),

g₀ the mean of the task gradients, Π_Δ the Euclidean projection onto the
simplex, w₀ = 1/T; d is the dual's solution d* = (Gᵀw + λg₀)/(1 + λ) (the
authors' code and LibMTL divide by 1 + λ likewise).  The step is β =
``lr`` / s² with s the mean of √(G(ξ)G(ξ′)ᵀ)ᵢᵢ (the authors' scaling of the
Gram matrix, so ``lr`` is free of the gradients' scale); their inner loop
is SGD with momentum 0.5, here plain projected steps as in Algorithm 1.
**Sampling** as MoDo's: one ``fit`` step cuts its batch into three contiguous
parts, ξ, ξ′ and ζ in that order (3T backward passes besides the whole
batch's T; heads get sᵢ∇Lᵢ of the whole batch).  ``gradients: parameters``
only.  Absent terms are left out of g₀ and of the simplex.
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from .base import Params, SampledRows, StateUpdate
from .solvers import simplex_projection


class SDMGradParams(Params):
    lamda: float = Field(0.3, ge=0, description="λ, the pull towards the mean gradient (LibMTL: 0.3).")
    niter: int = Field(20, ge=1, description="S, the projected steps of w per training step (LibMTL: 20).")
    lr: float = Field(5.0, gt=0, description="The step of w on the scaled Gram matrix (LibMTL: 5).")


def sdmgrad_update(rows, w, present, lamda: float, niter: int, lr: float):
    """``(update [P], new w)`` of SDMGrad from ``rows`` ``[3, T, P]`` (ξ, ξ′, ζ) and w (float64)."""
    p = tf.cast(present, tf.float64)
    mean = p / tf.maximum(tf.reduce_sum(p), 1.0)                             # g₀ = Gᵀ·mean
    g1, g2, g3 = (tf.cast(rows[j], tf.float64) for j in range(3))
    cross = tf.matmul(g1, g2, transpose_b=True)                              # G(ξ)G(ξ′)ᵀ
    scale = tf.reduce_sum(tf.sqrt(tf.maximum(tf.linalg.diag_part(cross), 0.0)) * mean)
    beta = lr / (scale * scale + 1e-8)
    pull = lamda * tf.linalg.matvec(cross, mean)                             # λ G(ξ) g₀(ξ′)

    def step(_, w):
        return _ + 1, simplex_projection(w - beta * (tf.linalg.matvec(cross, w) + pull), present)

    _, w = tf.while_loop(lambda i, _: i < niter, step, [tf.constant(0), w])
    coef = (w + lamda * mean) / (1.0 + lamda)
    return tf.cast(tf.linalg.matvec(g3, coef, transpose_a=True), rows.dtype), w, coef


class SDMGrad(SampledRows):
    name = "sdmgrad"
    Params = SDMGradParams
    reference = ("Xiao, Ban & Ji, Direction-oriented multi-objective learning: simple and provable stochastic "
                 "algorithms, NeurIPS 2023 (openreview 4Ks8RPcXd9)")

    def build(self):
        self.w = self.keep_iterate("w")

    def aggregate(self, rows, values, present, ctx):
        p = self.params
        update, w, coef = sdmgrad_update(rows, tf.convert_to_tensor(self.w), present, p.lamda, p.niter, p.lr)
        return update, StateUpdate(tf.cast(coef, tf.float32), {"w": w})
