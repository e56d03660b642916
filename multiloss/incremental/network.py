"""A feature extractor with a fully connected classifier that grows with the classes.

:class:`IncrementalNet` keeps one backbone (``inputs -> features``) and a
``Dense`` classifier named ``logits``.  :func:`expand_classifier` adds units
for new classes and copies the old units' kernel and bias exactly.
:meth:`IncrementalNet.model` is a Keras model ``{"logits": ...}`` to compile
with a multiloss spec.

Backbones: ``cnn`` (``multiloss.models``' CNN trunk: conv-pool blocks, then a
ReLU dense layer), ``mlp``, or ``package.module:function`` returning a Keras
model from inputs to a feature vector, called ``(info, **params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import layers

from ..models import cnn_trunk

BackboneBuilder = Callable[..., keras.Model]


def cnn(info: dict, filters: Sequence[int] = (16, 32), dense: int = 64) -> keras.Model:
    """Conv(3×3, ReLU) + max-pool per entry of ``filters``, flatten, Dense(``dense``, ReLU)."""
    return cnn_trunk(tuple(info["input_shape"]), tuple(filters), int(dense), "features")


def mlp(info: dict, hidden: Sequence[int] = (128, 64)) -> keras.Model:
    """Flatten, then Dense(ReLU) layers; the last one is the feature vector."""
    stack: list = [layers.Input(tuple(info["input_shape"])), layers.Flatten()]
    stack += [layers.Dense(int(u), activation="relu") for u in hidden]
    return keras.Sequential(stack, name="features")


BACKBONES: dict[str, BackboneBuilder] = {"cnn": cnn, "mlp": mlp}


def get_backbone(name: str) -> BackboneBuilder:
    """A built-in backbone builder or a ``package.module:function``."""
    from ..imports import lookup

    return lookup(name, BACKBONES, "backbone",
                  " returning a Keras model from the inputs to a feature vector")


def expand_classifier(old: layers.Dense | None, units: int, in_dim: int, *,
                      nonnegative: bool = False, bias: bool = True) -> layers.Dense:
    """A ``Dense(units)`` classifier whose first units are exactly ``old``'s.

    The new units get the layer's fresh initialisation.  ``nonnegative``
    clips the kernel at 0 after every optimiser step (WA's weight clipping);
    ``bias=False``: logits ``Wᵀφ(x)`` without a bias.
    """
    old_units = 0 if old is None else old.units
    if units <= old_units:
        raise ValueError(f"the classifier has {old_units} units; expanding needs more, got {units}")
    if old is not None and old.use_bias != bias:
        raise ValueError(f"the classifier {'has' if old.use_bias else 'has no'} bias; cannot expand it "
                         f"into one {'with' if bias else 'without'}")
    head = layers.Dense(units, name="logits", use_bias=bias,
                        kernel_constraint=keras.constraints.NonNeg() if nonnegative else None)
    head.build((None, int(in_dim)))
    fresh = [np.asarray(w).copy() for w in head.get_weights()]
    if nonnegative:
        fresh[0] = np.maximum(fresh[0], 0.0)
    if old is not None:
        for new_w, old_w in zip(fresh, old.get_weights()):  # kernel [in, units], then bias [units]
            new_w[..., :old_units] = np.asarray(old_w)
    head.set_weights(fresh)
    return head


def align_weights(head: layers.Dense, num_old: int) -> float:
    """Weight aligning (Zhao et al. 2020): scale the new classes' weight vectors.

    γ = mean ‖w_old‖ / mean ‖w_new‖ over the classifier's per-class weight
    vectors (kernel columns); the new columns are multiplied by γ (a bias, if
    the classifier has one, is left alone).  Returns γ.
    """
    kernel = np.asarray(head.kernel).copy()
    if not 0 < num_old < kernel.shape[1]:
        raise ValueError(f"weight aligning needs old and new classes; num_old={num_old}, "
                         f"classes={kernel.shape[1]}")
    norms = np.linalg.norm(kernel, axis=0)
    gamma = float(norms[:num_old].mean() / norms[num_old:].mean())
    kernel[:, num_old:] *= gamma
    head.kernel.assign(kernel)
    return gamma


class IncrementalNet:
    """A backbone plus a classifier over the classes seen so far."""

    def __init__(self, backbone: keras.Model, nonnegative_head: bool = False, head_bias: bool = True):
        if len(backbone.outputs) != 1 or len(backbone.outputs[0].shape) != 2:
            raise ValueError("the backbone must map its inputs to one feature vector [B, D]; "
                             f"it outputs {[tuple(o.shape) for o in backbone.outputs]}")
        self.backbone = backbone
        self.nonnegative_head, self.head_bias = nonnegative_head, head_bias
        self.head: layers.Dense | None = None
        self._model: keras.Model | None = None

    @property
    def num_classes(self) -> int:
        return 0 if self.head is None else self.head.units

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.outputs[0].shape[-1])

    def expand(self, num_classes: int) -> None:
        """Grow the classifier to ``num_classes`` units, keeping the old ones exactly."""
        self.head = expand_classifier(self.head, num_classes, self.feature_dim,
                                      nonnegative=self.nonnegative_head, bias=self.head_bias)
        self._model = None

    def model(self) -> keras.Model:
        """``inputs -> {"logits": ...}`` over the current classifier (a fresh Keras model per expansion)."""
        if self.head is None:
            raise ValueError("the classifier has no units yet: call expand(num_classes) first")
        if self._model is None:
            inputs = keras.Input(tuple(self.backbone.inputs[0].shape[1:]), name="inputs")
            self._model = keras.Model(inputs, {"logits": self.head(self.backbone(inputs))},
                                      name="incremental_net")
        return self._model

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The classifier's logits ``[N, num_classes]`` (inference mode)."""
        return _batched(lambda b: self.head(self.backbone(b, training=False)), x, batch_size)

    def features(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The backbone's feature vectors ``[N, D]`` (inference mode)."""
        return _batched(lambda b: self.backbone(b, training=False), x, batch_size)

    def get_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model().get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model().set_weights(weights)


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over ``x`` in batches, eagerly (nothing to trace for each new shape)."""
    if not len(x):
        raise ValueError("no samples to predict")
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


__all__ = ["IncrementalNet", "expand_classifier", "align_weights", "get_backbone", "BACKBONES", "cnn", "mlp"]
