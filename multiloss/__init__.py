"""multiloss: multi-task loss composition for Keras 3.

    import multiloss as ml
    spec = ml.load_spec("configs/siamese.yaml")
    ml.compile(model, spec, optimizer="adam")
    model.fit(x, y)

``import multiloss`` imports Keras and registers every layer, loss and
strategy multiloss saves, so that every model it saves loads after
``import multiloss`` alone.  With the environment variable
``MULTILOSS_SPEC_ONLY=1`` (the console script sets it for ``describe``,
``schema`` and a spec-only ``validate``) only the spec layer is imported, which
needs no TensorFlow; every other name below is then imported on first use.
"""

from . import incremental  # registers the incremental losses (the rest of it loads on first use)
from .errors import NonFiniteError, RunError, SpecError
from .imports import allow_import
from .lazy import lazy_attributes, spec_only
from .losses import register_loss
from .reduction import REDUCTIONS
from .spec import LossSpec, load_spec

__version__ = "0.1.0"

# Public names that need Keras, and the modules that register with Keras what multiloss saves.
__getattr__ = lazy_attributes(__name__, {
    "CompositeLoss": "composite", "LossResult": "composite", "GradientDiagnostics": "diagnostics",
    "build_loss": "keras_compile", "compile": "keras_compile", "compile_kwargs": "keras_compile",
    "STRATEGIES": "weighting", "WeightLogger": "weighting", "register_strategy": "weighting",
    "diagnostics": None, "models": None, "schedules": None, "weighting": None,
})
if not spec_only():
    __getattr__.load_all()
    incremental.load_all()

__all__ = [
    "CompositeLoss", "GradientDiagnostics", "LossResult", "LossSpec", "NonFiniteError", "REDUCTIONS", "RunError",
    "STRATEGIES", "SpecError", "WeightLogger", "allow_import", "build_loss", "compile", "compile_kwargs",
    "diagnostics", "incremental", "load_spec", "losses", "models", "register_loss", "register_strategy",
    "schedules", "weighting",
]
