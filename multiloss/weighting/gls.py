"""GLS, the geometric loss strategy (Chennupati, Sistu, Yogamani & Rawashdeh, CVPR Workshops 2019).

The objective is the geometric mean of the T losses present,

    G = (Π_i L_i)^{1/T},     ∂G/∂L_i = G / (T·L_i),

so one backward pass of Σ λ_i L_i with λ_i = G/(T·L_i), held constant, has
the gradient of G: Σ_i (G/T)·∇ log L_i, each task scaled by its own loss
(LibMTL's ``GLS``).  The logged ``loss`` is Σ λ_i L_i = G.  Terms absent from
a batch are left out of the product and of T.  The losses must be positive
(a loss ≤ 0 has no logarithm: the step's λ is not finite and the non-finite
guard stops or skips it); ``eps`` is added to each loss.  Static weights and
schedules multiply λ (the objective is then Σ s_i λ_i L_i = G·mean_i s_i, its
gradient Σ_i s_i (G/T)·∇ log L_i).
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from .base import LossWeighting, Params, state_variable


class GLSParams(Params):
    eps: float = Field(1e-8, ge=0, description="Added to the losses (a zero loss has no logarithm).")


def gls_weights(values, present, eps: float = 1e-8):
    """λ_i = G/(T·L_i) of the present terms, G their geometric mean (float64; 0 for absent terms)."""
    p = tf.cast(present, tf.float64)
    loss = tf.cast(values, tf.float64) + eps
    count = tf.reduce_sum(p)
    log_g = tf.math.divide_no_nan(tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(loss), p)), count)
    return p * tf.math.divide_no_nan(tf.exp(log_g), count * loss)


class GLS(LossWeighting):
    name = "gls"
    Params = GLSParams
    uses_values = True
    reference = "Chennupati, Sistu, Yogamani & Rawashdeh, MultiNet++, CVPR Workshops 2019 (arXiv:1904.08492)"

    def build(self):
        self.current = state_variable([1.0 / self.num_terms] * self.num_terms, "multiloss_gls_weights")
        self.state = {"current": self.current}

    def weights(self, values, present, ctx):
        if not ctx.training:
            return self.current_weights()
        values = tf.stop_gradient(tf.cast(values, tf.float32))
        lam = tf.cast(gls_weights(values, present, self.params.eps), tf.float32)
        self.current.assign(lam)
        return lam
