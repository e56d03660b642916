"""Every use of Keras's private modules (``keras.src``), in one place.

multiloss plugs into Keras's trainer (its train step, compiled loss and
metrics, and safe-mode loading); the few private functions that needs are
imported here and nowhere else, so a Keras upgrade has one module to check.
"""

from __future__ import annotations

from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.metrics import ALL_OBJECTS_DICT as _METRICS
from keras.src.models.functional import Functional
from keras.src.saving.serialization_lib import deserialize_keras_object, in_safe_mode
from keras.src.trainers.compile_utils import get_metric
from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight


def metric_names() -> list[str]:
    """The names Keras's ``compile(metrics=[...])`` resolves."""
    return sorted(_METRICS)


__all__ = ["Functional", "deserialize_keras_object", "get_metric", "in_safe_mode", "metric_names",
           "unpack_x_y_sample_weight", "unscale_loss_for_distribution"]
