"""FAMO, fast adaptive multitask optimisation (Liu, Liang, Stone & Liu, NeurIPS 2023).

No per-task gradients: one backward pass of Σ λ_i L_i with

    z = softmax(ξ),   c = (Σ_i z_i / L_i)⁻¹,   λ_i = c · z_i / L_i,

the gradient of Σ_i c·z_i·log L_i (c and z held constant), so each step
decreases the z-weighted log-losses.  The logits ξ learn from how fast each
loss falls: with δ_i = log L_i(t−1) − log L_i(t),

    ∇_ξ = J_softmax(ξ)ᵀ δ = z ⊙ (δ − zᵀδ),

and ξ takes an Adam step (lr ``w_lr``, weight decay ``gamma`` added to the
gradient as in ``torch.optim.Adam``), the authors' ``update``.  The authors
recompute the losses on the same batch after the step (a second forward
pass); here δ compares the losses of consecutive steps (next batch), which
costs nothing.  Terms absent from a batch are left out of z and of δ.  The
logged ``loss`` is Σ λ_i L_i = c = (Σ_i z_i/L_i)⁻¹, the z-weighted harmonic
mean of the losses.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from .base import LossWeighting, Params, state_variable


class FAMOParams(Params):
    w_lr: float = Field(0.025, gt=0, description="Adam learning rate of the logits ξ.")
    gamma: float = Field(0.01, ge=0, description="Weight decay of ξ.")
    eps: float = Field(1e-8, gt=0, description="Added to the losses before the log.")


def famo_weights(logits, values, present, eps: float = 1e-8):
    """λ_i = c·z_i/L_i with z = softmax(ξ) over the present terms (float64)."""
    xi = tf.cast(logits, tf.float64)
    p = tf.cast(present, tf.float64)
    z = tf.nn.softmax(tf.where(p > 0, xi, tf.fill(tf.shape(xi), tf.constant(-np.inf, tf.float64))))
    z = tf.where(p > 0, z, tf.zeros_like(z))
    inv = z / (tf.cast(values, tf.float64) + eps)
    return tf.math.divide_no_nan(inv, tf.reduce_sum(inv)), z


class FAMO(LossWeighting):
    name = "famo"
    Params = FAMOParams
    uses_values = True
    reference = "Liu, Liang, Stone & Liu, NeurIPS 2023 (arXiv:2306.03792)"

    def build(self):
        n = self.num_terms
        self.xi = state_variable(np.zeros(n), "multiloss_famo_logits")
        self.m = state_variable(np.zeros(n), "multiloss_famo_adam_m")
        self.v = state_variable(np.zeros(n), "multiloss_famo_adam_v")
        self.t = state_variable(0.0, "multiloss_famo_adam_t")
        self.prev = state_variable(np.zeros(n), "multiloss_famo_previous_losses")
        self.current = state_variable(np.full(n, 1.0 / n), "multiloss_famo_weights")
        self.state = {"xi": self.xi, "m": self.m, "v": self.v, "t": self.t, "prev": self.prev,
                      "current": self.current}

    def weights(self, values, present, ctx):
        if not ctx.training:
            return self.current_weights()
        p = self.params
        values = tf.stop_gradient(tf.cast(values, tf.float32))
        xi = tf.convert_to_tensor(self.xi)
        prev = tf.convert_to_tensor(self.prev)
        both = present * tf.cast(prev > 0, tf.float32)
        z = tf.cast(famo_weights(xi, values, tf.ones_like(present))[1], tf.float32)
        delta = both * (tf.math.log(prev + p.eps) - tf.math.log(values + p.eps))
        grad = z * (delta - tf.reduce_sum(z * delta)) + p.gamma * xi
        update = tf.reduce_any(both > 0)
        t = tf.convert_to_tensor(self.t) + 1.0
        m = 0.9 * self.m + 0.1 * grad
        v = 0.999 * self.v + 0.001 * grad * grad
        step = p.w_lr * (m / (1.0 - 0.9 ** t)) / (tf.sqrt(v / (1.0 - 0.999 ** t)) + 1e-8)
        self.xi.assign(tf.where(update, xi - step, xi))
        self.m.assign(tf.where(update, m, tf.convert_to_tensor(self.m)))
        self.v.assign(tf.where(update, v, tf.convert_to_tensor(self.v)))
        self.t.assign(tf.where(update, t, t - 1.0))
        self.prev.assign(tf.where(present > 0, values, prev))
        lam, _ = famo_weights(self.xi, values, present, p.eps)
        lam = tf.cast(lam, tf.float32)
        self.current.assign(lam)
        return lam
