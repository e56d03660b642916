"""Class-incremental learning: distillation + classification as multiloss terms.

    from multiloss.incremental import run_incremental
    run_incremental("configs/incremental_fashion_mnist.yaml", ["method.name=icarl"])

A CNN feature extractor with a fully connected classifier learns classes in
steps; each step's loss is a multiloss spec (``classification`` and
``distillation`` terms with weights, built and logged by the composite loss),
read from the target layout ``[previous model's logits for the old classes |
one-hot over the new]``.  Methods: ``finetune``, ``joint``, ``lwf``,
``icarl``, ``eeil``, ``wa``.  Importing this package registers the losses
``incremental_distillation``, ``incremental_classification`` and
``icarl_bce``.
"""

from .config import IncrementalConfig, load_incremental_config
from .losses import distillation_loss, icarl_targets, incremental_targets
from .memory import ExemplarMemory, herding_order
from .methods import EEIL, METHODS, WA, FineTune, ICaRL, Joint, LwF, Method, Step
from .metrics import average_incremental_accuracy, class_order, forgetting
from .network import IncrementalNet, align_weights, expand_classifier
from .runner import check_incremental, evaluate_incremental, plot_incremental, run_incremental

__all__ = [
    "distillation_loss", "incremental_targets", "icarl_targets", "ExemplarMemory", "herding_order",
    "IncrementalNet", "expand_classifier", "align_weights", "Method", "Step", "METHODS", "FineTune",
    "Joint", "LwF", "ICaRL", "EEIL", "WA", "class_order", "average_incremental_accuracy", "forgetting",
    "IncrementalConfig", "load_incremental_config", "run_incremental", "check_incremental",
    "evaluate_incremental", "plot_incremental",
]
