"""``ml.compile``: install a composite loss on a Keras model.

Keras's trainer asks its compiled loss for ``__call__``, ``build``,
``built`` and ``metrics``; :class:`CompositeLoss` answers them, so plain
``fit``/``evaluate``/``predict`` work.  For ``.keras`` round trips the model
is given a registered subclass of its own class whose compile config also
carries the composite loss (spec, params and current weights).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import keras
import tensorflow as tf

from ..spec.errors import SpecError
from ..spec.imports import import_object, is_import_string, restricted
from ..spec.loss_spec import LossSpec, load_spec
from . import guard
from .composite import LABEL_CHECK, CompositeLoss
from .keras_access import (
    Functional,
    deserialize_keras_object,
    in_safe_mode,
    unpack_x_y_sample_weight,
    unscale_loss_for_distribution,
)
from .metrics import HeadMetrics

_SUBCLASSES: dict[type, type] = {}  # registry: model class -> its multiloss subclass


class MultilossModel:
    """Mixin that runs the guarded train step and saves and restores the composite loss with the model."""

    def get_compile_config(self):
        config = super().get_compile_config()
        if isinstance(self._compile_loss, CompositeLoss):
            config["multiloss"] = self._compile_loss.get_config()
        return config

    def _get_metrics_result_or_logs(self, logs):
        # Keras keeps the last step's logs unless their keys equal a fresh read;
        # ours lack the per-epoch `<term>_weight` keys, so prefer the fresh read.
        metric_logs = self.get_metrics_result()
        if isinstance(logs, dict) and set(logs) <= set(metric_logs):
            return metric_logs
        return logs

    def train_step(self, data):
        if not isinstance(self._compile_loss, CompositeLoss) or self._compile_loss.guard is None:
            return super().train_step(data)
        weighting = _weighting(self)
        if weighting is None:
            return _multi_worker_logs(_guarded_train_step(self, data))
        with weighting.in_training():
            if weighting.strategy.gradients:
                from .gradient_step import gradient_train_step

                logs = gradient_train_step(self, data, weighting)
            else:
                logs = _guarded_train_step(self, data)
        return _multi_worker_logs(logs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras calls compile_from_config outside its safe-mode scope: remember it here.
        model = super().from_config(config, custom_objects=custom_objects)
        model._multiloss_safe_mode = in_safe_mode() is not False
        return model

    @property
    def trainable_weights(self):
        # Learned strategy parameters (uncertainty's log-variances) train with the network.
        return super().trainable_weights + _strategy_trainables(self)

    @property
    def trainable_variables(self):
        return super().trainable_variables + _strategy_trainables(self)

    def fit(self, *args, **kwargs):
        index = 5  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
        callbacks = args[index] if len(args) > index else kwargs.get("callbacks")
        if isinstance(callbacks, keras.callbacks.CallbackList):
            with guard_labels():
                return super().fit(*args, **kwargs)   # assembled by the caller: left as it is
        ordered = _fit_callbacks(self, list(callbacks or []))
        if ordered is not None:
            if len(args) > index:
                args = (*args[:index], ordered, *args[index + 1:])
            else:
                kwargs["callbacks"] = ordered
        with guard_labels():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with guard_labels():
            return super().evaluate(*args, **kwargs)

    def test_step(self, data):
        return _multi_worker_logs(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras first reduces a whole batch across replicas to build things
        # symbolically; that fails under MultiWorkerMirroredStrategy.  When the
        # model, loss and metrics are built already there is nothing to build.
        built = all(layer.built for layer in self._flatten_layers()) and all(
            obj is None or obj.built for obj in (self._compile_loss, self._compile_metrics))
        if not built:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

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
                    _install(self, composite)
            return
        # With a weighting strategy the composite is installed before the
        # optimizer is built: its learned parameters (if any) need slots too.
        self.compile(**deserialize_keras_object(config))
        with self.distribute_strategy.scope():
            _install(self, composite)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)


_LABEL = re.compile(re.escape(LABEL_CHECK) + r"\|(?P<source>[^|]*)\|(?P<path>[^|]*)\|(?P<msg>[^\]]*)\]"
                    r"\s*\[(?P<value>-?\d+)")


@contextlib.contextmanager
def guard_labels():
    """Turn TensorFlow's failed label assert (a long traceback) into one SpecError line."""
    try:
        yield
    except tf.errors.InvalidArgumentError as exc:
        found = _LABEL.search(exc.message or "")
        if found is None:
            raise
        msg = found["msg"].replace("\\'", "'").replace("{}", found["value"], 1)
        path = tuple(found["path"].split(".")) if found["path"] else ()
        raise SpecError([(path, None, msg)], found["source"]) from None


def _guarded_train_step(model, data):
    """Keras's TensorFlow train step, with the non-finite guard of :mod:`multiloss.core.guard`.

    The epoch means still see a skipped batch's values (a NaN shows as NaN in the
    logs); only the update is withheld.
    """
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    composite = model._compile_loss
    state = composite.weighting.state_variables() if composite.weighting is not None else []
    saved = guard.snapshot(state)   # a loss-weighting strategy's state: put back if the step is not finite
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        model._loss_tracker.update_state(
            unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(next(i for i in tf.nest.flatten(x) if i is not None))[0])
        scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
    trainable = model.trainable_weights
    grads = tape.gradient(scaled, trainable) if trainable else []
    ok = composite.guard.update(composite.last_values, loss, grads)
    pairs = [(g, v) for g, v in zip(grads, trainable) if g is not None]
    if pairs:
        guard.apply_if_finite(model.optimizer, pairs, ok)
    guard.restore_unless(ok, state, saved)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _weighting(model):
    loss = getattr(model, "_compile_loss", None)
    return loss.weighting if isinstance(loss, CompositeLoss) else None


def _strategy_trainables(model) -> list:
    weighting = _weighting(model)
    return weighting.strategy.trainable_variables if weighting is not None else []


def _fit_callbacks(model, callbacks: list) -> list | None:
    """multiloss's callbacks first (their logs reach History and TensorBoard): the
    non-finite guard, the weighting's own and gradient diagnostics."""
    composite = model._compile_loss
    if not isinstance(composite, CompositeLoss):
        return None
    if not any(isinstance(c, guard.NonFiniteGuard) for c in callbacks):
        callbacks = [guard.NonFiniteGuard(composite.guard, composite.term_names)] + callbacks
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
    strategy = tf.distribute.get_strategy()
    extended = getattr(strategy, "extended", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and getattr(
            extended, "_in_multi_worker_mode", lambda: False)():
        return {k: tf.reshape(v, (1,)) for k, v in logs.items()}
    return logs


def _multiloss_class(cls: type) -> type:
    if issubclass(cls, MultilossModel):
        return cls
    if cls not in _SUBCLASSES:
        sub = type(cls.__name__, (MultilossModel, cls), {"__module__": __name__})
        keras.saving.register_keras_serializable("multiloss", cls.__name__)(sub)
        _SUBCLASSES[cls] = sub
    return _SUBCLASSES[cls]


for _cls in (keras.Model, keras.Sequential, Functional):
    _multiloss_class(_cls)


def _install(model, composite: CompositeLoss, nonfinite: str = "stop") -> None:
    composite.guard = guard.GuardState(len(composite.terms), nonfinite)
    if composite.weighting is not None:
        composite.weighting.bind(model)   # the training step, the shared parameters (SpecError)
    model._compile_loss = composite
    model.loss = composite
    metrics = HeadMetrics(composite.spec, composite.output_names)
    model._compile_metrics = metrics if metrics.names else None


def _check_outputs(spec: LossSpec, output_names: list[str], model=None) -> None:
    problems = []
    for head, h in spec.outputs.items():
        if head not in output_names:
            problems.append((spec.head_path(head, "key"),
                             f"the model has no output {head!r}; its outputs are {output_names}"))
        elif h.class_weight and model is not None:
            shape = _output_shape(model, output_names.index(head))
            n = shape[-1] if shape else None
            if n and n > 1:
                bad = sorted(c for c in h.class_weight if not 0 <= c < n)
                if bad:
                    problems.append((("outputs", head, "class_weight"),
                                     f"class id(s) {bad} out of range: output {head!r} has {n} classes "
                                     f"(ids 0..{n - 1})"))
    for i, t in enumerate(spec.terms):
        for j, o in enumerate(t.outputs):
            if o not in output_names:
                problems.append((("terms", i, "outputs", j),
                                 f"the model has no output {o!r}; its outputs are {output_names}"))
    if problems:
        raise spec.error(problems)


def _output_shape(model, index: int) -> tuple | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or index >= len(outputs):
        return None
    return tuple(outputs[index].shape)


def build_loss(spec: LossSpec | dict | str, model: keras.Model | None = None) -> CompositeLoss:
    """Build the composite loss of ``spec``; with ``model``, check its outputs."""
    spec = load_spec(spec)
    names = list(model.output_names) if model is not None else None
    if names is not None:
        _check_outputs(spec, names, model)
    return CompositeLoss(spec, names)


def compile(model: keras.Model, spec: LossSpec | dict | str, optimizer: Any = "rmsprop",
            nonfinite: str = "stop", **compile_kwargs) -> keras.Model:
    """Compile ``model`` with the composite loss of ``spec``; returns the model.

    ``nonfinite``: what ``fit`` does at a step whose terms, total or gradients
    hold a NaN or Inf (the update is never applied): ``"stop"`` raises
    :class:`~multiloss.spec.errors.NonFiniteError` naming them, ``"skip"`` goes on
    and counts the batches skipped.  Extra keyword arguments go to
    ``model.compile`` (``jit_compile``, ``steps_per_execution``,
    ``weighted_metrics``, ...).  ``loss``, ``loss_weights`` and ``metrics``
    come from the spec.
    """
    if nonfinite not in guard.MODES:
        raise ValueError(f"nonfinite must be one of {guard.MODES}, got {nonfinite!r}")
    for key in ("loss", "loss_weights", "metrics"):
        if key in compile_kwargs:
            raise TypeError(f"ml.compile takes `{key}` from the spec, not as an argument")
    spec = load_spec(spec)
    scope = model.distribute_strategy.scope() if not tf.distribute.has_strategy() else _null()
    with scope:
        composite = build_loss(spec, model)
        model.__class__ = _multiloss_class(type(model))
        model.compile(optimizer=optimizer, loss=None, **compile_kwargs)
        _install(model, composite, nonfinite)
    return model


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _keras_loss_classes() -> dict:
    """Map each Keras loss function to its public Loss class (built once)."""
    if not _KERAS_CLASSES:
        for name in dir(keras.losses):
            cls = getattr(keras.losses, name)
            if isinstance(cls, type) and issubclass(cls, keras.losses.Loss):
                try:
                    fn = getattr(cls(), "fn", None)
                except TypeError:
                    continue
                if fn is not None:
                    _KERAS_CLASSES.setdefault(fn, cls)
    return _KERAS_CLASSES


_KERAS_CLASSES: dict = {}  # registry: Keras loss function -> Loss class


def _plain_keras_loss(loss):
    """A ``model.compile``-ready loss for a resolved LossFn."""
    if not loss.params:
        return loss.fn
    cls = _keras_loss_classes().get(loss.fn)
    if cls is not None:
        return cls(**loss.params)

    def with_params(y_true, y_pred):
        return loss(y_true, y_pred)

    with_params.__name__ = loss.name
    return with_params


def compile_kwargs(spec: LossSpec | dict | str) -> dict[str, Any]:
    """Plain ``model.compile`` arguments for a spec that Keras can express.

    Raises :class:`SpecError` naming the feature that prevents it.
    """
    spec = load_spec(spec)
    problems = []
    for i, _ in enumerate(spec.terms):
        problems.append((("terms", i), "cross-output terms have no Keras equivalent"))
    loss, weights = {}, {}
    for head, h in spec.outputs.items():
        path = spec.head_path(head, "loss")
        if isinstance(h.loss, list):
            problems.append((path, "several terms on one head have no Keras equivalent"))
        if h.class_weight:
            problems.append((("outputs", head, "class_weight"),
                             "Keras's class_weight is for single-output models only"))
        if h.mask_value is not None:
            problems.append((("outputs", head, "mask_value"), "Keras has no target mask"))
        if h.reduction != "sum_over_batch_size":
            problems.append((("outputs", head, "reduction"),
                             f"Keras's compiled losses reduce with sum_over_batch_size, not {h.reduction}"))
    if problems:
        raise spec.error([(p, f"not expressible with plain model.compile: {m}") for p, m in problems])
    for term in spec.resolve():
        head = term.outputs[0]
        loss[head] = _plain_keras_loss(term.loss)
        weights[head] = term.weight
    out: dict[str, Any] = {"loss": loss, "loss_weights": weights}
    metrics = {h: [import_object(m) if is_import_string(m) else m for m in ms]
               for h, ms in spec.head_metrics().items()}
    if metrics:
        out["metrics"] = metrics
    return out


__all__ = ["compile", "build_loss", "compile_kwargs", "MultilossModel", "SpecError"]
