"""GradNorm, gradient normalisation for adaptive loss balancing (Chen et al., ICML 2018).

With W the last shared layer, G_i = ‖∇_W (w_i L_i)‖, Ḡ = mean_i G_i,
L̃_i = L_i(t) / L_i(0) and r_i = L̃_i / mean_j L̃_j, the weights minimise

    L_grad = Σ_i | G_i − Ḡ · r_i^α |₁

with Ḡ · r_i^α held constant.  Each step the network is updated with
Σ w_i(t) L_i, then w ← w − lr · ∂L_grad/∂w, where
∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · ‖∇_W L_i‖, and finally w is
renormalised to sum to T (Algorithm 1).  Weights are floored at 0 before the
renormalisation (the paper does not say what a negative weight means).

W defaults to the last layer (in ``model.trainable_variables`` order) that
holds shared parameters; ``params.layer`` names another.  L_i(0) is a term's
loss at the first step where it is present; a term absent from a batch is
left out of Ḡ, of the mean of L̃ and of the update.  GradNorm balances the
unscaled L_i; the static weight and schedule multiply w_i.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import ops, tf
from .base import LayerGradientWeighting, Params, StateUpdate, masked_mean, state_variable


class GradNormParams(Params):
    alpha: float = Field(1.5, ge=0, description="Asymmetry: how strongly slow tasks are pulled up.")
    lr: float = Field(0.025, gt=0, description="Learning rate of the weights (plain gradient descent).")
    layer: str | None = Field(None, description="The layer W whose gradients are balanced; default: last shared.")


def gradnorm_loss(norms, weights, loss_ratios, alpha: float, present=None):
    """``(L_grad, ∂L_grad/∂w)`` for raw gradient norms ‖∇_W L_i‖, weights w and L̃_i."""
    norms = tf.convert_to_tensor(norms, tf.float32)
    w = tf.convert_to_tensor(weights, tf.float32)
    ratios = tf.convert_to_tensor(loss_ratios, tf.float32)
    mask = tf.ones_like(w) if present is None else tf.cast(present, tf.float32)
    g = w * norms
    g_bar = masked_mean(g, mask)
    r = tf.math.divide_no_nan(ratios, masked_mean(ratios, mask))
    target = tf.stop_gradient(g_bar * tf.pow(r, alpha))
    l_grad = tf.reduce_sum(mask * tf.abs(g - target))
    grad = mask * tf.sign(g - target) * norms
    return l_grad, grad


class GradNorm(LayerGradientWeighting):
    name = "gradnorm"
    Params = GradNormParams
    reference = "Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018 (arXiv:1711.02257)"

    def build(self):
        n = self.num_terms
        self.w = state_variable(np.ones(n), "multiloss_gradnorm_weights")
        self.initial = state_variable(np.zeros(n), "multiloss_gradnorm_initial_losses")
        self.seen = state_variable(np.zeros(n), "multiloss_gradnorm_seen")
        self.state = {"w": self.w, "initial": self.initial, "seen": self.seen}

    def weights(self, values, present, ctx):
        return ops.convert_to_tensor(self.w)

    def combine(self, gram, values, present, ctx):
        """w(t) for this step's update, and the state of w(t+1)."""
        w = tf.convert_to_tensor(self.w)
        norms = tf.cast(tf.sqrt(tf.maximum(tf.linalg.diag_part(tf.cast(gram, tf.float64)), 0.0)), tf.float32)
        first = present * (1.0 - self.seen)
        initial = tf.where(first > 0, values, tf.convert_to_tensor(self.initial))
        seen = tf.maximum(tf.convert_to_tensor(self.seen), present)
        mask = present * seen
        ratios = tf.math.divide_no_nan(values, initial)
        _, grad = gradnorm_loss(norms, w, ratios, self.params.alpha, mask)
        new = tf.maximum(w - self.params.lr * grad, 0.0)
        total = tf.reduce_sum(new)
        n = float(self.num_terms)
        new = tf.where(total > 0, new * n / tf.maximum(total, 1e-30), tf.ones_like(new))
        return StateUpdate(w, {"initial": initial, "seen": seen, "w": new})
