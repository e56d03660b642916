"""GradVac, gradient vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021).

Like PCGrad, for each task i and every other task j in a random order, with
φ = cos(g_i^PC, g_j) and the target φ̂_ij (an exponential moving average of
the observed cosines, φ̂ ← (1 − β)φ̂ + βφ, starting at 0): if φ < φ̂ then

    g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂√(1 − φ²) − φ√(1 − φ̂²)) / (‖g_j‖√(1 − φ̂²)) · g_j

(Algorithm 2), which sets the cosine to φ̂.  The update is Σ_i g_i^PC.  As in
PCGrad, g_i^PC = Σ_k C_ik g_k and every dot product is a row of C times the
Gram matrix, so it runs on T×T numbers; λ_k = Σ_i C_ik.  One target per task
pair over all shared parameters (LibMTL's whole-model granularity).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from .base import GramWeighting, Params, StateUpdate, state_variable
from .pcgrad import random_order


class GradVacParams(Params):
    beta: float = Field(0.01, gt=0, le=1, description="EMA rate of the cosine targets (paper: 1e-2).")
    seed: int = Field(0, ge=0)


def gradvac_coefficients(gram, order, targets, beta: float, present=None):
    """``(C, new targets)``: the coefficients of g_i^PC and the updated φ̂ (float64)."""
    m = tf.cast(gram, tf.float64)
    rho_t = tf.cast(targets, tf.float64)
    n = m.shape[0]
    p = tf.ones([n], tf.float64) if present is None else tf.cast(present, tf.float64)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(m), 0.0))
    coef = tf.eye(n, dtype=tf.float64)
    rows = tf.range(n)
    for k in range(n - 1):
        j = order[:, k]
        col = tf.transpose(tf.gather(m, j, axis=1))                     # row i: M[:, j_i]
        dots = tf.reduce_sum(coef * col, 1)                              # g_i^PC · g_j
        pc_norm = tf.sqrt(tf.maximum(tf.einsum("ik,kl,il->i", coef, m, coef), 0.0))
        gj = tf.gather(norms, j)
        valid = p * tf.gather(p, j) * tf.cast(pc_norm > 0, tf.float64) * tf.cast(gj > 0, tf.float64)
        phi = tf.math.divide_no_nan(dots, pc_norm * gj)
        idx = tf.stack([rows, tf.cast(j, rows.dtype)], 1)
        target = tf.gather_nd(rho_t, idx)
        root_t = tf.sqrt(tf.maximum(1.0 - target ** 2, 0.0))
        w = tf.math.divide_no_nan(pc_norm * (target * tf.sqrt(tf.maximum(1.0 - phi ** 2, 0.0)) - phi * root_t),
                                  gj * root_t)
        w = tf.where(tf.logical_and(phi < target, valid > 0), w, tf.zeros_like(w))
        coef = coef + w[:, None] * tf.one_hot(j, n, dtype=tf.float64)
        new = tf.where(valid > 0, (1.0 - beta) * target + beta * phi, target)
        rho_t = tf.tensor_scatter_nd_update(rho_t, idx, new)
    return coef, rho_t


class GradVac(GramWeighting):
    name = "gradvac"
    Params = GradVacParams
    reference = "Wang, Tsvetkov, Firat & Cao, ICLR 2021 (arXiv:2010.05874)"

    def build(self):
        n = self.num_terms
        self.keep_current(1.0, "multiloss_gradvac_weights")
        self.targets = state_variable(np.zeros((n, n)), "multiloss_gradvac_targets")
        self.state["targets"] = self.targets

    def combine(self, gram, values, present, ctx):
        order = random_order(self.num_terms, self.params.seed, ctx.step)
        coef, targets = gradvac_coefficients(gram, order, self.targets, self.params.beta, present)
        lam = tf.cast(tf.reduce_sum(coef, 0), tf.float32) * tf.cast(present, tf.float32)
        return StateUpdate(lam, {"targets": tf.cast(targets, tf.float32)})
