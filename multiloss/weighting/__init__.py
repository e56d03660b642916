"""Dynamic and learned loss weighting, chosen in the spec::

    weighting:
      strategy: gradnorm          # static | uncertainty | dwa | rlw | famo | gls | stch | imtl_l |
                                  # gradnorm | pcgrad | mgda | cagrad | nash_mtl | imtl_g | imtl |
                                  # gradvac | aligned_mtl | upgrad | fairgrad | config | dual_proj |
                                  # db_mtl | graddrop | excess_mtl | moco | modo | sdmgrad |
                                  # package.module:Class
      params: {alpha: 1.5, lr: 0.025}
      gradients: parameters       # or representation (MGDA-UB: one backward pass through the trunk)
      preference: {depth: 2, seg: 1}   # stch, config, dual_proj: a point on the trade-off
    schedules:
      bin_out: {kind: linear, start: 0.0, end: 0.5, steps: 1000, warmup: 100}

The effective weight of a term is static spec weight × schedule factor ×
strategy weight; it lives in ``CompositeLoss.weights`` and is logged each
epoch as ``<term>_weight`` (and each step to TensorBoard by
:class:`WeightLogger`).  Every strategy is a small object behind the
interface of :class:`~multiloss.weighting.base.Strategy`; see
``docs/weighting.md`` for the formulas and references.
"""

from ..spec.lazy import lazy_attributes
from .base import (
    Context,
    GramWeighting,
    LayerGradientWeighting,
    LossWeighting,
    Params,
    RowAggregator,
    StateUpdate,
    Strategy,
)
from .registry import STRATEGIES, check_spec, register_strategy

# Keras callbacks and the layer graph load on first use, so that a spec's `weighting:` is
# checked without TensorFlow.
__getattr__ = lazy_attributes(__name__, {
    "WeightCollapseWarning": "..core.weight_callbacks", "WeightLogger": "..core.weight_callbacks",
    "infer_shared": "..core.shared_params",
})

__all__ = ["STRATEGIES", "Context", "GramWeighting", "LayerGradientWeighting", "LossWeighting", "Params",
           "RowAggregator", "StateUpdate", "Strategy", "WeightCollapseWarning", "WeightLogger", "check_spec",
           "infer_shared", "register_strategy"]
