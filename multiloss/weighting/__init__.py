"""Dynamic and learned loss weighting, chosen in the spec::

    weighting:
      strategy: gradnorm          # static | uncertainty | dwa | gradnorm | pcgrad | rlw | mgda | cagrad
      params: {alpha: 1.5, lr: 0.025}
    schedules:
      bin_out: {kind: linear, start: 0.0, end: 0.5, steps: 1000, warmup: 100}

The effective weight of a term is static spec weight × schedule factor ×
strategy weight; it lives in ``CompositeLoss.weights`` and is logged each
epoch as ``<term>_weight`` (and each step to TensorBoard by
:class:`WeightLogger`).  Every strategy is a small object behind the
interface of :class:`~multiloss.weighting.base.Strategy`; see
``docs/weighting.md`` for the formulas and references.
"""

from .base import Context, Params, Strategy
from .callbacks import WeightLogger
from .registry import STRATEGIES, check_spec
from .shared import infer_shared

__all__ = ["STRATEGIES", "Context", "Params", "Strategy", "WeightLogger", "check_spec", "infer_shared"]
