"""Every use of Keras's private modules and attributes, in one place.

multiloss plugs into Keras's trainer (its train step, compiled loss and
metrics, and safe-mode loading) and reads its layer graph; the private
functions and attributes that needs are imported, read and written here and
nowhere else, as small named functions, so a Keras upgrade has one module to
check (``pyproject.toml`` pins the minor version they were checked against).
The overrides of Keras's private methods (``_maybe_symbolic_build``,
``_get_metrics_result_or_logs``) are :class:`TrainerOverrides`, mixed into
every model ``ml.compile`` installs on.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from keras import ops
from keras.src import api_export
from keras.src.export.export_utils import get_input_signature as export_input_signature
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.metrics import ALL_OBJECTS_DICT as _METRICS
from keras.src.models.functional import Functional
from keras.src.saving import object_registration
from keras.src.saving.serialization_lib import deserialize_keras_object, in_safe_mode
from keras.src.trainers.compile_utils import get_metric
from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight
from keras.src.trainers.trainer import Trainer
from keras.src.utils.tracking import DotNotTrackScope


def metric_names() -> list[str]:
    """The names Keras's ``compile(metrics=[...])`` resolves."""
    return sorted(_METRICS)


# --- the trainer's compiled loss and metrics -------------------------------------------


def compiled_loss(model):
    """The loss the trainer computes (``compile(loss=...)``; ml.compile's CompositeLoss), or None."""
    return getattr(model, "_compile_loss", None)


def set_compiled_loss(model, loss) -> None:
    with DotNotTrackScope():    # as Keras's compile: not tracked, or a re-compile keeps the old one's metrics
        model._compile_loss = loss


def compiled_metrics(model):
    """The trainer's compiled metrics container (ml.compile's HeadMetrics), or None."""
    return getattr(model, "_compile_metrics", None)


def set_compiled_metrics(model, metrics) -> None:
    with DotNotTrackScope():
        model._compile_metrics = metrics


def loss_tracker(model):
    """The trainer's ``loss`` mean metric."""
    return model._loss_tracker


def compute_loss(model, x, y, y_pred, sample_weight, training: bool = True):
    """The trainer's loss of a batch (compiled loss + ``model.losses``, through a user's ``compute_loss``)."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)


def regularization_loss(model):
    """The sum of ``model.losses`` (each aggregated as the trainer does), or None without any."""
    if not model.losses:
        return None
    return ops.sum(ops.stack([model._aggregate_additional_loss(extra) for extra in model.losses]))


def call_model(model, x, training: bool = True):
    """``model(x, training=...)``, or ``model(x)`` when its ``call`` takes no ``training``."""
    return model(x, training=training) if model._call_has_training_arg else model(x)


# --- the layer graph -----------------------------------------------------------------------


def output_structure(model):
    """The structure (a dict, list or tensor) of a functional model's outputs, or None."""
    return getattr(model, "_outputs_struct", None)


def input_structure(model):
    """The structure of a functional model's inputs, or None."""
    return getattr(model, "_inputs_struct", None)


def producer(tensor):
    """``(layer, node)`` that made a symbolic tensor, or None (not made by a layer)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    layer, node_index, _ = history
    return layer, layer._inbound_nodes[node_index]


def all_layers(model) -> list:
    """Every layer of ``model``, nested ones included (the model itself first)."""
    return list(model._flatten_layers())


# --- registered names ------------------------------------------------------------------------


class _Registry(dict):
    """Keras's dict of registered objects, with a fallback for names it does not hold."""

    def __init__(self, items, fallback):
        super().__init__(items)
        self.fallback = fallback

    def __contains__(self, key):
        if super().__contains__(key):
            return True
        return isinstance(key, str) and self.fallback(key) is not None

    def __missing__(self, key):
        found = self.fallback(key) if isinstance(key, str) else None
        if found is None:
            raise KeyError(key)
        return found


def save_as(sub: type, base: type) -> None:
    """Have instances of ``sub`` serialise exactly as instances of ``base`` would: the same module, class
    name and registered name (or public Keras name), so a saved file names ``base`` and loads where
    ``sub``'s package is not installed.  ``sub`` stays reachable under the names it was registered with.
    """
    object_registration.GLOBAL_CUSTOM_NAMES[sub] = object_registration.get_registered_name(base)
    public = api_export.get_name_from_symbol(base)
    if public is not None:
        api_export.REGISTERED_OBJS_TO_NAMES[sub] = public
    sub.__module__ = base.__module__


def install_compile_config_hook(hook) -> None:
    """Have every Keras model's ``compile_from_config(config)`` ask ``hook(model, config)`` first.

    ``hook`` returns True when it compiled the model itself; otherwise Keras's own method runs.  Loading
    a file calls ``compile_from_config`` on the model class the file names (a plain Keras class, for
    the files :func:`save_as` shapes), so this is where a loaded model gets its composite loss back.
    Installing again replaces the hook.
    """
    original = getattr(Trainer.compile_from_config, "__wrapped__", Trainer.compile_from_config)

    @functools.wraps(original)
    def compile_from_config(self, config):
        if not hook(self, config):
            original(self, config)

    Trainer.compile_from_config = compile_from_config


def in_multi_worker_mode(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy across more than one worker (a private
    method of TensorFlow's strategy, read here)."""
    extended = getattr(strategy, "extended", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and getattr(
        extended, "_in_multi_worker_mode", lambda: False)()


# Apart from each other, as TensorFlow's own tests keep theirs (strategy_combinations.py).
_KEY_STRIDE = 100_000


def mirrored_strategy(devices=None, cross_device_ops=None) -> tf.distribute.MirroredStrategy:
    """``tf.distribute.MirroredStrategy(devices, cross_device_ops)`` whose collective keys no
    earlier one in this process used.

    Every MirroredStrategy numbers its all-reduces from the same group key, so a second one in a
    process (a second ``ml.train``, a second model in a notebook) meets the first one's cached
    collectives: "Shape mismatch in the collective instance 100" (tensorflow#62790), natively
    too.  Moving the private class attribute ``_collective_key_base`` on first, as TensorFlow's
    tests do, gives each strategy a group of its own.
    """
    tf.distribute.MirroredStrategy._collective_key_base += _KEY_STRIDE
    return tf.distribute.MirroredStrategy(devices, cross_device_ops)


#: The name Keras gives a ``keras.random.SeedGenerator``'s state variable (its counter of draws).
_SEED_STATE = "seed_generator_state"


def seed_states(model) -> list[list[int]]:
    """The state of every seed generator in ``model`` (Dropout's, a random layer's), in the order of
    ``model.variables`` (their paths carry a process-wide counter, so the order is what a reloaded model
    shares).  Keras leaves them out of ``.keras`` files, so a reloaded model would draw its first masks again."""
    return [ops.convert_to_numpy(v).tolist() for v in model.variables if v.name == _SEED_STATE]


def set_seed_states(model, states: list[list[int]]) -> None:
    """Put back :func:`seed_states` (nothing, when the model has another number of them)."""
    variables = [v for v in model.variables if v.name == _SEED_STATE]
    if len(variables) == len(states):
        for v, state in zip(variables, states):
            v.assign(ops.convert_to_tensor(state, dtype=v.dtype))


def install_registered_name_fallback(fallback) -> None:
    """Have Keras's registry of custom objects ask ``fallback(name)`` (an object or None) for a name it lacks.

    Keras resolves a saved object's ``registered_name`` in its global dict of
    registered objects alone; this puts a dict there that also asks
    ``fallback`` (once: a second call replaces the fallback).  Nothing is
    added to the dict: ``keras.saving.get_custom_objects()`` lists what it did.
    """
    registry = object_registration.GLOBAL_CUSTOM_OBJECTS
    if isinstance(registry, _Registry):
        registry.fallback = fallback
        return
    object_registration.GLOBAL_CUSTOM_OBJECTS = _Registry(registry, fallback)


# --- overrides of the trainer's private methods ---------------------------------------------


class TrainerOverrides:
    """The overrides of Keras's private trainer methods, mixed into :class:`~multiloss.core.model.MultilossModel`."""

    def _get_metrics_result_or_logs(self, logs):
        # Keras keeps the last step's logs unless their keys equal a fresh read;
        # ours lack the per-epoch `<term>_weight` keys, so prefer the fresh read.
        metric_logs = self.get_metrics_result()
        if isinstance(logs, dict) and set(logs) <= set(metric_logs):
            return metric_logs
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras first reduces a whole batch across replicas to build things
        # symbolically; that fails under MultiWorkerMirroredStrategy.  When the
        # model, loss and metrics are built already there is nothing to build.
        built = all(layer.built for layer in all_layers(self)) and all(
            obj is None or obj.built for obj in (compiled_loss(self), compiled_metrics(self)))
        if not built:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        return None


__all__ = ["Functional", "TrainerOverrides", "all_layers", "call_model", "compiled_loss",
           "compiled_metrics", "compute_loss", "deserialize_keras_object", "export_input_signature", "get_metric",
           "in_multi_worker_mode", "in_safe_mode", "input_structure", "install_compile_config_hook",
           "install_registered_name_fallback", "loss_tracker", "metric_names", "mirrored_strategy",
           "output_structure", "producer", "regularization_loss", "save_as", "seed_states",
           "set_compiled_loss", "set_compiled_metrics", "set_seed_states",
           "unpack_x_y_sample_weight", "unscale_loss_for_distribution"]
