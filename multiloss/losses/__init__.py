"""Losses: the registry of names (multiloss's own and Keras's), and reduction.

A loss is math only, ``(y_true, y_pred) -> L`` with L shaped ``[B]`` or
``[B, d1..dk]``; element weights, masks and the reduction over the batch are
applied once, in :mod:`.reduction`.  multiloss's own losses are in
:mod:`.builtin`; the loss table (:mod:`multiloss.spec.loss_table`) imports it the first time it is read.

    >>> import multiloss as ml
    >>> fn = ml.losses.get("huber", delta=2.0)
"""

from ..spec.loss_table import (
    KERAS_CLASSES,
    KERAS_FUNCTIONS,
    LOSSES,
    LossFn,
    TargetKind,
    canonical_name,
    get,
    is_registered,
    names,
    register_loss,
    same_rank,
)

__all__ = ["KERAS_CLASSES", "KERAS_FUNCTIONS", "LOSSES", "LossFn", "TargetKind", "canonical_name", "get",
           "is_registered", "names", "register_loss", "same_rank"]
