"""Per-head metrics, logged as ``<head>_<metric>``.

Keras's own container insists on a target for every model output, which a
model with embedding outputs (and no targets for them) does not have; it
also cannot see a head's ``mask_value``.  :class:`HeadMetrics` updates only
the heads that have metrics, leaves masked targets out, and otherwise
follows Keras: ``accuracy`` resolves to binary, categorical or sparse
accuracy from the shapes, and sample weights do not apply (as for Keras's
``metrics=``).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..spec.imports import import_object, is_import_string
from ..spec.loss_spec import LossSpec
from .composite import as_output_dict
from .keras_access import get_metric


class HeadMetrics(keras.metrics.Metric):
    """The metrics of every head; ``result()`` is ``{<head>_<metric>: value}``."""

    def __init__(self, spec: LossSpec, output_names=None, name: str = "multiloss_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.output_names = list(output_names or spec.outputs)
        self.names = spec.head_metrics()
        self.mask_values = {h: spec.outputs[h].mask_value for h in self.names}
        self.head_metrics: dict[str, list[keras.metrics.Metric]] = {}
        self._strategy = tf.distribute.get_strategy()
        self.built = False

    def build(self, y_true, y_pred) -> None:
        y_true = as_output_dict(y_true, self.output_names, "y")
        y_pred = as_output_dict(y_pred, self.output_names, "y_pred")
        with self._strategy.scope():
            for head, names in self.names.items():
                if head not in y_true or head not in y_pred:
                    continue
                self.head_metrics[head] = [
                    get_metric(import_object(m) if is_import_string(m) else m, y_true[head], y_pred[head])
                    for m in names
                ]
        self.built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = as_output_dict(y_true, self.output_names, "y")
        y_pred = as_output_dict(y_pred, self.output_names, "y_pred")
        if not self.built:
            self.build(y_true, y_pred)
        for head, metrics in self.head_metrics.items():
            target, pred, weight = y_true.get(head), y_pred[head], None
            if target is None:
                continue
            mask_value = self.mask_values[head]
            if mask_value is not None:
                target = ops.convert_to_tensor(target)
                valid = red.valid_mask(target, mask_value)
                target = ops.where(valid, target, ops.zeros_like(target))
                if len(valid.shape) == len(pred.shape):
                    valid = ops.all(valid, axis=-1)
                weight = ops.cast(valid, "float32")
            for m in metrics:
                m.update_state(target, pred, sample_weight=weight)

    def reset_state(self):
        for metrics in self.head_metrics.values():
            for m in metrics:
                m.reset_state()

    def result(self):
        return {f"{head}_{m.name}": m.result()
                for head, metrics in self.head_metrics.items() for m in metrics}

    @property
    def variables(self):
        return [v for ms in self.head_metrics.values() for m in ms for v in m.variables]
