"""Class-incremental learning: distillation + classification as multiloss terms.

    from multiloss.incremental import run_incremental
    run_incremental("configs/incremental_fashion_mnist.yaml", ["method.name=icarl"])

A CNN feature extractor with a fully connected classifier learns classes in
steps; each step's loss is a multiloss spec (``classification`` and
``distillation`` terms with weights, built and logged by the composite loss),
read from the target layout ``[previous model's logits for the old classes |
one-hot over the new]``.  Methods: ``finetune``, ``joint``, ``replay``,
``lwf``, ``icarl``, ``eeil``, ``wa``, ``bic``, ``podnet``, ``der``, ``lucir``, ``ewc``, ``foster``,
``memo``, and any registered with :func:`register_method`.  Importing this package registers the
losses ``incremental_distillation``, ``incremental_classification``, ``icarl_bce``, ``pod_spatial``,
``pod_flat``, ``nca`` and the others of :mod:`multiloss.incremental.losses` (FOSTER's
``class_scaled_crossentropy`` and ``balanced_distillation`` among them).
"""

from ..spec.lazy import lazy_attributes
from .losses import distillation_loss, icarl_targets, incremental_targets

# The rest needs Keras at import (layers registered for saving) and loads on first use.
__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(["IncrementalConfig", "load_incremental_config"], ".config"),
    **dict.fromkeys(["ExemplarMemory", "herding_order"], ".memory"),
    **dict.fromkeys(["DER", "EEIL", "METHODS", "WA", "BiC", "FineTune", "ICaRL", "Joint", "LwF", "Method",
                     "PODNet", "Replay", "Step", "get_method", "register_method", "LUCIR", "EWC", "FOSTER",
                     "MEMO"], ".methods"),
    **dict.fromkeys(["average_incremental_accuracy", "class_order", "forgetting"], ".metrics"),
    **dict.fromkeys(["BACKBONES", "DERNet", "FOSTERNet", "MEMONet", "IncrementalNet", "align_weights",
                     "expand_classifier", "get_backbone", "register_backbone"], ".network"),
    **dict.fromkeys(["check_incremental", "evaluate_incremental", "plot_incremental", "run_incremental"],
                    ".runner"),
})
#: Imports the rest; ``multiloss.load_all()`` (a plain ``import multiloss``) calls it, so that saved
#: models load.  Not called here: the loss registry imports :mod:`.losses` (so this package) while
#: validating a spec, which must not import TensorFlow.
load_all = __getattr__.load_all

__all__ = [
    "distillation_loss", "incremental_targets", "icarl_targets", "ExemplarMemory", "herding_order",
    "IncrementalNet", "DERNet", "FOSTERNet", "MEMONet", "expand_classifier", "align_weights", "BACKBONES",
    "get_backbone",
    "register_backbone", "Method", "Step", "METHODS",
    "register_method", "get_method", "FineTune", "Joint", "LwF", "ICaRL", "EEIL", "WA", "Replay", "BiC",
    "PODNet", "DER", "LUCIR", "EWC", "FOSTER", "MEMO", "class_order", "average_incremental_accuracy", "forgetting",
    "IncrementalConfig", "load_incremental_config", "run_incremental", "check_incremental",
    "evaluate_incremental", "plot_incremental",
]
