"""The spec layer: what a YAML file says, checked, with no TensorFlow.

Schema and resolution of the loss spec (:mod:`.loss_spec`), safe YAML with
line numbers (:mod:`.yamlio`), the one config loader (:mod:`.configfile`),
problems and errors (:mod:`.validation`, :mod:`.errors`), import strings and
their trust model (:mod:`.imports`), weight schedules (:mod:`.schedules`) and
the stand-ins that import TensorFlow on first use (:mod:`.lazy`).  Nothing
here imports TensorFlow at module level (tests/test_architecture.py).
"""

from .lazy import lazy_attributes

# The schema loads on first use, so that `from multiloss.spec.errors import SpecError` stays light.
__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ["HeadSpec", "KERAS_METRICS", "LossSpec", "Term", "TermSpec", "WeightingSpec", "load_spec",
     "spec_from_data"], ".loss_spec"))

__all__ = ["HeadSpec", "KERAS_METRICS", "LossSpec", "Term", "TermSpec", "WeightingSpec", "load_spec",
           "spec_from_data"]
