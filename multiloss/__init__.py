"""multiloss: multi-task loss composition for Keras 3.

    import multiloss as ml
    spec = ml.load_spec("configs/siamese.yaml")
    ml.compile(model, spec, optimizer="adam")
    model.fit(x, y)
"""

from . import losses
from .composite import CompositeLoss, LossResult
from .errors import SpecError
from .keras_compile import build_loss, compile, compile_kwargs
from .losses import register_loss
from .reduction import REDUCTIONS
from .spec import LossSpec, load_spec

__version__ = "0.1.0"

__all__ = [
    "CompositeLoss", "LossResult", "LossSpec", "REDUCTIONS", "SpecError", "build_loss",
    "compile", "compile_kwargs", "load_spec", "losses", "register_loss",
]
