"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), log-variance form.

Each term i has a learned log-variance ``s_i = log σ_i²`` (trained by the
model's optimizer together with the network).  Its part of the objective is

* regression:      ½·exp(-s_i)·L_i + ½·s_i        (= L/(2σ²) + log σ)
* classification:    exp(-s_i)·L_i + ½·s_i        (= L/σ²    + log σ)

so the strategy weight is λ_i = c_i·exp(-s_i) with c_i = ½ (regression) or 1
(classification).  For a fixed L the optimum is s = log L (regression) or
s = log 2L (classification).  The static weight and schedule multiply the
whole per-term objective, so they scale a term without moving its optimum.

The variant is chosen per term with ``params.kinds: {term: regression |
classification}``; by default a term whose loss is a cross-entropy (binary,
categorical, sparse, focal) is ``classification`` and any other is
``regression``.  A term absent from a batch (no element with a nonzero
weight) contributes neither L nor the ½·s_i penalty, so its s_i does not
drift while its labels are missing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec.lazy import ops
from ..spec.validation import no_such
from .base import LossWeighting, Params, state_variable

Kind = Literal["regression", "classification"]


class UncertaintyParams(Params):
    kinds: dict[str, Kind] = Field(default_factory=dict,
                                   description="Term -> regression | classification (default: from the loss).")
    init: float = Field(0.0, ge=-80, le=80, description="Initial log-variance s = log σ² (|s| ≤ 80: the "
                                                        "weight exp(−s) overflows float32 below −88).")


def default_kind(term) -> str:
    """``classification`` for cross-entropy losses, else ``regression``."""
    fn = term.loss.fn
    name = getattr(fn, "__name__", "") or type(fn).__name__
    return "classification" if "crossentropy" in name.lower() else "regression"


class Uncertainty(LossWeighting):
    name = "uncertainty"
    Params = UncertaintyParams
    reference = "Kendall, Gal & Cipolla, CVPR 2018 (arXiv:1705.07115)"

    @classmethod
    def check(cls, params, terms):
        names = [t.name for t in terms]
        return [(("kinds", k), no_such("term", k, names)) for k in params.kinds if k not in names]

    def build(self):
        self.kinds = [self.params.kinds.get(t.name, default_kind(t)) for t in self.terms]
        self.coef = ops.convert_to_tensor([1.0 if k == "classification" else 0.5 for k in self.kinds], "float32")
        self.log_vars = state_variable([self.params.init] * self.num_terms, "multiloss_log_vars",
                                       trainable=True)
        self.state = {"log_vars": self.log_vars}

    @property
    def trainable_variables(self):
        return [self.log_vars]

    def weights(self, values, present, ctx):
        return self.coef * ops.exp(-ops.convert_to_tensor(self.log_vars))

    def regularizer(self, scale, present, ctx):
        return ops.sum(scale * present * 0.5 * ops.convert_to_tensor(self.log_vars))

    def sigmas(self):
        """σ_i = exp(s_i / 2), as numpy."""
        import numpy as np

        return np.exp(0.5 * ops.convert_to_numpy(self.log_vars))
