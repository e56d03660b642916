"""``ml.compile``: install a composite loss on a Keras model.

Keras's trainer asks its compiled loss for ``__call__``, ``build``,
``built`` and ``metrics``; :class:`CompositeLoss` answers them, so plain
``fit``/``evaluate``/``predict`` work.  For ``.keras`` round trips the model
is given a registered subclass of its own class whose compile config also
carries the composite loss (spec, params and current weights): the
:class:`~multiloss.core.model.MultilossModel` mixin of :mod:`multiloss.core.model`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ..losses import reduction as red
from ..spec.errors import SpecError
from ..spec.imports import import_object, is_import_string
from ..spec.loss_spec import LossSpec, load_spec
from . import guard
from .composite import CompositeLoss
from .model import MultilossModel, install, multiloss_class


def _check_outputs(spec: LossSpec, output_names: list[str], model=None) -> None:
    problems = []
    for head, h in spec.outputs.items():
        if head not in output_names:
            problems.append((spec.head_path(head, "key"),
                             f"the model has no output {head!r}; its outputs are {output_names}"))
        elif h.class_weight and model is not None:
            shape = _output_shape(model, output_names.index(head))
            axis = red.head_class_axis(spec.resolve(), head)     # channels first: the loss's `axis`
            problem = red.class_weight_problem(h.class_weight, shape, axis, f"output {head!r}")
            if problem:
                problems.append((("outputs", head, "class_weight"), problem))
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


def output_names(model: keras.Model, spec: LossSpec) -> list[str]:
    """The names of ``model``'s outputs, as the composite loss matches predictions to them.

    * a Functional model: its own ``output_names``;
    * a ``keras.Sequential`` (one output): its last layer's name, or the spec's one head when the spec
      has one head under another name;
    * any other model (a subclass whose ``call`` returns a dict, a list or one tensor): the outputs the
      spec names, heads first, then those only terms read, in the order written.  A dict is matched by
      its keys, a list in that order, a single tensor to the one name.
    """
    names = getattr(model, "output_names", None)       # a Functional model (Sequential and subclasses: none)
    if names:
        return list(names)
    heads = list(spec.outputs)
    if isinstance(model, keras.Sequential):
        last = model.layers[-1].name if model.layers else None
        return heads if len(heads) == 1 and last not in heads else [last]
    extra = [o for t in spec.terms for o in t.outputs if o not in heads]
    return heads + list(dict.fromkeys(extra))


def build_loss(spec: LossSpec | dict | str, model: keras.Model | None = None) -> CompositeLoss:
    """Build the composite loss of ``spec``; with ``model``, check its outputs."""
    spec = load_spec(spec)
    names = output_names(model, spec) if model is not None else None
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
        model.__class__ = multiloss_class(type(model))
        model.compile(optimizer=optimizer, loss=None, **compile_kwargs)
        install(model, composite, nonfinite)
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


__all__ = ["compile", "build_loss", "compile_kwargs", "output_names", "MultilossModel", "SpecError"]
