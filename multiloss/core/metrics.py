"""Per-head metrics, logged as ``<head>_<metric>``.

Keras's own container insists on a target for every model output, which a
model with embedding outputs (and no targets for them) does not have; it
also cannot see a head's ``mask_value``.  :class:`HeadMetrics` updates only
the heads that have metrics, leaves masked targets out, and otherwise
follows Keras: ``accuracy`` resolves to binary, categorical or sparse
accuracy from the shapes, and sample weights do not apply (as for Keras's
``metrics=``), except that a weight of 0 leaves the sample out (below).

Missing labels are left out as the losses leave them out
(:mod:`multiloss.losses.reduction`), by the metric's class:

- per element, for :data:`MEAN_OF_ELEMENTS` (a mean over the last axis of a
  function of each pair: binary accuracy, MAE, MSE, RMSE, BCE, …: evaluated on
  ``[.., K, 1]`` with a weight per label) and :data:`PER_ENTRY` (values per
  entry already: AUC, precision, recall and the other thresholded counts,
  exact-match ``Accuracy``: given a weight per label): the metric is its value
  over the present (position, label) pairs;
- per position for every other metric (categorical and sparse accuracy,
  top-k, IoU, a user's own): a position with any missing component is left out.

A sample whose ``sample_weight`` for a head is 0 has no label for it (the losses leave it out; so
does :mod:`multiloss.run.tasks` for another task's batch) and is left out of the head's metrics the
same way; other weights do not apply.

Keras's metrics read the classes from the last axis.  A head whose loss takes them from another one
(``categorical_crossentropy`` with ``params: {axis: 1}`` on a channels-first ``[B, C, H, W]``)
has that axis moved last in its predictions and one-hot targets before its metrics see them, so that
``accuracy`` is the fraction of positions whose argmax over the classes is right.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..spec.imports import import_object, is_import_string
from ..spec.loss_spec import LossSpec
from ..spec.loss_table import same_rank
from .composite import as_output_dict
from .keras_access import get_metric

#: Keras's metrics that are a mean over the last axis of a function of each (target, prediction) pair.
MEAN_OF_ELEMENTS = (
    keras.metrics.BinaryAccuracy, keras.metrics.BinaryCrossentropy,
    keras.metrics.MeanAbsoluteError, keras.metrics.MeanSquaredError, keras.metrics.RootMeanSquaredError,
    keras.metrics.MeanAbsolutePercentageError, keras.metrics.MeanSquaredLogarithmicError,
    keras.metrics.LogCoshError, keras.metrics.Poisson, keras.metrics.Hinge, keras.metrics.SquaredHinge,
)
#: Keras's metrics whose values are per entry of the prediction already (thresholded counts, exact match).
PER_ENTRY = (
    keras.metrics.Accuracy, keras.metrics.AUC, keras.metrics.Precision, keras.metrics.Recall, keras.metrics.TruePositives,
    keras.metrics.TrueNegatives, keras.metrics.FalsePositives, keras.metrics.FalseNegatives,
    keras.metrics.PrecisionAtRecall, keras.metrics.RecallAtPrecision,
    keras.metrics.SensitivityAtSpecificity, keras.metrics.SpecificityAtSensitivity,
)


def masked_update(metric: keras.metrics.Metric, target, pred, valid) -> None:
    """Update ``metric`` leaving out missing labels: per element or per position, as the module's docstring says.

    ``target`` holds no missing value any more (:func:`~multiloss.losses.reduction.mask_targets`);
    ``valid`` is its boolean map.
    """
    # 0/1 weights, in the metric's own dtype where it counts in integers (IoU's confusion matrix warns
    # of a float weight otherwise)
    dtype = metric.dtype if "int" in str(metric.dtype) else "float32"
    if isinstance(metric, MEAN_OF_ELEMENTS):
        metric.update_state(ops.expand_dims(target, -1), ops.expand_dims(pred, -1),
                            sample_weight=ops.cast(valid, dtype))
    elif isinstance(metric, PER_ENTRY):
        metric.update_state(target, pred, sample_weight=ops.cast(valid, dtype))
    else:
        per_position = red.reduce_axes_to(valid, len(pred.shape) - 1)
        metric.update_state(target, pred, sample_weight=ops.cast(per_position, dtype))


def _class_axes(spec: LossSpec, heads) -> dict[str, set[int]]:
    """The axes each head's losses take their classes from where one is not the last (a channels-first
    class axis: :func:`~multiloss.losses.reduction.class_axis`); axes that differ at every rank (1 and 2)
    are a SpecError at the head."""
    axes = {h: a for h, a in red.head_class_axes(spec.resolve()).items() if h in heads}
    for head, found in axes.items():
        if len({a for a in found if a >= 0}) > 1 or len({a for a in found if a < 0}) > 1:
            raise _ambiguous(spec, head, found)
    return axes


def _ambiguous(spec: LossSpec, head: str, found) -> Exception:
    return spec.error([(("outputs", head), f"the losses of head {head!r} reduce different axes {sorted(found)}, "
                                           "so its metrics' class axis is ambiguous; give them one `axis`")])


class HeadMetrics(keras.metrics.Metric):
    """The metrics of every head; ``result()`` is ``{<head>_<metric>: value}``."""

    def __init__(self, spec: LossSpec, output_names=None, name: str = "multiloss_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec = spec
        self.output_names = list(output_names or spec.outputs)
        self.names = spec.head_metrics()
        self.mask_values = {h: spec.outputs[h].mask_value for h in self.names}
        self.class_axes = _class_axes(spec, self.names)
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
            target, pred = y_true.get(head), y_pred[head]
            if target is None:
                continue
            target, pred = self._classes_last(head, target, pred)
            self._update_head(head, metrics, target, pred, sample_weight)

    def _classes_last(self, head: str, target: Any, pred: Any) -> tuple[Any, Any]:
        """``(target, pred)`` with the head's class axis moved last; a sparse target (one axis fewer)
        has no class axis and already lines up with the moved prediction."""
        rank = len(pred.shape)
        found = {a % rank for a in self.class_axes.get(head, ())} if rank else set()
        if len(found) > 1:
            raise _ambiguous(self.spec, head, found)
        axis = next(iter(found), rank - 1)
        if axis in (0, rank - 1):
            return target, pred
        target, pred = same_rank(target, pred)
        if len(target.shape) == rank:
            target = ops.moveaxis(target, axis, -1)
        return target, ops.moveaxis(pred, axis, -1)

    def _update_head(self, head: str, metrics: list, target, pred, sample_weight) -> None:
        mask_value = self.mask_values[head]
        weight = sample_weight.get(head) if isinstance(sample_weight, dict) else sample_weight
        if mask_value is None and weight is None:
            for i, m in enumerate(metrics):
                with self._named(head, i, target, pred):
                    m.update_state(target, pred)
            return
        target = same_rank(target, pred)[0]
        valid = ops.ones_like(target, "bool")
        if mask_value is not None:
            target, valid = red.mask_targets(target, mask_value)
        if weight is not None:      # a sample weighted 0 has no label for this head
            kept = ops.not_equal(ops.convert_to_tensor(weight), 0)
            for _ in range(len(target.shape) - len(kept.shape)):
                kept = ops.expand_dims(kept, -1)
            valid = ops.logical_and(valid, kept)
        for i, m in enumerate(metrics):
            with self._named(head, i, target, pred):
                masked_update(m, target, pred, valid)

    @contextlib.contextmanager
    def _named(self, head: str, index: int, target, pred):
        """A metric that cannot take its head's target and prediction (a sparse metric on one-hot or
        regression targets) is a SpecError at the metric in the spec, not TensorFlow's shape error."""
        try:
            yield
        except ValueError as exc:
            name = self.names[head][index]
            reason = str(exc).splitlines()[0][:300]
            raise self.spec.error([(self._metric_path(head, name),
                                    f"metric {name!r} of head {head!r} cannot take its target shaped "
                                    f"{tuple(target.shape)} and prediction shaped {tuple(pred.shape)}: {reason} "
                                    "(a sparse metric takes class ids [B] or [B, 1], a categorical one targets "
                                    "shaped like the prediction)")]) from None

    def _metric_path(self, head: str, name: str) -> tuple:
        own = list(self.spec.outputs[head].metrics)
        if name in own:
            return ("outputs", head, "metrics", own.index(name))
        top = self.spec.metrics
        return ("metrics", top.index(name)) if isinstance(top, list) and name in top else ("outputs", head)

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
