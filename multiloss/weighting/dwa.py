"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019).

    λ_k(t) = K · exp(r_k(t-1)/T) / Σ_i exp(r_i(t-1)/T),   r_k(t-1) = L_k(t-1) / L_k(t-2)

with K terms, temperature T (``params.temperature``, default 2) and
L_k(t) the mean training loss of term k over the steps of epoch t; the
weights of the first two epochs are 1.  The weights sum to K, and equal loss
ratios give all ones.  The epoch means are accumulated inside the train
step (the steps where a term is absent from the batch are left out of its
mean); the weights change at each epoch end.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import ops
from .base import LossWeighting, Params, state_variable


class DWAParams(Params):
    temperature: float = Field(2.0, gt=0, description="T: larger is smoother (T → ∞ gives all ones).")


def dwa_weights(loss_prev, loss_prev2, temperature: float):
    """λ from the epoch-mean losses of the last two epochs (``[K]`` each)."""
    prev, prev2 = ops.convert_to_tensor(loss_prev), ops.convert_to_tensor(loss_prev2)
    # A term with no mean yet (absent from every step so far) has the neutral ratio 1, not 0.
    ratio = ops.where(prev2 > 0, ops.divide_no_nan(prev, prev2), ops.ones_like(prev))
    k = ops.cast(ops.shape(ratio)[0], ratio.dtype)
    return k * ops.softmax(ratio / temperature)


class DWA(LossWeighting):
    name = "dwa"
    Params = DWAParams
    uses_values = True
    reference = "Liu, Johns & Davison, CVPR 2019 (arXiv:1803.10704)"

    def build(self):
        n = self.num_terms
        self.current = state_variable(np.ones(n), "multiloss_dwa_weights")
        self.sums = state_variable(np.zeros(n), "multiloss_dwa_epoch_sums")
        self.counts = state_variable(np.zeros(n), "multiloss_dwa_epoch_counts")
        self.history = state_variable(np.zeros((2, n)), "multiloss_dwa_history")  # L(t-1), L(t-2)
        self.epochs = state_variable(0, "multiloss_dwa_epochs")
        self.state = {"current": self.current, "sums": self.sums, "counts": self.counts,
                      "history": self.history, "epochs": self.epochs}

    def weights(self, values, present, ctx):
        if ctx.training:
            self.sums.assign_add(values * present)
            self.counts.assign_add(present)
        return self.current_weights()

    def on_epoch_end(self, epoch):
        sums, counts = ops.convert_to_numpy(self.sums), ops.convert_to_numpy(self.counts)
        hist = ops.convert_to_numpy(self.history)
        # A term absent for a whole epoch keeps its previous mean (ratio 1).
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), hist[0])
        hist = np.stack([mean, hist[0]])
        done = float(ops.convert_to_numpy(self.epochs)) + 1
        self.history.assign(hist.astype("float32"))
        self.epochs.assign(done)
        self.sums.assign(np.zeros_like(sums))
        self.counts.assign(np.zeros_like(counts))
        if done >= 2:
            self.current.assign(ops.convert_to_numpy(dwa_weights(hist[0], hist[1], self.params.temperature)))
