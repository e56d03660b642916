"""The model side of ``ml.compile``: the :class:`MultilossModel` mixin and the registry of its subclasses.

``ml.compile`` gives a model a subclass of its own class with the mixin, so
every train step runs through :func:`multiloss.core.train_step.train_step`, and
the compile config carries the composite loss (spec, params and current
weights) under ``multiloss``.

A saved file names the model's own Keras class when Keras can load it
(:func:`saves_as_itself`: Keras's model classes and classes registered with
Keras), so ``load_model(path, compile=False)`` works where multiloss is not
installed; with multiloss imported, :func:`compile_saved` (hooked into Keras's
``compile_from_config``) gives the loaded model its subclass and composite loss
back.  A class Keras has not registered is saved as
``multiloss>{module}.{qualname}``, so two classes named ``Net`` in two modules
keep apart; in a fresh process that name is looked up by :func:`saved_class`
among the model classes defined (the user's module must be imported).  Files of
earlier releases name ``multiloss>Model``, ``multiloss>Sequential``,
``multiloss>Functional`` or ``multiloss>{class name}``; they load the same way.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from ..spec.errors import SpecError
from ..spec.imports import restricted
from . import guard
from .composite import LABEL_CHECK, CompositeLoss
from .keras_access import (
    Functional,
    TrainerOverrides,
    compiled_loss,
    deserialize_keras_object,
    in_multi_worker_mode,
    in_safe_mode,
    install_compile_config_hook,
    install_registered_name_fallback,
    save_as,
    set_compiled_loss,
    set_compiled_metrics,
)
from .metrics import HeadMetrics

PACKAGE = "multiloss"


def _no_fit_class_weight(model, class_weight) -> None:
    """``fit(class_weight=...)`` is Keras's for one output; several heads take theirs in the spec."""
    composite = compiled_loss(model)
    if class_weight is None or not isinstance(composite, CompositeLoss):
        return
    heads = list(composite.output_names or composite.spec.outputs)
    if len(heads) < 2:
        return
    raise ValueError(f"fit(class_weight=...) weighs the classes of one output, and this model has {len(heads)} "
                     f"({', '.join(heads)}): give each head its own in the loss spec, "
                     f"`outputs: {{{heads[0]}: {{class_weight: {{3: 5.0}}}}}}` (class id: weight)")


class MultilossModel(TrainerOverrides):
    """Mixin that runs the guarded train step and saves and restores the composite loss with the model.

    Its overrides of Keras's private trainer methods come from
    :class:`~multiloss.core.keras_access.TrainerOverrides`, the one place they live.
    """

    def get_compile_config(self):
        config = super().get_compile_config()
        composite = compiled_loss(self)
        if isinstance(composite, CompositeLoss):
            config["multiloss"] = composite.get_config()
        return config

    def train_step(self, data):
        composite = compiled_loss(self)
        if not isinstance(composite, CompositeLoss) or composite.guard is None:
            return super().train_step(data)
        from .train_step import train_step

        if composite.weighting is None:
            return _multi_worker_logs(train_step(self, data))
        with composite.weighting.in_training():
            return _multi_worker_logs(train_step(self, data))

    def make_train_function(self, force=False):
        super().make_train_function(force=force)
        composite = compiled_loss(self)
        function = self.train_function
        if (isinstance(composite, CompositeLoss) and composite.guard is not None and function is not None
                and not getattr(function, "multiloss_cut_short", False)):
            self.train_function = guard.cut_short_function(self, composite.guard, function)
        return self.train_function

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = super().from_config(config, custom_objects=custom_objects)
        model._remember_safe_mode(in_safe_mode() is not False)
        return model

    def _remember_safe_mode(self, safe: bool) -> None:
        """Keras calls ``compile_from_config`` outside its safe-mode scope: remember it at ``from_config``."""
        self._multiloss_safe_mode = safe

    @property
    def trainable_weights(self):
        # Learned strategy parameters (uncertainty's log-variances) train with the network.
        return super().trainable_weights + _strategy_trainables(self)

    @property
    def trainable_variables(self):
        return super().trainable_variables + _strategy_trainables(self)

    def fit(self, *args, **kwargs):
        try:
            call = inspect.signature(super().fit).bind(*args, **kwargs)
        except TypeError:
            call = None                  # Keras names the bad arguments itself
        callbacks = call.arguments.get("callbacks") if call is not None else None
        if not isinstance(callbacks, keras.callbacks.CallbackList):   # one assembled by the caller stays
            ordered = _fit_callbacks(self, list(callbacks or []))
            if ordered is not None and call is not None:
                call.arguments["callbacks"] = ordered
        if call is not None:
            _no_fit_class_weight(self, call.arguments.get("class_weight"))
            _weights_per_output(call.arguments, self)
            _new_trace_for_new_ranks(self, "train", call.arguments)
            validation = call.arguments.get("validation_data")
            if isinstance(validation, tuple) and len(validation) == 3:
                vx, vy, vw = validation
                vw = _weights_per_output({"y": vy, "sample_weight": vw}, self)["sample_weight"]
                call.arguments["validation_data"] = (vx, vy, vw)
            args, kwargs = call.args, call.kwargs
        try:
            with guard_labels(self):
                return super().fit(*args, **kwargs)
        finally:
            composite = compiled_loss(self)
            if isinstance(composite, CompositeLoss) and composite.guard is not None:
                composite.guard.watched = False    # also when fit raised before on_train_end

    def evaluate(self, *args, **kwargs):
        try:
            call = inspect.signature(super().evaluate).bind(*args, **kwargs)
            _weights_per_output(call.arguments, self)
            _new_trace_for_new_ranks(self, "test", call.arguments)
            args, kwargs = call.args, call.kwargs
        except TypeError:
            pass                         # Keras names the bad arguments itself
        with guard_labels(self):
            return super().evaluate(*args, **kwargs)

    def test_step(self, data):
        return _multi_worker_logs(super().test_step(data))

    def compile_from_config(self, config):
        config = dict(config)
        composite = config.pop("multiloss", None)
        if composite is not None:
            # Safe mode: import strings in the file resolve only to registered or trusted code.
            with restricted(getattr(self, "_multiloss_safe_mode", True)):
                composite = CompositeLoss.from_config(composite)
        if composite is None or composite.weighting is None:
            super().compile_from_config(config)
            if composite is not None:
                with self.distribute_strategy.scope():
                    install(self, composite)
            return
        # With a weighting strategy the composite is installed before the
        # optimizer is built: its learned parameters (if any) need slots too.
        self.compile(**deserialize_keras_object(config))
        with self.distribute_strategy.scope():
            install(self, composite)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)


def install(model, composite: CompositeLoss, nonfinite: str = "stop") -> None:
    """Make ``composite`` the model's compiled loss (with its guard, weighting and head metrics)."""
    composite.guard = guard.GuardState(composite.term_names, nonfinite)
    if composite.weighting is not None:
        composite.weighting.bind(model)   # the training step, the shared parameters (SpecError)
    set_compiled_loss(model, composite)
    model.loss = composite
    metrics = HeadMetrics(composite.spec, composite.output_names)
    set_compiled_metrics(model, metrics if metrics.names else None)


_LABEL = re.compile(re.escape(LABEL_CHECK) + r"\|(?P<source>[^|]*)\|(?P<path>[^|]*)\|(?P<msg>[^\]]*)\]"
                    r"\s*\[(?P<value>-?[\w.+-]+)")


@contextlib.contextmanager
def guard_labels(model: keras.Model | None = None) -> Iterator[None]:
    """Turn TensorFlow's failed label assert (a long traceback) into one SpecError line; and after any
    error, give ``model`` new train and test functions: a step that raised while being traced (a target
    the data lacks) leaves a tf.function that cannot create the variables of its next trace."""
    try:
        yield
    except BaseException as exc:
        if model is not None:
            model.train_function = model.test_function = None
        if not isinstance(exc, tf.errors.InvalidArgumentError):
            raise
        found = _LABEL.search(exc.message or "")
        if found is None:
            raise
        msg = found["msg"].replace("\\'", "'").replace("{}", found["value"], 1)
        path = tuple(found["path"].split(".")) if found["path"] else ()
        raise SpecError([(path, None, msg)], found["source"]) from None


def _weights_per_output(arguments: dict, model: keras.Model) -> dict:
    """Sample weights with dict targets, given per target as Keras's array adapter wants them: one array
    of more than one axis (per pixel), which it refuses for a model with several outputs (it wants
    ``[B]``) while multiloss applies one array to every term; and a dict that leaves targets out (they
    are unweighted, as from a ``tf.data`` pipeline) or misspells one (refused by name, not by Keras's
    dump of every array)."""
    weight, y = arguments.get("sample_weight"), arguments.get("y")
    if not isinstance(y, dict) or weight is None:
        return arguments
    if not isinstance(weight, dict):
        if len(getattr(weight, "shape", ())) > 1:
            arguments["sample_weight"] = {key: weight for key in y}
        return arguments
    composite = compiled_loss(model)
    if isinstance(composite, CompositeLoss):
        composite.check_weight_keys(weight, y)
    arguments["sample_weight"] = {key: weight.get(key) for key in y}
    return arguments


def _ranks(arguments: dict) -> Any:
    """The rank of every array in a call's ``x``, ``y`` and ``sample_weight`` (a dataset's: its elements');
    None where it is not known (a generator's)."""
    def rank(value):
        shape = getattr(value, "shape", None)
        return shape.rank if isinstance(shape, tf.TensorShape) else len(shape) if shape is not None else None

    data = arguments.get("x")
    if isinstance(data, tf.data.Dataset):
        return tf.nest.map_structure(rank, data.element_spec)
    return tf.nest.map_structure(rank, [data, arguments.get("y"), arguments.get("sample_weight")])


def _new_trace_for_new_ranks(model: keras.Model, function: str, arguments: dict) -> None:
    """A train (or test) call whose targets or weights have other ranks than the last one's gets a new
    function: TensorFlow would relax the traced one to inputs of unknown rank, where a target's shape
    against its prediction (``[B, H, W]`` or ``[B, H, W, 1]``) cannot be told; a fresh model traces it."""
    seen = model.__dict__.setdefault("_multiloss_ranks", {})
    ranks = _ranks(arguments)
    if function in seen and seen[function] != ranks:
        setattr(model, f"{function}_function", None)
    seen[function] = ranks


def _weighting(model):
    loss = compiled_loss(model)
    return loss.weighting if isinstance(loss, CompositeLoss) else None


def _strategy_trainables(model) -> list:
    weighting = _weighting(model)
    return weighting.strategy.trainable_variables if weighting is not None else []


def _fit_callbacks(model, callbacks: list) -> list | None:
    """multiloss's callbacks first (their logs reach History and TensorBoard): the
    non-finite guard, the weighting's own and gradient diagnostics."""
    composite = compiled_loss(model)
    if not isinstance(composite, CompositeLoss):
        return None
    if not any(isinstance(c, guard.NonFiniteGuard) for c in callbacks):
        callbacks = [guard.NonFiniteGuard(composite.guard)] + callbacks
    weighting = _weighting(model)
    if weighting is not None:
        return weighting.fit_callbacks(callbacks)
    from .diagnostics import GradientDiagnostics

    ours = [c for c in callbacks if isinstance(c, (guard.NonFiniteGuard, GradientDiagnostics))]
    return ours + [c for c in callbacks if c not in ours]


def _multi_worker_logs(logs):
    """Give step logs a length-1 axis under a multi-worker strategy.

    Keras 3.15 reduces each step log across workers with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails for scalars.  Epoch
    values are unaffected: they come from the metrics' cross-worker read.
    """
    if in_multi_worker_mode(tf.distribute.get_strategy()):
        return {k: tf.reshape(v, (1,)) for k, v in logs.items()}
    return logs


# --- the registry of the multiloss subclasses -----------------------------------------------------

_SUBCLASSES: dict[type, type] = {}  # registry: model class -> its multiloss subclass
#: Keras's own model classes, registered under the names every release has saved.
BUILTIN_NAMES = {keras.Model: "Model", keras.Sequential: "Sequential", Functional: "Functional"}


def registered_name(cls: type) -> str:
    """The name (after ``multiloss>``) under which the multiloss subclass of ``cls`` is registered."""
    if cls in BUILTIN_NAMES:
        return BUILTIN_NAMES[cls]
    return re.sub(r"[^A-Za-z0-9_.]", "_", f"{cls.__module__}.{cls.__qualname__}")


def multiloss_class(cls: type) -> type:
    """The registered subclass of model class ``cls`` with the :class:`MultilossModel` mixin (made once)."""
    if issubclass(cls, MultilossModel):
        return cls
    if cls not in _SUBCLASSES:
        sub = type(cls.__name__, (MultilossModel, cls), {"__module__": __name__})
        keras.saving.register_keras_serializable(PACKAGE, registered_name(cls))(sub)
        if saves_as_itself(cls):
            save_as(sub, cls)
        _SUBCLASSES[cls] = sub
    return _SUBCLASSES[cls]


def saves_as_itself(cls: type) -> bool:
    """Whether a model of class ``cls`` compiled by multiloss is saved under ``cls``'s own Keras name.

    True for Keras's own model classes and for classes registered with Keras
    (``@keras.saving.register_keras_serializable``): their files load with plain
    Keras, ``compile=False``, where multiloss is not installed.  A class Keras has
    not registered (which plain Keras could not load either) is saved as
    ``multiloss>{module}.{qualname}``, which multiloss resolves.
    """
    return cls in BUILTIN_NAMES or ">" in keras.saving.get_registered_name(cls)


def compile_saved(model, config) -> bool:
    """Give a model loaded as its own Keras class its composite loss back, when its compile config has one.

    Keras calls this (through the hook installed below) for every model it loads
    with ``compile=True``; it answers False, leaving Keras's own
    ``compile_from_config``, when the config carries no multiloss part.
    """
    if isinstance(model, MultilossModel) or not isinstance(config, dict) or "multiloss" not in config:
        return False
    model.__class__ = multiloss_class(type(model))
    model._remember_safe_mode(in_safe_mode() is not False)
    model.compile_from_config(config)
    return True


def _model_classes(root: type = keras.Model):
    """Every subclass of ``root`` defined in this process (not the multiloss subclasses)."""
    seen, stack = set(), [root]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                if not issubclass(sub, MultilossModel):
                    yield sub


def saved_class(key: str) -> type | None:
    """The multiloss subclass that a saved ``registered_name`` names, when Keras's registry lacks it; or None.

    ``multiloss>{module}.{qualname}`` is registered when ``ml.compile`` first
    derives the subclass; in a fresh process it resolves to the subclass of
    the model class of that module and name, if that class is defined
    (imported), as Keras asks of any registered class.  An earlier release's
    ``multiloss>{class name}`` carries no module: it resolves when exactly
    one model class of that name is defined.  Nothing is imported here.
    """
    package, _, name = key.partition(">")
    if package != PACKAGE or not name:
        return None
    if "." in name:
        found = [c for c in _model_classes() if registered_name(c) == name]
    elif name.isidentifier():
        found = [c for c in _model_classes() if c.__name__ == name]
    else:
        return None
    return multiloss_class(found[0]) if len(found) == 1 else None


for _cls in BUILTIN_NAMES:
    multiloss_class(_cls)
install_registered_name_fallback(saved_class)
install_compile_config_hook(compile_saved)


__all__ = ["BUILTIN_NAMES", "MultilossModel", "compile_saved", "guard_labels", "install", "multiloss_class",
           "registered_name", "saved_class", "saves_as_itself"]
