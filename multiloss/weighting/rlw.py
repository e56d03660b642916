"""Random Loss Weighting (Lin et al., TMLR 2022, "Reasonable effectiveness of random weighting").

At every training step the strategy weights are drawn afresh and normalised
onto the simplex (they sum to 1):

* ``normal`` (default, as in the paper and LibMTL): λ = softmax(z), z ~ N(0, I)
* ``uniform``:   λ = u / Σu, u ~ U(0, 1)
* ``dirichlet``: λ ~ Dir(1, …, 1), uniform on the simplex

The draw is a pure function of ``(params.seed, step)`` (see
:mod:`multiloss.weighting.rng`), so a run is reproducible, every replica
draws the same weights, and eager, graph and XLA runs agree.  Evaluation
uses the last training draw.  A term absent from a batch (no labels) is left
out of that step's draw: the present terms' weights are renormalised to sum 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec.lazy import tf
from . import rng
from .base import LossWeighting, Params


class RLWParams(Params):
    distribution: Literal["normal", "uniform", "dirichlet"] = "normal"
    seed: int = Field(0, ge=0)


def rlw_sample(num: int, seed: int, step, distribution: str = "normal"):
    """The weights of ``step`` (a deterministic function of ``(seed, step)``), float32."""
    if distribution == "normal":
        lam = tf.nn.softmax(rng.normal(num, seed, step))
    elif distribution == "uniform":
        u = rng.uniform(num, seed, step)
        lam = u / tf.reduce_sum(u)
    else:  # Dir(1, ..., 1): normalised standard exponentials
        e = -tf.math.log(rng.uniform(num, seed, step))
        lam = e / tf.reduce_sum(e)
    return tf.cast(lam, tf.float32)


class RLW(LossWeighting):
    name = "rlw"
    Params = RLWParams
    reference = "Lin, Ye, Xu, Shi & Zhang, TMLR 2022 (arXiv:2111.10603)"

    def build(self):
        self.keep_current(1.0 / self.num_terms, "multiloss_rlw_weights")

    def weights(self, values, present, ctx):
        if not ctx.training:
            return self.current_weights()
        p = self.params
        lam = rlw_sample(self.num_terms, p.seed, ctx.step, p.distribution)
        # A term absent from the batch is left out: the draw is renormalised over the present terms
        # (one present term weighs 1), so an absent term does not shrink the others' step at random.
        kept = lam * present
        lam = tf.where(tf.reduce_all(present > 0), lam, tf.math.divide_no_nan(kept, tf.reduce_sum(kept)))
        self.current.assign(lam)
        return lam
