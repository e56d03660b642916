"""multiloss: multi-task loss composition for Keras 3.

    import multiloss as ml
    spec = ml.load_spec("configs/siamese.yaml")
    ml.compile(model, spec, optimizer="adam")
    model.fit(x, y)
"""

from . import diagnostics, losses, schedules, weighting
from .composite import CompositeLoss, LossResult
from .diagnostics import GradientDiagnostics
from .errors import SpecError
from .keras_compile import build_loss, compile, compile_kwargs
from .losses import register_loss
from .reduction import REDUCTIONS
from .spec import LossSpec, load_spec
from .weighting import STRATEGIES, WeightLogger

__version__ = "0.1.0"

__all__ = [
    "CompositeLoss", "GradientDiagnostics", "LossResult", "LossSpec", "REDUCTIONS", "STRATEGIES", "SpecError",
    "WeightLogger", "build_loss", "compile", "compile_kwargs", "diagnostics", "load_spec", "losses",
    "register_loss", "schedules", "weighting",
]
