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

from . import compat
from .spec.errors import NonFiniteError, RunError, SpecError
from .spec.imports import allow_import
from .spec.lazy import lazy_attributes, spec_only
from .spec.loss_spec import LossSpec, load_spec
from .spec.loss_table import register_loss
from .spec.reductions import REDUCTIONS

__version__ = "0.1.0"
compat.install()   # old module paths (multiloss.examples, ...) keep resolving

# Public names that need Keras, and the modules that register with Keras what multiloss saves.
__getattr__ = lazy_attributes(__name__, {
    "CompositeLoss": ".core.composite", "LossResult": ".core.composite",
    "GradientDiagnostics": ".core.diagnostics",
    "build_loss": ".core.compile", "compile": ".core.compile", "compile_kwargs": ".core.compile",
    "mirrored_strategy": ".core.keras_access",
    "STRATEGIES": ".weighting", "WeightLogger": ".weighting", "register_strategy": ".weighting",
}, modules={"diagnostics": ".core.diagnostics", "incremental": ".incremental", "losses": ".losses",
            "models": ".run.models", "schedules": ".spec.schedules", "weighting": ".weighting"})


def load_all() -> None:
    """Import everything a plain ``import multiloss`` imports: Keras, and every layer, loss and
    strategy multiloss saves (the console script calls it after a spec-only import)."""
    __getattr__.load_all()
    __getattr__("incremental").load_all()   # its layers and methods, even after a spec-only import


if not spec_only():
    load_all()

__all__ = [
    "CompositeLoss", "GradientDiagnostics", "LossResult", "LossSpec", "NonFiniteError", "REDUCTIONS", "RunError",
    "STRATEGIES", "SpecError", "WeightLogger", "allow_import", "build_loss", "compile", "compile_kwargs",
    "diagnostics", "incremental", "load_spec", "losses", "mirrored_strategy", "models", "register_loss",
    "register_strategy", "schedules", "weighting",
]
