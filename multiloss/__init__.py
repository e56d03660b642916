"""multiloss: multi-task loss composition for Keras 3.

    import multiloss as ml
    spec = ml.load_spec("configs/siamese.yaml")
    ml.compile(model, spec, optimizer="adam")
    model.fit(x, y)
"""

# `models` and `incremental` register their layers and losses with Keras, so that every
# model multiloss saves loads after `import multiloss` alone.
from . import diagnostics, incremental, losses, models, schedules, weighting
from .composite import CompositeLoss, LossResult
from .diagnostics import GradientDiagnostics
from .errors import NonFiniteError, RunError, SpecError
from .imports import allow_import
from .keras_compile import build_loss, compile, compile_kwargs
from .losses import register_loss
from .reduction import REDUCTIONS
from .spec import LossSpec, load_spec
from .weighting import STRATEGIES, WeightLogger
from .weighting import register_strategy as register_strategy

__version__ = "0.1.0"

__all__ = [
    "CompositeLoss", "GradientDiagnostics", "LossResult", "LossSpec", "NonFiniteError", "REDUCTIONS", "RunError",
    "STRATEGIES", "SpecError", "WeightLogger", "allow_import", "build_loss", "compile", "compile_kwargs",
    "diagnostics", "incremental", "load_spec", "losses", "models", "register_loss", "register_strategy",
    "schedules", "weighting",
]
