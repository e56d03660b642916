"""ExcessMTL, multi-task learning with excess risks (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao,
ICML 2024).

The task weights α (on the simplex, α_0 = 1/T) follow the tasks' excess risks,
how far each is from convergence, instead of their losses.  With g_i this
step's gradient of task i on the shared parameters, the excess risk is its
second-order Taylor estimate (the paper's Eqs. 6–7) with an AdaGrad-style
diagonal of the empirical Fisher information:

    H_i ← H_i + g_i ⊙ g_i,     E_i = g_iᵀ diag(√(H_i + ε))⁻¹ g_i      (ε = 1e-7),

normalised by a baseline b_i, the mean E_i over the first ``warmup_steps``
steps (the paper's Appendix C.1, "scale normalization"; the authors' code and
LibMTL use the first step's, ``warmup_steps: 1``), and the weights take an
exponentiated-gradient step (Eq. 9):

    α_i ← α_i · exp(η · E_i / b_i),     α ← α / Σα.

The update is Σ α_i g_i on the shared parameters, α_i ∇L_i on task i's own
(the objective is Σ α_i L_i).  During the warm-up α stays 1/T.  Terms absent
from a batch add nothing to H, b or the step.  H is kept per shared parameter
(``gradients: parameters`` only: the rows of ``representation`` are new
samples every step); it is saved with the model with α, b and the step count
(a reloaded model goes on from them).
LibMTL's α sums to T (here: to 1, the paper's simplex); its representation
mode sums ∇_Z over the batch first.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from .base import Params, RowAggregator, RowBuffer, StateUpdate, state_variable

EPS = 1e-7


class ExcessMTLParams(Params):
    step_size: float = Field(1.0, gt=0, description="η, the step of the exponentiated weights (LibMTL's "
                                                    "robust_step_size).")
    warmup_steps: int = Field(1, ge=1, description="Steps whose mean excess risk is the baseline (the "
                                                   "authors' code: 1; the paper: 3 epochs).")


def excess_mtl_update(rows, fisher, alpha, base, count, present, step_size: float, warmup: int):
    """``(update [P], new H, new α, new b, new count)`` of one ExcessMTL step (float32 rows).

    ``base`` holds the running sum of E over the warm-up steps, then (from step ``warmup``) its mean.
    """
    p = tf.cast(present, rows.dtype)
    fisher = fisher + tf.square(rows) * p[:, None]
    risk = tf.reduce_sum(tf.square(rows) / tf.sqrt(fisher + EPS), 1) * p
    risk, alpha, base = (tf.cast(x, tf.float64) for x in (risk, alpha, base))
    count = tf.cast(count, tf.float64)
    warming = count < warmup
    summed = tf.where(warming, base + risk, base)
    base = tf.where(count + 1.0 >= warmup, tf.where(warming, summed / warmup, summed), summed)
    grown = alpha * tf.exp(step_size * tf.math.divide_no_nan(risk, base))
    grown = grown / tf.reduce_sum(grown)
    alpha = tf.where(warming, alpha, grown)
    lam = tf.cast(alpha, rows.dtype)
    return tf.tensordot(lam, rows, 1), fisher, alpha, base, count + 1.0


class ExcessMTL(RowBuffer, RowAggregator):
    name = "excess_mtl"
    Params = ExcessMTLParams
    gradient_modes = ("parameters",)
    buffer_key = "fisher"
    reference = ("He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, Robust multi-task learning with excess "
                 "risks, ICML 2024 (arXiv:2402.02009)")

    def build(self):
        n = self.num_terms
        self.alpha = self.keep_iterate("alpha")
        self.base = state_variable(np.zeros(n), "multiloss_excess_mtl_baseline", dtype="float64")
        self.count = state_variable(0.0, "multiloss_excess_mtl_steps", dtype="float64")
        self.state.update({"base": self.base, "count": self.count})

    def bind_rows(self, size, mode):
        return self.bind_buffer(size, "keeps a diagonal Fisher estimate per shared parameter")

    def head_scale(self, values, present):
        return tf.cast(tf.convert_to_tensor(self.alpha), tf.float32)

    def aggregate(self, rows, values, present, ctx):
        p = self.params
        update, fisher, alpha, base, count = excess_mtl_update(
            rows, self.buffer(), tf.convert_to_tensor(self.alpha),
            tf.convert_to_tensor(self.base), tf.convert_to_tensor(self.count), present, p.step_size,
            p.warmup_steps)
        return update, StateUpdate(tf.cast(alpha, tf.float32),
                                   {"fisher": fisher, "alpha": alpha, "base": base, "count": count})
