"""The loss table: names to losses, their resolution, and the names of Keras's losses.

It sits in the spec layer because it says what a name in a spec means; the losses
themselves are math in :mod:`multiloss.losses`.

A registered loss is *math only*: ``(y_true, y_pred) -> L`` with L of shape
``[B]`` or ``[B, d1..dk]`` (never reduced over the batch).  Weighting,
masking and reduction happen once, in :mod:`multiloss.losses.reduction`, which
also checks L's shape (:func:`~multiloss.losses.reduction.check_loss_shape`): its
first axis is the batch axis and its further axes are the leading non-batch axes
of ``y_pred`` or ``y_true`` (for a term over several outputs, the batch axis only).

A loss is *elementwise* when it is the mean over the last axis of a function of
each (target, prediction) pair, ``L[..] = mean_k f(t[.., k], p[.., k])``:
BCE, MSE, MAE, Huber, log-cosh, … (:data:`KERAS_ELEMENTWISE` lists Keras's).
On a head with ``mask_value`` such a loss masks *per element*: it is called on
``[.., K, 1]`` to get its values per label, and a missing label drops only
itself.  Every other loss (categorical CE, KL, sparse CE, Dice, a user's own
unless registered with ``elementwise=True``) masks *per position*: a position
with any missing component drops out.  This table is the one place that says
which losses are elementwise.

The registry's providers fill it the first time it is read: multiloss's own
losses and Keras's under their names (:mod:`multiloss.losses.builtin`), and
the class-incremental ones (``multiloss.incremental.losses``).

    >>> import multiloss as ml
    >>> fn = ml.losses.get("huber", delta=2.0)
    >>> @ml.register_loss("my_l1")
    ... def my_l1(y_true, y_pred):
    ...     return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from .imports import REGISTRIES, is_import_string
from .lazy import keras, ops
from .registry import Registry

#: How a loss relates target to prediction shapes (used for shape checks and
#: for reading class ids out of y_true): ``same`` (targets shaped like the
#: prediction), ``sparse`` (integer class ids, prediction has a class axis),
#: ``custom`` (anything else; not checked).
TargetKind = Literal["same", "sparse", "custom"]

BUILTIN = "multiloss.losses.builtin"
#: Name -> the loss: a function or class, or the name of a ``keras.losses`` function (read on first use).
LOSSES: Registry[Callable | str] = Registry(
    "loss", providers=(BUILTIN, "multiloss.incremental.losses"),
    hint="use a registered name (see `multiloss.losses.names()`), or an import string 'package.module:function'")
_KINDS: dict[str, tuple[TargetKind, bool]] = {}   # name -> (target kind, elementwise) it was registered with


class Contract(NamedTuple):
    """What a loss declares it takes, checked at the boundary: ``outputs``, the numbers of model outputs
    (None: any); ``label_range``, the ``(low, high)`` its targets lie in (None: any)."""

    outputs: tuple[int, ...] | None = None
    label_range: tuple[float, float] | None = None


_CONTRACTS: dict[str, Contract] = {}     # name -> what it declared at registration


class LossFn:
    """A resolved loss: a callable plus its parameters; returns unreduced L.

    A Keras loss is read from ``keras.losses`` on first use, so a spec is
    loaded and validated without importing TensorFlow.
    """

    def __init__(self, name: str, fn: Callable | str, params: dict[str, Any] | None = None,
                 target: TargetKind = "custom", elementwise: bool = False):
        self.name, self.params, self.target = name, dict(params or {}), target
        self._elementwise = elementwise
        self._fn = fn
        self._call = None if isinstance(fn, str) else self._build(fn)

    @property
    def fn(self) -> Callable:
        """The loss function or class (a Keras loss is imported here)."""
        if isinstance(self._fn, str):
            self._fn = getattr(keras.losses, self._fn)
        return self._fn

    @property
    def elementwise(self) -> bool:
        """Whether the loss is a mean over the last axis of a per-element function (masks per element).

        Declared at registration; an ``axis`` other than -1 in the params (BCE's) makes it per position.
        """
        return self._elementwise and self.params.get("axis", -1) == -1

    def _build(self, fn: Callable) -> Callable:
        if inspect.isclass(fn):
            inst = fn(**self.params)
            # A Keras Loss: ``call`` is the unreduced math; its own reduction
            # and weighting are bypassed so they happen once, in multiloss.
            return inst.call if isinstance(inst, keras.losses.Loss) else inst
        params = self.params
        return (lambda t, p: fn(t, p, **params)) if params else fn

    def __call__(self, y_true, y_pred):
        if self._call is None:
            self._call = self._build(self.fn)
        if self.target == "same" and y_true is not None and not isinstance(y_pred, (list, tuple)):
            y_true, y_pred = same_rank(y_true, y_pred)
        return self._call(y_true, y_pred)

    def _key(self) -> tuple:
        return self.name, _canonical_of(self._fn) or self._fn, self.params, self.target, self._elementwise

    def __eq__(self, other) -> bool:
        return isinstance(other, LossFn) and self._key() == other._key()

    __hash__ = None

    def __repr__(self) -> str:
        return f"LossFn(name={self.name!r}, params={self.params!r}, target={self.target!r})"


def same_rank(y_true, y_pred):
    """Targets ``[B]`` against predictions ``[B, 1]`` (or the reverse) get a matching rank."""
    y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    if len(y_true.shape) == len(y_pred.shape) - 1 and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    elif len(y_true.shape) == len(y_pred.shape) + 1 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return y_true, y_pred


def register_loss(name: str, *, target: TargetKind = "custom", elementwise: bool = False,
                  aliases: tuple[str, ...] = (), outputs: tuple[int, ...] | None = None,
                  label_range: tuple[float, float] | None = None):
    """Decorator: register a loss function or class under ``name``.

    The function takes ``(y_true, y_pred, **params)`` and returns per-sample
    or per-element values; a class is instantiated with ``params`` and then
    called with ``(y_true, y_pred)``.  A name taken by another loss is refused
    (the conflict policy of :class:`~multiloss.spec.registry.Registry`).

    ``elementwise=True`` declares the loss a mean over the last axis of a
    function of each (target, prediction) pair (it needs ``target="same"``):
    on a head with ``mask_value`` it is then masked per element, not per
    position (see the module's docstring).  ``outputs``: the numbers of model outputs it takes
    (``(3,)`` for ``[anchor, positive, negative]``), checked when a spec is loaded; ``label_range``: the
    ``(low, high)`` its targets lie in (``(0, 1)``: a same/different pair, or a soft one), checked on every
    batch; None: any.
    """
    if elementwise and target != "same":
        raise ValueError(f"loss {name!r}: an elementwise loss takes targets shaped like the prediction; "
                         f"register it with target='same' (got target={target!r})")

    def deco(obj):
        LOSSES.register(name, obj, aliases=aliases)
        _KINDS.update(dict.fromkeys((name, *aliases), (target, elementwise)))
        declared = Contract(None if outputs is None else tuple(outputs),
                            None if label_range is None else (float(label_range[0]), float(label_range[1])))
        _CONTRACTS.update(dict.fromkeys((name, *aliases), declared))    # registered anew: what it says now
        return obj

    return deco


def _keras_loss_registered(obj: object) -> bool:
    """Whether ``obj`` is a Keras loss function the registry holds by name (not imported yet)."""
    return any(isinstance(held, str) and getattr(keras.losses, held, None) is obj for held in LOSSES.values())


REGISTRIES.append(_keras_loss_registered)   # as the registry's own objects, they load in safe mode


def is_registered(obj: object) -> bool:
    """Whether ``obj`` is a loss registered with :func:`register_loss` (trusted by safe loading)."""
    return LOSSES.holds(obj) or _keras_loss_registered(obj)


def names() -> list[str]:
    """All registered loss names, sorted."""
    return LOSSES.names()


def _valid_params(obj: Callable | str) -> list[str] | None:
    """The parameter names a loss takes besides ``(y_true, y_pred)``; None when it takes ``**kwargs``."""
    if isinstance(obj, str):    # a Keras function, not imported yet
        return list(KERAS_PARAMS[obj])
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    ps = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in ps):
        return None
    skip = 1 if inspect.isclass(obj) else 2  # self | (y_true, y_pred)
    valid = [p.name for p in ps[skip:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [v for v in valid if v not in ("name", "reduction", "dtype")] if inspect.isclass(obj) else valid


def _check_params(name: str, obj: Callable | str, params: dict) -> None:
    valid = _valid_params(obj)
    if valid is None:
        return
    unknown = sorted(set(params) - set(valid))
    if unknown:
        hint = ("; the reduction is set on the head or term (`reduction: sum`), not in the loss's params"
                if "reduction" in unknown else "")
        raise TypeError(
            f"loss {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid) or '(none)'}{hint}"
        )


def get(name: str, /, **params) -> LossFn:
    """Resolve a registered name or a ``module:attr`` import string.

    Raises ``LookupError`` for an unknown name (with a did-you-mean) or an
    import string that does not import, and ``TypeError`` for unknown params.
    """
    obj = LOSSES.get(name)     # an UnknownNameError (a LookupError) with a did-you-mean
    if is_import_string(name):
        target, elementwise = _KINDS.get(_canonical_of(obj), ("custom", False))
    else:
        target, elementwise = _KINDS.get(name, ("custom", False))
        if name in KERAS_CLASSES:  # a Keras class's name and dtype do not change its math
            params = {k: v for k, v in params.items() if k not in ("name", "dtype")}
    _check_params(name, obj, params)
    return LossFn(name, obj, dict(params), target, elementwise)


# --- Keras's built-in losses, under their Keras names and common aliases ----
#
# Every loss of ``keras.losses`` resolves by its function name and by its class
# name (``MeanSquaredError``), to the same math: a Keras loss class is its
# function with the class's parameters (``reduction``, ``name`` and ``dtype``
# are the term's business: ``reduction:`` on the head or term).
# tests/test_keras_parity.py enumerates ``keras.losses``: a loss that a future
# Keras adds fails the suite until it is mapped here.

#: Keras function name -> how its targets relate to the prediction.
KERAS_FUNCTIONS: dict[str, TargetKind] = {
    "mean_squared_error": "same", "mean_absolute_error": "same",
    "mean_absolute_percentage_error": "same", "mean_squared_logarithmic_error": "same",
    "binary_crossentropy": "same", "categorical_crossentropy": "same", "kl_divergence": "same",
    "log_cosh": "same", "hinge": "same", "squared_hinge": "same", "categorical_hinge": "same",
    "poisson": "same", "cosine_similarity": "same", "huber": "same",
    "binary_focal_crossentropy": "same", "categorical_focal_crossentropy": "same",
    "sparse_categorical_crossentropy": "sparse", "categorical_generalized_cross_entropy": "sparse",
    "ctc": "custom", "circle": "custom",
    # multiloss's own versions (losses/builtin.py): per-sample, see README "Names shared with Keras"
    "dice": "same", "tversky": "same",
}
#: The losses whose ``axis`` param names the axes they sum (a mask's or an image's), not a class axis.
SUMMED_AXES = frozenset({"dice", "tversky"})
#: Keras's losses that are a mean over the last axis of a function of each (target, prediction)
#: pair: masked per element (tests/test_missing_labels.py checks each against its own values on
#: ``[.., K, 1]``, and that every other ``same`` loss of this table is not).
KERAS_ELEMENTWISE = frozenset({
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "binary_crossentropy", "binary_focal_crossentropy", "log_cosh",
    "huber", "hinge", "squared_hinge", "poisson",
})
#: Keras class name -> the function name it wraps.
KERAS_CLASSES: dict[str, str] = {
    "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "BinaryCrossentropy": "binary_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "KLDivergence": "kl_divergence", "LogCosh": "log_cosh", "Hinge": "hinge",
    "SquaredHinge": "squared_hinge", "CategoricalHinge": "categorical_hinge", "Poisson": "poisson",
    "CosineSimilarity": "cosine_similarity", "Huber": "huber",
    "BinaryFocalCrossentropy": "binary_focal_crossentropy",
    "CategoricalFocalCrossentropy": "categorical_focal_crossentropy",
    "CategoricalGeneralizedCrossEntropy": "categorical_generalized_cross_entropy",
    "CTC": "ctc", "Circle": "circle", "Dice": "dice", "Tversky": "tversky",
}
_ALIASES = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
    "bce": "binary_crossentropy", "cce": "categorical_crossentropy",
    "scce": "sparse_categorical_crossentropy", "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence", "logcosh": "log_cosh",
    "focal": "binary_focal_crossentropy", "binary_focal": "binary_focal_crossentropy",
    "categorical_focal": "categorical_focal_crossentropy",
    # Keras's upper-case aliases (keras.losses.get("MSE") works)
    "MSE": "mean_squared_error", "MAE": "mean_absolute_error",
    "MAPE": "mean_absolute_percentage_error", "MSLE": "mean_squared_logarithmic_error",
    "BCE": "binary_crossentropy", "KLD": "kl_divergence",
}
#: Keras function name -> its parameters besides ``(y_true, y_pred)``, so that a
#: spec is checked without importing Keras (tests/test_keras_parity.py compares
#: them with the real signatures).
KERAS_PARAMS: dict[str, tuple[str, ...]] = {
    "mean_squared_error": (), "mean_absolute_error": (), "mean_absolute_percentage_error": (),
    "mean_squared_logarithmic_error": (), "kl_divergence": (), "log_cosh": (), "hinge": (),
    "squared_hinge": (), "categorical_hinge": (), "poisson": (), "ctc": (),
    "binary_crossentropy": ("from_logits", "label_smoothing", "axis"),
    "categorical_crossentropy": ("from_logits", "label_smoothing", "axis"),
    "sparse_categorical_crossentropy": ("from_logits", "ignore_class", "axis"),
    "cosine_similarity": ("axis",),
    "huber": ("delta",),
    "binary_focal_crossentropy": ("apply_class_balancing", "alpha", "gamma", "from_logits", "label_smoothing",
                                  "axis"),
    "categorical_focal_crossentropy": ("alpha", "gamma", "from_logits", "label_smoothing", "axis"),
    "circle": ("ref_labels", "ref_embeddings", "remove_diagonal", "gamma", "margin"),
}


def contract(name: str) -> Contract:
    """What the loss ``name`` (or import string) declared at registration (:class:`Contract`)."""
    if is_import_string(name):
        name = _canonical_of(LOSSES.get(name)) or name
    return _CONTRACTS.get(name, Contract())


def _canonical_of(obj: Callable | str) -> str | None:
    """The canonical name of a loss object: a Keras function or class (``MeanSquaredError``
    gives ``mean_squared_error``), one of multiloss's own, or None for anything else."""
    if isinstance(obj, str):
        return obj
    module, name = str(getattr(obj, "__module__", "")), getattr(obj, "__name__", None)
    if module == BUILTIN:
        return LOSSES.name_of(obj)
    if not module.startswith("keras") or name is None:
        return None
    fname = KERAS_CLASSES.get(name, name)
    if fname not in KERAS_FUNCTIONS or (name == fname and LOSSES[fname] != fname) \
            or getattr(keras.losses, name, None) is not obj:
        return None   # multiloss's dice/tversky/GCE differ from Keras's functions of the same name
    return fname


def canonical_name(loss: LossFn) -> str | None:
    """The canonical name of a resolved loss: ``MeanSquaredError``, ``mse`` and
    ``keras.losses:MeanSquaredError`` all give ``mean_squared_error``; a
    multiloss loss gives its registered name; a user's own loss gives None."""
    return _canonical_of(loss._fn)


def register_keras_losses() -> None:
    """Register Keras's losses under their function names, class names and aliases (by name: they are
    imported on first use).  Where multiloss has registered its own version of a function's name
    (dice, tversky, categorical_generalized_cross_entropy), that one stands for Keras's."""
    for fname, kind in KERAS_FUNCTIONS.items():
        aliases = [n for n, f in (*KERAS_CLASSES.items(), *_ALIASES.items()) if f == fname]
        register_loss(fname, target=kind, elementwise=fname in KERAS_ELEMENTWISE,
                      aliases=tuple(aliases))(LOSSES[fname] if fname in LOSSES else fname)
