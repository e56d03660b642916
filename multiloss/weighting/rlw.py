"""Random Loss Weighting (Lin et al., TMLR 2022, "Reasonable effectiveness of random weighting").

At every training step the strategy weights are drawn afresh and normalised
onto the simplex (they sum to 1):

* ``normal`` (default, as in the paper and LibMTL): λ = softmax(z), z ~ N(0, I)
* ``uniform``:   λ = u / Σu, u ~ U(0, 1)
* ``dirichlet``: λ ~ Dir(α·1) (``params.concentration`` = α)

The draw is a stateless function of ``(params.seed, step)``, so a run is
reproducible, every replica draws the same weights, and XLA can compile it.
Evaluation uses the last training draw.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import tensorflow as tf
from keras import ops
from pydantic import Field

from .base import Params, Strategy, state_variable


class RLWParams(Params):
    distribution: Literal["normal", "uniform", "dirichlet"] = "normal"
    seed: int = Field(0, ge=0)
    concentration: float = Field(1.0, gt=0, description="Dirichlet α (distribution: dirichlet).")


def rlw_sample(num: int, seed: int, step, distribution: str = "normal", concentration: float = 1.0):
    """The weights of ``step`` (deterministic in ``(seed, step)``)."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    if distribution == "normal":
        return tf.nn.softmax(tf.random.stateless_normal([num], key))
    if distribution == "uniform":
        u = tf.random.stateless_uniform([num], key, minval=1e-6, maxval=1.0)
        return u / tf.reduce_sum(u)
    g = tf.random.stateless_gamma([num], key, alpha=tf.fill([num], float(concentration)))
    return g / tf.reduce_sum(g)


class RLW(Strategy):
    name = "rlw"
    Params = RLWParams
    reference = "Lin, Ye, Xu, Shi & Zhang, TMLR 2022 (arXiv:2111.10603)"

    def build(self):
        self.current = state_variable(np.full(self.num_terms, 1.0 / self.num_terms), "multiloss_rlw_weights")
        self.state = {"current": self.current}

    def weights(self, values, present, ctx):
        if not ctx.training:
            return ops.convert_to_tensor(self.current)
        p = self.params
        lam = rlw_sample(self.num_terms, p.seed, ctx.step, p.distribution, p.concentration)
        self.current.assign(lam)
        return lam
