"""Built-in model builders and the one interface they share.

A builder is ``(info, **params) -> keras.Model`` where ``info`` is the data
source's description (``input_shape``, ``num_classes``, ...).  Register one
with ``@register_model(name)``, or name a ``package.module:function``.

Head kinds (``multihead_cnn`` and ``mlp``): ``classification`` (softmax over
``units``), ``binary`` (one sigmoid), ``regression`` (``units`` linear),
``reconstruction`` (a decoder back to the input's shape, sigmoid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from ..spec.registry import Registry

ModelBuilder = Callable[..., keras.Model]
#: Model name -> builder ``(info, **params) -> keras.Model``.
MODELS: Registry[ModelBuilder] = Registry("model", providers=("multiloss.run.architectures",))
HEAD_KINDS = ("classification", "binary", "regression", "reconstruction")


def register_model(name: str):
    """Decorator: register a model builder ``(info, **params) -> keras.Model``.  A name taken by
    another builder is refused (the conflict policy of :class:`~multiloss.spec.registry.Registry`)."""
    return MODELS.register(name)


def model_names() -> list[str]:
    return MODELS.names()


def get_builder(name: str) -> ModelBuilder:
    """A registered builder, or the function a ``module:function`` names."""
    return MODELS.get(name)


def build_with(builder: ModelBuilder, name: str, info: dict, params: dict, error: Callable, what: str = "model"):
    """``builder(info, **params)``; its failure (a bad param Keras refuses, data info it lacks) is
    ``error([(("model", "builder"), message)])`` naming the builder and the data info, not a traceback
    from inside Keras.  ``error`` is the config's (:meth:`ConfigFile.error`): it gives file and line."""
    from ..spec.errors import SpecError

    try:
        return builder(info, **params)
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, KeyError):
            where, detail = ("model", "builder"), f"the data gives no {exc.args[0]!r}"
        else:       # most likely a param of the wrong type or value: named there (and its --set)
            where, detail = ("model", "params") if params else ("model", "builder"), str(exc)
        raise error([(where, f"{what} builder {name!r} failed: {detail} (params: {params}; data info: "
                             f"{sorted(info)})")]) from None


def cnn_trunk(input_shape, filters, dense: int, name: str) -> keras.Sequential:
    stack: list[Any] = [layers.Input(input_shape)]
    for f in filters:
        stack += [layers.Conv2D(f, 3, padding="same", activation="relu"), layers.MaxPooling2D()]
    stack += [layers.Flatten(), layers.Dense(dense, activation="relu")]
    return keras.Sequential(stack, name=name)


def output_head(name: str, cfg: dict, features, info: dict):
    """The output layer of head ``name`` (its ``kind`` and ``units``) on ``features``."""
    kind = cfg.get("kind", "classification")
    if kind not in HEAD_KINDS:
        raise ValueError(f"head {name!r}: unknown kind {kind!r}; kinds: {', '.join(HEAD_KINDS)}")
    if kind == "classification":
        units = cfg.get("units") or info.get({"group": "num_groups"}.get(name, "num_classes"))
        if not units:
            raise ValueError(f"head {name!r}: classification needs `units` (number of classes)")
        return layers.Dense(units, activation="softmax", name=name)(features)
    if kind == "binary":
        return layers.Dense(1, activation="sigmoid", name=name)(features)
    if kind == "regression":
        return layers.Dense(cfg.get("units", 1), name=name)(features)
    shape = tuple(info["input_shape"])
    h = layers.Dense(int(cfg.get("hidden", 128)), activation="relu")(features)
    h = layers.Dense(int(np.prod(shape)), activation="sigmoid")(h)
    return layers.Reshape(shape, name=name)(h)


@register_model("multihead_cnn")
def multihead_cnn(info: dict, heads: dict[str, dict], filters=(32, 64), dense: int = 128) -> keras.Model:
    """One CNN trunk with a head per entry of ``heads`` (``{name: {kind, units}}``)."""
    x = keras.Input(tuple(info["input_shape"]), name="inputs")
    features = cnn_trunk(info["input_shape"], filters, dense, "trunk")(x)
    return keras.Model(x, {n: output_head(n, dict(c or {}), features, info) for n, c in heads.items()},
                       name="multihead_cnn")


@register_model("mlp")
def mlp(info: dict, heads: dict[str, dict] | None = None, hidden=(128, 64)) -> keras.Model:
    """A multilayer perceptron on the flattened input, with the given heads."""
    heads = heads or {"class": {"kind": "classification"}}
    x = keras.Input(tuple(info["input_shape"]), name="inputs")
    h = layers.Flatten()(x)
    for units in hidden:
        h = layers.Dense(units, activation="relu")(h)
    return keras.Model(x, {n: output_head(n, dict(c or {}), h, info) for n, c in heads.items()}, name="mlp")


@keras.saving.register_keras_serializable("multiloss")
class AbsDifference(layers.Layer):
    """|a − b| of two embeddings (a named layer, so saved models load safely)."""

    def call(self, inputs):
        a, b = inputs
        return ops.abs(a - b)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@register_model("siamese_cnn")
def siamese_cnn(info: dict, filters=(16, 32), embedding: int = 32, pooling: str = "average") -> keras.Model:
    """Two images -> one shared CNN -> two category heads and a same/different head.

    Outputs: ``ctg_out_1`` and ``ctg_out_2`` (softmax over classes, one shared
    classifier), ``bin_out`` (softmax over {different, same}, on |e_a − e_b|),
    and the embeddings ``emb_a`` and ``emb_b``.  ``pooling``: ``average`` (global
    average pooling) or ``flatten`` (keeps the spatial layout; better on 28×28).
    """
    if pooling not in ("average", "flatten"):
        raise ValueError(f"siamese_cnn: pooling must be 'average' or 'flatten', got {pooling!r}")
    shape = tuple(info["input_shape"])
    stack: list[Any] = [layers.Input(shape)]
    for f in filters:
        stack += [layers.Conv2D(f, 3, padding="same", activation="relu"), layers.MaxPooling2D()]
    stack += [layers.GlobalAveragePooling2D() if pooling == "average" else layers.Flatten(),
              layers.Dense(embedding, activation="relu")]
    trunk = keras.Sequential(stack, name="shared_cnn")
    a, b = keras.Input(shape, name="image_a"), keras.Input(shape, name="image_b")
    ea, eb = trunk(a), trunk(b)
    classify = layers.Dense(info["num_classes"], activation="softmax", name="classifier")
    dist = AbsDifference(name="abs_diff")([ea, eb])
    return keras.Model(
        {"image_a": a, "image_b": b},
        {"ctg_out_1": layers.Identity(name="ctg_out_1")(classify(ea)),
         "ctg_out_2": layers.Identity(name="ctg_out_2")(classify(eb)),
         "bin_out": layers.Dense(2, activation="softmax", name="bin_out")(dist),
         "emb_a": layers.Identity(name="emb_a")(ea),
         "emb_b": layers.Identity(name="emb_b")(eb)},
        name="siamese",
    )
