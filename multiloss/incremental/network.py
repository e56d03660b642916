"""A feature extractor with a fully connected classifier that grows with the classes.

:class:`IncrementalNet` keeps one backbone (``inputs -> features``) and a
``Dense`` classifier named ``logits``.  :func:`expand_classifier` adds units
for new classes and copies the old units' kernel and bias exactly.
:meth:`IncrementalNet.model` is a Keras model ``{"logits": ...}`` to compile
with a multiloss spec.

Backbones: ``cnn`` (``multiloss.run.models``' CNN trunk: conv-pool blocks, then a
ReLU dense layer), ``mlp``, ``resnet18`` / ``resnet32`` (residual networks
for 28×28 / 32×32 inputs), the Keras Applications families ``resnet50``,
``resnet50v2``, ``mobilenet_v2``, ``mobilenet_v3_small`` (small inputs are
resized to ``size``, default 32), or ``package.module:function`` returning a
Keras model from inputs to a feature vector, called ``(info, **params)``.
Every backbone is randomly initialised unless ``weights`` names a local file:
nothing is ever downloaded.

Besides :class:`IncrementalNet` (one backbone, a linear or a local-similarity
classifier, optionally the pooled intermediate feature maps PODNet distils)
there is :class:`DERNet` (one new backbone per step, the old ones frozen,
an auxiliary classifier), :class:`FOSTERNet` (two extractors while boosting, compressed into one) and
:class:`MEMONet` (shared shallow blocks, one deep block per step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import copy as shallow_copy
from typing import Any

import keras
import numpy as np
from keras import layers

from ..run.models import cnn_trunk
from ..spec.registry import Registry
from ..spec.validation import did_you_mean, unknown_key
from .inputs import is_records

BackboneBuilder = Callable[..., keras.Model]


def cnn(info: dict, filters: Sequence[int] = (16, 32), dense: int = 64) -> keras.Model:
    """Conv(3×3, ReLU) + max-pool per entry of ``filters``, flatten, Dense(``dense``, ReLU)."""
    return cnn_trunk(tuple(info["input_shape"]), tuple(filters), int(dense), "features")


def mlp(info: dict, hidden: Sequence[int] = (128, 64)) -> keras.Model:
    """Flatten, then Dense(ReLU) layers; the last one is the feature vector."""
    stack: list = [layers.Input(tuple(info["input_shape"])), layers.Flatten()]
    stack += [layers.Dense(int(u), activation="relu") for u in hidden]
    return keras.Sequential(stack, name="features")


def _local_weights(weights: str | None) -> str | None:
    if weights is None:
        return None
    from pathlib import Path

    if str(weights).lower() == "imagenet" or not Path(weights).expanduser().is_file():
        raise ValueError(f"weights {weights!r}: give the path of a local weights file (nothing is "
                         "downloaded), or leave it out for a random initialisation")
    return str(Path(weights).expanduser())


def _resized(info: dict, size: int | None):
    """The input, resized to ``size``×``size`` when it is smaller (Keras Applications need ≥ 32)."""
    shape = tuple(info["input_shape"])
    if len(shape) != 3:
        raise ValueError(f"this backbone needs image inputs [H, W, C], got shape {shape}")
    inputs = layers.Input(shape)
    x = inputs
    if size and (shape[0] < size or shape[1] < size):
        x = layers.Resizing(int(size), int(size), name="resize")(x)
    return inputs, x


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, 1, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_down")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_down_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _small_resnet(info: dict, blocks: Sequence[int], widths: Sequence[int], weights: str | None,
                  name: str) -> keras.Model:
    inputs, x = _resized(info, None)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for stage, (n, w) in enumerate(zip(blocks, widths)):
        for b in range(int(n)):
            x = _basic_block(x, int(w), 2 if stage and not b else 1, f"stage{stage + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, x, name=name)
    if (path := _local_weights(weights)) is not None:
        model.load_weights(path)
    return model


def resnet18(info: dict, width: int = 64, weights: str | None = None) -> keras.Model:
    """ResNet-18 for small images (He et al. 2016; the CIFAR stem: a 3×3 conv, no max-pool):
    4 stages of 2 basic blocks, ``width``·(1, 2, 4, 8) filters, global average pooling."""
    return _small_resnet(info, (2, 2, 2, 2), [width * m for m in (1, 2, 4, 8)], weights, "resnet18")


def resnet32(info: dict, width: int = 16, weights: str | None = None) -> keras.Model:
    """ResNet-32 (He et al. 2016, CIFAR; the backbone of iCaRL, PODNet and PyCIL's CIFAR runs):
    a 3×3 conv, 3 stages of 5 basic blocks, ``width``·(1, 2, 4) filters, global average pooling."""
    return _small_resnet(info, (5, 5, 5), [width * m for m in (1, 2, 4)], weights, "resnet32")


_APPLICATIONS = {"resnet50": "ResNet50", "resnet50v2": "ResNet50V2", "mobilenet_v2": "MobileNetV2",
                 "mobilenet_v3_small": "MobileNetV3Small"}


def keras_application(info: dict, family: str = "resnet50", size: int = 32, weights: str | None = None,
                      **params) -> keras.Model:
    """A Keras Applications network without its top, global-average pooled, on ``size``×``size``
    inputs (smaller images are resized).  ``weights``: a local file — either the application's own
    weights file (grey inputs are repeated to 3 channels) or a ``.weights.h5`` saved from this
    backbone; none: random initialisation.  Extra ``params`` go to the application
    (``alpha`` for MobileNet)."""
    if family not in _APPLICATIONS:
        raise ValueError(unknown_key(family, _APPLICATIONS, "family"))
    path = _local_weights(weights)
    own = path is not None and not path.endswith(".weights.h5")
    inputs, x = _resized(info, size)
    if own and x.shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    extra = {"include_preprocessing": False} if family.startswith("mobilenet_v3") else {}
    app = getattr(keras.applications, _APPLICATIONS[family])(
        include_top=False, weights=path if own else None, input_tensor=x, pooling="avg", **extra, **params)
    model = keras.Model(inputs, app.output, name=family)
    if path is not None and not own:
        model.load_weights(path)
    return model


def _application(family: str) -> BackboneBuilder:
    def build(info: dict, size: int = 32, weights: str | None = None, **params) -> keras.Model:
        return keras_application(info, family, size, weights, **params)

    build.__name__ = family
    build.__doc__ = f"Keras Applications' {_APPLICATIONS[family]} (see :func:`keras_application`)."
    return build


#: Backbone name -> builder ``(info, **params) -> keras.Model`` from the inputs to a feature vector.
BACKBONES: Registry[BackboneBuilder] = Registry(
    "backbone", hint="valid: {valid}; or an import string 'package.module:function' returning a Keras model "
                     "from the inputs to a feature vector")


def register_backbone(name: str, builder: BackboneBuilder | None = None):
    """Register a backbone builder under ``name``; without ``builder``, a decorator.  A name taken by
    another builder is refused (the conflict policy of :class:`~multiloss.spec.registry.Registry`)."""
    return BACKBONES.register(name) if builder is None else BACKBONES.register(name, builder)


for _name, _builder in {"cnn": cnn, "mlp": mlp, "resnet18": resnet18, "resnet32": resnet32,
                        **{k: _application(k) for k in _APPLICATIONS}}.items():
    register_backbone(_name, _builder)


def get_backbone(name: str) -> BackboneBuilder:
    """A registered backbone builder or a ``package.module:function``."""
    return BACKBONES.get(name)


class BackboneError(ValueError):
    """A saved model that cannot be the backbone; ``key`` is the config key at fault (``path``, ``features``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class MethodParamError(ValueError):
    """A backbone a method cannot use as one of its params asks; ``param`` is that ``method.params`` key.
    Its text is ``method.params.<param>: <message>``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"method.params.{param}: {message}")
        self.param, self.message = param, message


def backbone_problem(model: Any, input_shape) -> str | None:
    """What keeps a builder's result from being a backbone over inputs shaped ``input_shape``: not a
    Keras model, one with no inputs yet, not one feature vector ``[B, D]``, other inputs; or None."""
    if not isinstance(model, keras.Model):
        return f"it returned a {type(model).__name__}, not a keras.Model"
    try:
        outputs, inputs = model.outputs, model.inputs
    except (AttributeError, ValueError):
        outputs = inputs = None
    if not outputs or not inputs:
        return (f"it returned a {type(model).__name__} without inputs (a Sequential needs a keras.Input first; "
                "a subclassed model cannot be a backbone)")
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        return ("the backbone must map its inputs to one feature vector [B, D]; it outputs "
                f"{[tuple(o.shape) for o in outputs]} (end it with a Flatten or a GlobalAveragePooling2D)")
    if len(inputs) != 1:
        return f"it takes {len(inputs)} inputs; a backbone takes one (the image)"
    saved, given = tuple(inputs[0].shape[1:]), tuple(input_shape or ())
    if given and (len(saved) != len(given) or any(a is not None and a != b for a, b in zip(saved, given))):
        return f"it takes inputs shaped {saved}, the data's are {given}"
    return None


def vector_layers(model: keras.Model) -> list[str]:
    """Names of ``model``'s layers (top level) whose output is one vector per example ``[B, D]``."""
    names = []
    for layer in model.layers:
        try:
            out = layer.output
        except (AttributeError, ValueError):
            continue
        if not isinstance(out, (list, tuple, dict)) and len(out.shape) == 2 \
                and not isinstance(layer, layers.InputLayer):
            names.append(layer.name)
    return names


def saved_backbone(path: str, features: str, info: dict) -> keras.Model:
    """The saved Keras model at ``path`` from its input to the output of its layer ``features`` (a
    feature vector ``[B, D]``), with the saved weights; :class:`BackboneError` names what is wrong."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise BackboneError("path", f"{path} is not a file; give a model saved with model.save('my.keras')")
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as exc:   # noqa: BLE001 - Keras raises many kinds for a file it cannot read
        raise BackboneError("path", f"{path} does not load as a Keras model: {exc}") from None
    if isinstance(model, keras.Sequential) and not model.inputs:
        raise BackboneError("path", f"{path} is a Sequential model without an Input; it cannot be cut at a layer")
    if len(model.inputs) != 1:
        raise BackboneError("path", f"{path} has {len(model.inputs)} inputs; a backbone takes one (the image)")
    saved_shape = tuple(model.inputs[0].shape[1:])
    given = tuple(info.get("input_shape") or ())
    if given and (len(saved_shape) != len(given) or any(a is not None and a != b for a, b in zip(saved_shape, given))):
        raise BackboneError("path", f"{path} takes inputs shaped {saved_shape}, the data's are {given} "
                                    "(image_folder: set data.params.image_size and color_mode to match)")
    valid = vector_layers(model)
    names = [layer.name for layer in model.layers]
    if features not in names:
        raise BackboneError("features", f"{path} has no layer {features!r}; {did_you_mean(features, names)}"
                                        f"valid (layers with a feature vector [B, D] output): {', '.join(valid)}")
    out = model.get_layer(features).output
    if features not in valid:
        shape = tuple(getattr(out, "shape", ()))
        raise BackboneError("features", f"the layer {features!r} of {path} outputs {shape}, not one feature vector "
                                        f"[B, D] per example; valid: {', '.join(valid) or 'none'} (or add a "
                                        "Flatten/GlobalAveragePooling2D layer to the model)")
    return keras.Model(model.inputs[0], out, name="backbone")


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


@keras.saving.register_keras_serializable("multiloss_incremental")
class LocalSimilarityClassifier(layers.Layer):
    """PODNet's local similarity classifier (Douillard et al. 2020, Eq. 8–9).

    ``proxies`` weight vectors per class; with cosine similarities
    ``s_{c,k} = ⟨θ_{c,k}/‖θ_{c,k}‖, h/‖h‖⟩`` the class similarity is
    ``ŷ_c = Σ_k softmax_k(s_{c,·})_k · s_{c,k}``, and the layer returns
    ``η·ŷ`` with a learned scale ``η`` (initialised to 1).  The kernel is
    ``[D, units·proxies]``, class-major (class c's proxies are columns
    ``c·K … c·K + K − 1``).  ``scale``: the initial η.
    """

    def __init__(self, units: int, proxies: int = 10, scale: float = 1.0, learn_scale: bool = True, **kwargs):
        kwargs.setdefault("dtype", "float32")   # the norms: float16 overflows for a feature of norm > 256
        super().__init__(**kwargs)
        self.units, self.proxies, self.scale_init = int(units), int(proxies), float(scale)
        self.learn_scale = bool(learn_scale)
        #: The first ``frozen_units`` classes' proxies get no gradient (PODNet's and LUCIR's old classes
        #: in the main stage); a Python attribute read when the training step is traced (set it before
        #: compiling a stage).
        self.frozen_units = 0

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(int(input_shape[-1]), self.units * self.proxies),
                                      initializer="he_normal", name="kernel")
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.scale_init),
                                     name="scale", trainable=self.learn_scale)

    def call(self, x):
        from keras import ops

        f = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        kernel = self.kernel
        if 0 < self.frozen_units:
            cut = min(self.frozen_units, self.units) * self.proxies
            kernel = ops.concatenate([ops.stop_gradient(kernel[:, :cut]), kernel[:, cut:]], axis=1)
        w = kernel / ops.maximum(ops.norm(kernel, axis=0, keepdims=True), 1e-12)
        if self.proxies == 1:   # a cosine classifier (LUCIR's): η·cos
            return self.scale * ops.matmul(f, w)
        sims = ops.reshape(ops.matmul(f, w), (-1, self.units, self.proxies))
        return self.scale * ops.sum(ops.softmax(sims, axis=-1) * sims, axis=-1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "proxies": self.proxies, "scale": self.scale_init,
                "learn_scale": self.learn_scale}


def expand_lsc(old: LocalSimilarityClassifier | None, units: int, in_dim: int,
               proxies: int, scale: float = 1.0, learn_scale: bool = True) -> LocalSimilarityClassifier:
    """A local similarity classifier whose first classes' proxies and scale are ``old``'s."""
    old_units = 0 if old is None else old.units
    if units <= old_units:
        raise ValueError(f"the classifier has {old_units} units; expanding needs more, got {units}")
    head = LocalSimilarityClassifier(units, proxies, scale, learn_scale, name="logits")
    head.build((None, int(in_dim)))
    if old is not None:
        kernel = np.asarray(head.kernel).copy()
        kernel[:, : old_units * proxies] = np.asarray(old.kernel)
        head.set_weights([kernel, np.asarray(old.scale)])
    return head


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """``k`` cluster centres of ``points`` ``[N, D]`` (Lloyd's algorithm from a k-means++ start, seeded).

    Fewer points than ``k``: the points, repeated.  An emptied cluster keeps its centre.
    """
    points = np.asarray(points, "float64")
    if len(points) <= k:
        return points[np.arange(k) % len(points)].copy()
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):   # k-means++: the next centre drawn with probability ∝ squared distance
        d2 = ((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(points[rng.choice(len(points), p=d2 / d2.sum())] if d2.sum() > 0
                       else points[rng.integers(len(points))])
    centres = np.asarray(centres)
    for _ in range(iterations):
        assign = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        moved = np.asarray([points[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def imprint_proxies(head: LocalSimilarityClassifier, features: np.ndarray, labels: np.ndarray,
                    classes: list[int], mode: str = "kmeans", seed: int = 0) -> None:
    """Initialise ``classes``' proxies from their samples' features (weight imprinting).

    As PODNet's reference code (``add_imprinted_classes``): each sample's feature is L2-normalised;
    with one proxy per class it is the normalised mean; with K proxies, ``kmeans``: the K centres of
    a k-means of the normalised features, ``normal``: K draws from N(normalised mean, their std); each
    multiplied by the mean norm of the classes' proxies that are not being imprinted (1 if none).
    """
    if mode not in ("kmeans", "normal"):
        raise ValueError(f"imprint mode must be 'kmeans' or 'normal', got {mode!r}")
    kernel = np.asarray(head.kernel).copy()
    k = head.proxies
    keep = np.ones(kernel.shape[1], bool)
    for c in classes:
        keep[c * k:(c + 1) * k] = False
    norm = float(np.linalg.norm(kernel[:, keep], axis=0).mean()) if keep.any() else 1.0
    feats = np.asarray(features, "float64")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    for c in classes:
        own = feats[np.asarray(labels) == c]
        if not len(own):
            continue
        mean = own.mean(0)
        mean = mean / max(np.linalg.norm(mean), 1e-12)
        if k == 1:
            proxies = mean[None]
        elif mode == "kmeans":
            proxies = kmeans(own, k, seed=int(rng.integers(2 ** 31)))
        else:
            proxies = rng.normal(mean, own.std(0), size=(k, len(mean)))
        kernel[:, c * k:(c + 1) * k] = (proxies * norm).T
    head.kernel.assign(kernel.astype(np.asarray(head.kernel).dtype))


def _producer(model: keras.Model, tensor):
    """The layer of ``model`` whose output is ``tensor`` (None if none is)."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError):
            continue
    return None


def pre_relu_backbone(backbone: keras.Model) -> keras.Model:
    """The backbone without its final ReLU: its feature vector before the last activation (PODNet's and
    LUCIR's reference networks drop the last ReLU; their classifier and distillation read these
    features).  The same layers and weights, in the same order; the last ``Dense(activation="relu")`` is
    replaced by a linear twin holding its weights.  Handled endings: a ReLU / ``Activation("relu")`` layer,
    a ``Dense`` with ReLU, a global pooling after a ReLU layer; anything else is a ValueError."""
    last = backbone.layers[-1]

    def is_relu(layer) -> bool:
        return isinstance(layer, layers.ReLU) or (
            isinstance(layer, layers.Activation) and getattr(layer.activation, "__name__", "") == "relu")

    if is_relu(last):
        out = last.input
    elif isinstance(last, layers.Dense) and getattr(last.activation, "__name__", "") == "relu":
        linear = layers.Dense.from_config({**last.get_config(), "activation": None})
        out = linear(last.input)
        linear.set_weights(last.get_weights())
    elif isinstance(last, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)) and \
            (relu := _producer(backbone, last.input)) is not None and is_relu(relu):
        out = type(last).from_config(last.get_config())(relu.input)
    else:
        raise MethodParamError("features", f"cannot take the features before the last ReLU of this backbone (its "
                                           f"last layer is {type(last).__name__} {last.name!r}); give "
                                           "method.params.features: post_relu")
    return keras.Model(backbone.inputs[0], out, name=backbone.name)


def feature_maps(backbone: keras.Model) -> list:
    """The backbone's intermediate feature maps PODNet distils: of the layers with a 4-D output
    ``[B, H, W, C]``, the last one at each spatial resolution (the end of each stage)."""
    last: dict[tuple, object] = {}
    for layer in backbone.layers:
        try:
            out = layer.output
        except (AttributeError, ValueError):
            continue
        if isinstance(out, (list, tuple)) or len(out.shape) != 4 or isinstance(layer, layers.InputLayer):
            continue
        last[tuple(out.shape[1:3])] = out
    return list(last.values())


@keras.saving.register_keras_serializable("multiloss_incremental")
class NearestMeanScores(layers.Layer):
    """iCaRL's nearest-mean-of-exemplars classifier as a layer: ``−‖f/‖f‖ − μ_c‖²`` for each class
    mean ``μ_c`` (``means`` ``[K, D]``, normalised), so the argmax is the nearest mean; a class
    without a mean (NaN) scores ``-1e30``."""

    def __init__(self, means=None, units: int | None = None, dim: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")   # the norms and -1e30: beyond float16's range
        super().__init__(**kwargs)
        self.initial = None if means is None else np.asarray(means, "float32")
        self.units = int(units if units is not None else self.initial.shape[0])
        self.dim = int(dim if dim is not None else self.initial.shape[1])

    def build(self, input_shape):
        given = self.initial if self.initial is not None else np.zeros((self.units, self.dim), "float32")
        self.means = self.add_weight(shape=(self.units, self.dim), name="means", trainable=False,
                                     initializer=keras.initializers.Constant(np.nan_to_num(given)))
        self.known = self.add_weight(shape=(self.units,), name="known", trainable=False,
                                     initializer=keras.initializers.Constant(
                                         (~np.isnan(given).any(axis=1)).astype("float32")))

    def call(self, x):
        from keras import ops

        f = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        dist = ops.sum((f[:, None, :] - self.means[None]) ** 2, axis=-1)
        return ops.where(self.known[None] > 0, -dist, -1e30)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dim": self.dim}


class WithScale(layers.Layer):
    """``[z | η]``: a local similarity classifier's logits ``z = η·ŷ`` with its scale η as a last column,
    for a loss that needs η (the NCA margin in similarity units, LUCIR's margin ranking on cosines).
    Holds no weights of its own (η stays the classifier's)."""

    def __init__(self, head: LocalSimilarityClassifier, **kwargs):
        super().__init__(**kwargs)
        self._head = lambda: head   # not tracked: the classifier's weights stay the classifier's

    def call(self, z):
        from keras import ops

        return ops.concatenate([z, ops.ones_like(z[:, :1]) * ops.cast(self._head().scale, z.dtype)], axis=-1)


def copy_layer(layer: layers.Layer, in_dim: int) -> layers.Layer:
    """A new layer of ``layer``'s class and config, built on ``in_dim`` features, with its weights."""
    twin = type(layer).from_config(layer.get_config())
    twin.build((None, int(in_dim)))
    twin.set_weights(layer.get_weights())
    return twin


def copy_model(model: keras.Model) -> keras.Model:
    """A model of the same layers' configs with ``model``'s weights (a frozen teacher: not trainable)."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.trainable = False
    return twin


def classifier_model(inputs, scores, name: str) -> keras.Model:
    """``inputs -> scores`` with the scores named ``scores`` (what ``model.keras`` outputs)."""
    return keras.Model(inputs, layers.Identity(name="scores")(scores), name=name)


class IncrementalNet:
    """A backbone plus a classifier over the classes seen so far.

    ``head``: ``"linear"`` (a Dense layer; ``nonnegative_head`` clips its
    kernel, ``head_bias`` gives it a bias) or ``"lsc"`` (PODNet's local
    similarity classifier with ``proxies`` per class).  ``pod``: the Keras
    model also outputs ``features`` (the embedding) and ``pod`` (the pooled
    intermediate maps, :func:`~multiloss.incremental.losses.pod_pool`).
    """

    def __init__(self, backbone: keras.Model, nonnegative_head: bool = False, head_bias: bool = True,
                 head: str = "linear", proxies: int = 10, pod: bool = False, scale: float = 1.0,
                 learn_scale: bool = True, pre_relu: bool = False):
        if len(backbone.outputs) != 1 or len(backbone.outputs[0].shape) != 2:
            raise ValueError("the backbone must map its inputs to one feature vector [B, D]; "
                             f"it outputs {[tuple(o.shape) for o in backbone.outputs]}")
        if pre_relu:
            backbone = pre_relu_backbone(backbone)
        if head not in ("linear", "lsc"):
            raise ValueError(f"head must be 'linear' or 'lsc', got {head!r}")
        self.backbone = backbone
        self.nonnegative_head, self.head_bias = nonnegative_head, head_bias
        self.head_kind, self.proxies, self.scale, self.learn_scale = head, int(proxies), float(scale), learn_scale
        self.head: layers.Layer | None = None
        self._model: keras.Model | None = None
        self._multi: keras.Model | None = None
        self.pod_sizes: list[int] = []
        #: Reads records (an image folder's file paths) into inputs; see multiloss.incremental.inputs.
        self.reader: Callable | None = None
        if pod:
            maps = feature_maps(backbone)
            if not maps:
                raise ValueError("POD distillation needs a backbone with 4-D feature maps [B, H, W, C]")
            self._multi = keras.Model(backbone.inputs[0], [backbone.outputs[0], *maps], name="backbone_maps")
            self.pod_sizes = [int((m.shape[1] + m.shape[2]) * m.shape[3]) for m in maps]

    @property
    def num_classes(self) -> int:
        return 0 if self.head is None else self.head.units

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.outputs[0].shape[-1])

    def expand(self, num_classes: int) -> None:
        """Grow the classifier to ``num_classes`` units, keeping the old ones exactly."""
        if self.head_kind == "lsc":
            self.head = expand_lsc(self.head, num_classes, self.feature_dim, self.proxies, self.scale,
                                   self.learn_scale)
        else:
            self.head = expand_classifier(self.head, num_classes, self.feature_dim,
                                          nonnegative=self.nonnegative_head, bias=self.head_bias)
        self._model = None

    def model(self) -> keras.Model:
        """``inputs -> {"logits": ...}`` over the current classifier (a fresh Keras model per expansion);
        with ``pod``, also ``features`` and ``pod``."""
        if self.head is None:
            raise ValueError("the classifier has no units yet: call expand(num_classes) first")
        if self._model is None:
            inputs = keras.Input(tuple(self.backbone.inputs[0].shape[1:]), name="inputs")
            if self._multi is None and self.head_kind != "lsc":
                outputs = {"logits": self.head(self.backbone(inputs))}
            elif self._multi is None:   # the cosine classifier's features are an output too (LUCIR)
                embed = keras.Model(self.backbone.inputs[0], self.backbone.outputs[0], name="backbone_features")
                feats = embed(inputs)
                outputs = {"logits": self.head(feats), "features": layers.Identity(name="features")(feats)}
            else:
                from .losses import pod_pool

                feats, *maps = self._multi(inputs)
                pooled = layers.Concatenate(name="pod")([pod_pool(m) for m in maps]) if len(maps) > 1 \
                    else layers.Identity(name="pod")(pod_pool(maps[0]))
                outputs = {"logits": self.head(feats), "features": layers.Identity(name="features")(feats),
                           "pod": pooled}
            if self.head_kind == "lsc":
                outputs["scaled"] = WithScale(self.head, name="scaled")(outputs["logits"])
            self._model = keras.Model(inputs, outputs, name="incremental_net")
        return self._model

    def copy(self) -> IncrementalNet:
        """The same network with its own (frozen) layers: the teacher of a stage whose batches are augmented."""
        twin = IncrementalNet(copy_model(self.backbone), self.nonnegative_head, self.head_bias, self.head_kind,
                              self.proxies, self._multi is not None, self.scale, self.learn_scale)
        if self.head is not None:
            twin.head = copy_layer(self.head, self.feature_dim)
        twin.reader = self.reader
        return twin

    def inference_model(self, means: np.ndarray | None = None) -> keras.Model:
        """``inputs -> scores`` over the seen classes (what ``model.keras`` holds): the classifier's
        logits, or with ``means`` iCaRL's nearest mean of exemplars (:class:`NearestMeanScores`)."""
        inputs = keras.Input(tuple(self.backbone.inputs[0].shape[1:]), name="inputs")
        feats = self.backbone(inputs)
        scores = self.head(feats) if means is None else NearestMeanScores(means, name="nearest_mean")(feats)
        return classifier_model(inputs, scores, "incremental_classifier")

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The classifier's logits ``[N, num_classes]`` (inference mode)."""
        return _batched(lambda b: self.head(self.backbone(b, training=False)), x, batch_size, self.reader)

    def features(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The backbone's feature vectors ``[N, D]`` (inference mode)."""
        return _batched(lambda b: self.backbone(b, training=False), x, batch_size, self.reader)

    def pooled_maps(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The pooled intermediate feature maps ``[N, Σ (H + W)·C]`` (inference mode)."""
        if self._multi is None:
            raise ValueError("this network was built without pod=True")
        from keras import ops

        from .losses import pod_pool

        def pooled(b):
            _, *maps = self._multi(b, training=False)
            return ops.concatenate([pod_pool(m) for m in maps], axis=-1)

        return _batched(pooled, x, batch_size, self.reader)

    def get_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model().get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model().set_weights(weights)


class QuadraticPenalty(layers.Layer):
    """EWC's penalty on ``variables``: ``Σ_i A_i (θ_i − M_i)² + R``, the same value in every row ``[B, 1]``.

    ``Σ_t F_t (θ − θ*_t)²`` over earlier tasks equals ``A (θ − M)² + R`` with ``A = Σ_t F_t``,
    ``M = Σ_t F_t θ*_t / A`` and ``R = Σ_t F_t θ*_t² − A M²`` (a constant), so one set of statistics
    serves the per-task and the online variant.  They are non-trainable weights (saved with the network);
    the penalised variables are the backbone's, held without being tracked as this layer's own."""

    def __init__(self, variables, **kwargs):
        super().__init__(**kwargs)
        self._variables = lambda: variables
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]

    def build(self, input_shape):
        self.fisher = [self.add_weight(shape=s, initializer="zeros", trainable=False, name=f"fisher_{i}")
                       for i, s in enumerate(self.shapes)]
        self.anchor = [self.add_weight(shape=s, initializer="zeros", trainable=False, name=f"anchor_{i}")
                       for i, s in enumerate(self.shapes)]
        self.rest = self.add_weight(shape=(), initializer="zeros", trainable=False, name="rest")

    def call(self, z):
        from keras import ops

        total = self.rest
        for v, a, m in zip(self._variables(), self.fisher, self.anchor):
            total = total + ops.sum(a * ops.square(ops.cast(v, a.dtype) - m))
        return ops.ones_like(z[:, :1]) * ops.cast(total, z.dtype)

    def value(self) -> float:
        return float(np.asarray(self.call(np.zeros((1, 1), "float32")))[0, 0])

    def consolidate(self, fisher: list[np.ndarray], online: bool = True, gamma: float = 1.0) -> None:
        """Add a task: its Fisher ``fisher`` at the current weights θ*.  ``online``: ``A ← γ·A + F``, anchor
        θ* (Schwarz et al. 2018); otherwise one more term ``F (θ − θ*)²`` (Kirkpatrick et al. 2017)."""
        if not self.built:
            self.build(None)
        theta = [np.asarray(v, "float64") for v in self._variables()]
        a_old = [np.asarray(w, "float64") for w in self.fisher]
        m_old = [np.asarray(w, "float64") for w in self.anchor]
        rest = 0.0 if online else float(np.asarray(self.rest))
        for i, (f, t, a, m) in enumerate(zip(fisher, theta, a_old, m_old)):
            f = np.asarray(f, "float64")
            if online:
                a_new, m_new = gamma * a + f, t
            else:
                a_new = a + f
                with np.errstate(invalid="ignore", divide="ignore"):
                    m_new = np.where(a_new > 0, (a * m + f * t) / a_new, t)
                rest += float((a * m ** 2 + f * t ** 2 - a_new * m_new ** 2).sum())
            self.fisher[i].assign(a_new.astype("float32"))
            self.anchor[i].assign(m_new.astype("float32"))
        self.rest.assign(max(rest, 0.0))


class PenaltyNet(IncrementalNet):
    """An :class:`IncrementalNet` whose Keras model also outputs ``penalty``: a
    :class:`QuadraticPenalty` on the backbone's trainable weights (EWC)."""

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(backbone, **kwargs)
        self.penalty = QuadraticPenalty(backbone.trainable_variables, name="penalty")

    def model(self) -> keras.Model:
        if self.head is None:
            raise ValueError("the classifier has no units yet: call expand(num_classes) first")
        if self._model is None:
            inputs = keras.Input(tuple(self.backbone.inputs[0].shape[1:]), name="inputs")
            logits = self.head(self.backbone(inputs))
            self._model = keras.Model(inputs, {"logits": logits, "penalty": self.penalty(logits)},
                                      name="incremental_net")
        return self._model


class DERNet:
    """DER's network (Yan et al. 2021): a new feature extractor per step, the old ones frozen.

    The features are the concatenation of every step's extractor; the
    classifier over them grows with the classes (old units copied; a new
    unit's weights over the old extractors' features start at the layer's
    initialisation, as the reference code).  From the second step an
    auxiliary classifier on the newest extractor's features has one unit per
    new class plus one for "an old class"; the Keras model outputs ``logits``
    and ``aux_logits``.  ``build`` makes a fresh extractor (a backbone
    builder with its parameters bound).  ``shared``: a trunk every extractor
    reads (none for DER; MEMO's generalised blocks, :class:`MEMONet`).
    """

    def __init__(self, build: Callable[[], keras.Model], copy_previous: bool = True):
        self.build = build
        self.copy_previous = bool(copy_previous)   # a new extractor starts with the previous one's weights
        self.backbones: list[keras.Model] = []
        self.shared: keras.Model | None = None
        self.head: layers.Dense | None = None
        self.aux: layers.Dense | None = None
        self._model: keras.Model | None = None
        self.reader: Callable | None = None   # as IncrementalNet.reader

    @property
    def num_classes(self) -> int:
        return 0 if self.head is None else self.head.units

    @property
    def feature_dim(self) -> int:
        return sum(int(b.outputs[0].shape[-1]) for b in self.backbones)

    @property
    def parts(self) -> list[keras.Model]:
        """Every feature-computing model: the shared trunk (if any), then the extractors."""
        return ([] if self.shared is None else [self.shared]) + list(self.backbones)

    def copy(self) -> DERNet:
        """The same network with its own (frozen) layers (see :meth:`IncrementalNet.copy`)."""
        twin = shallow_copy(self)
        twin.backbones = [copy_model(b) for b in self.backbones]
        twin.shared = None if self.shared is None else copy_model(self.shared)
        twin.head = None if self.head is None else copy_layer(self.head, self.feature_dim)
        if self.aux is not None:
            twin.aux = copy_layer(self.aux, int(self.backbones[-1].outputs[0].shape[-1]))
        twin._model = None
        return twin

    def _input_shape(self) -> tuple:
        first = self.shared if self.shared is not None else self.backbones[0]
        return tuple(first.inputs[0].shape[1:])

    def _branches(self, inputs, training: bool | None = None, count: int | None = None) -> list:
        """The features of the first ``count`` extractors (all by default), each on the shared trunk's output."""
        h = inputs if self.shared is None else self.shared(inputs, training=training)
        return [b(h, training=training) for b in self.backbones[:count]]

    def _joined(self, inputs, training: bool | None = None, count: int | None = None):
        feats = self._branches(inputs, training, count)
        if len(feats) == 1:
            return feats[0]
        if training is None:   # symbolic: a named layer of the Keras model
            return layers.Concatenate(name="features")(feats)
        return keras.ops.concatenate(feats, axis=-1)

    def inference_model(self) -> keras.Model:
        """``inputs -> scores``: the classifier on every extractor's features (no auxiliary classifier)."""
        inputs = keras.Input(self._input_shape(), name="inputs")
        return classifier_model(inputs, self.head(self._joined(inputs)), "der_classifier")

    def _new_extractor(self) -> keras.Model:
        """A fresh extractor: the config's backbone (MEMO: a specialised block)."""
        return self.build()

    def _aux_units(self, num_classes: int, old_units: int) -> int:
        """Units of the auxiliary classifier: the new classes and one "old" class (DER, MEMO)."""
        return num_classes - old_units + 1

    def expand(self, num_classes: int) -> None:
        """A new extractor (the old ones frozen), the classifier grown to ``num_classes``, a fresh
        auxiliary classifier (from the second step)."""
        old_units, old_dim = self.num_classes, self.feature_dim
        if num_classes <= old_units:
            raise ValueError(f"the classifier has {old_units} units; expanding needs more, got {num_classes}")
        for b in self.backbones:
            b.trainable = False
        new = self._new_extractor()
        if len(new.outputs) != 1 or len(new.outputs[0].shape) != 2:
            raise ValueError("the backbone must map its inputs to one feature vector [B, D]")
        if self.copy_previous and self.backbones:
            new.set_weights(self.backbones[-1].get_weights())
        self.backbones.append(keras.Model(new.inputs[0], new.outputs[0], name=f"extractor_{len(self.backbones)}"))
        head = layers.Dense(num_classes, name="logits")
        head.build((None, self.feature_dim))
        if self.head is not None:
            kernel, bias = (np.asarray(w).copy() for w in head.get_weights())
            old_kernel, old_bias = self.head.get_weights()
            kernel[:old_dim, :old_units] = old_kernel
            bias[:old_units] = old_bias
            head.set_weights([kernel, bias])
        self.head = head
        self.aux = None
        if old_units:
            self.aux = layers.Dense(self._aux_units(num_classes, old_units), name="aux_logits")
            self.aux.build((None, int(new.outputs[0].shape[-1])))
        self._model = None

    def reset_classifier(self) -> None:
        """Give the classifier fresh initial weights (DER's re-training starts from them)."""
        fresh = layers.Dense(self.head.units, name="logits", use_bias=self.head.use_bias)
        fresh.build((None, self.feature_dim))
        self.head.set_weights(fresh.get_weights())

    def model(self) -> keras.Model:
        if self.head is None:
            raise ValueError("the classifier has no units yet: call expand(num_classes) first")
        if self._model is None:
            inputs = keras.Input(self._input_shape(), name="inputs")
            feats = self._branches(inputs)
            joined = feats[0] if len(feats) == 1 else layers.Concatenate(name="features")(feats)
            outputs = {"logits": self.head(joined)}
            if self.aux is not None:
                outputs["aux_logits"] = self.aux(feats[-1])
            self._model = keras.Model(inputs, outputs, name="der_net")
        return self._model

    def _features(self, b):
        return self._joined(b, training=False)

    def features(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return _batched(self._features, x, batch_size, self.reader)

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return _batched(lambda b: self.head(self._features(b)), x, batch_size, self.reader)

    def get_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model().get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.model().set_weights(weights)


class FOSTERNet(DERNet):
    """FOSTER's network (Wang et al. 2022): between steps, one extractor and its classifier.

    :meth:`expand` gives the step's boosting form: the old extractor frozen, a
    new one (a copy of it, as the authors' code and PyCIL), a classifier over
    both (the old units' weights on the old features copied), the old
    classifier kept frozen as ``old_head`` (the old model's logits,
    :meth:`old_logits`) and an auxiliary classifier over every seen class on
    the new extractor (feature enhancement).  :meth:`compress` turns it into
    the compression's student: one extractor started from the old one and a
    classifier whose old units are the old classifier's.  ``compress=False``:
    never compressed, the network keeps every extractor (DER's growth).

    A checkpoint holds the compressed network: after being expanded step by
    step (as ``--resume`` rebuilds it), :meth:`set_weights` compresses the
    boosting form first.
    """

    def __init__(self, build: Callable[[], keras.Model], copy_previous: bool = True, compress: bool = True):
        super().__init__(build, copy_previous)
        self.compressing = bool(compress)
        self.old_head: layers.Dense | None = None

    def _aux_units(self, num_classes: int, old_units: int) -> int:
        return num_classes   # PyCIL's fe_fc: every seen class

    def expand(self, num_classes: int) -> None:
        if self.compressing and len(self.backbones) > 1:
            self.compress()   # expanded again without a compression in between: a checkpoint being rebuilt
        old = self.head
        super().expand(num_classes)
        self.old_head = old
        if old is not None:
            old.trainable = False

    def copy(self) -> FOSTERNet:
        twin = super().copy()
        if self.old_head is not None:
            old_dim = sum(int(b.outputs[0].shape[-1]) for b in self.backbones[:-1])
            twin.old_head = copy_layer(self.old_head, old_dim)
        return twin

    def old_logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The model before this step's logits ``[N, old classes]``: the old extractors and the old classifier."""
        if self.old_head is None:
            raise ValueError("no old classifier: the network has not been expanded after a first step")
        count = len(self.backbones) - 1
        return _batched(lambda b: self.old_head(self._joined(b, training=False, count=count)), x, batch_size,
                        self.reader)

    def compress(self) -> None:
        """Become the compression's student: one extractor with the old extractor's weights (trainable), a
        classifier over every seen class whose old units are the old classifier's (the new units at the
        layer's initialisation), no auxiliary classifier (PyCIL's ``_snet``: ``load_state_dict`` of
        ``convnets[0]``, ``copy_fc(oldfc)``)."""
        if len(self.backbones) != 2 or self.old_head is None:
            raise ValueError(f"compressing needs the boosting form (two extractors and the old classifier); "
                             f"the network has {len(self.backbones)} extractor(s)")
        student = copy_model(self.backbones[0])
        student.trainable = True
        student = keras.Model(student.inputs[0], student.outputs[0], name="extractor_0")
        head = expand_classifier(self.old_head, self.num_classes, int(student.outputs[0].shape[-1]))
        self.backbones, self.head, self.aux, self.old_head, self._model = [student], head, None, None, None

    def set_weights(self, weights: list[np.ndarray]) -> None:
        if self.compressing and len(self.backbones) > 1:
            self.compress()
        super().set_weights(weights)


def stage_ends(backbone: keras.Model) -> list[str]:
    """Names of the layers that end a stage of ``backbone``: with 4-D feature maps, the last layer at each
    spatial resolution (a ResNet stage's last block; for the ``cnn``: the first conv, the last conv, the last
    pooling); without (an ``mlp``), every ``Dense`` layer."""
    maps: dict[tuple, str] = {}
    dense: list[str] = []
    for layer in backbone.layers:
        try:
            out = layer.output
        except (AttributeError, ValueError):
            continue
        if isinstance(out, (list, tuple, dict)) or isinstance(layer, layers.InputLayer):
            continue
        if len(out.shape) == 4:
            maps[tuple(out.shape[1:3])] = layer.name
        if isinstance(layer, layers.Dense):
            dense.append(layer.name)
    return list(maps.values()) if maps else dense


def split_backbone(backbone: keras.Model, split: str | None = None,
                   specialized_stages: int = 1) -> tuple[keras.Model, keras.Model]:
    """``(shared, specialised)``: ``backbone`` cut after its layer ``split`` (default: the end of the stage
    before its last ``specialized_stages`` stages, :func:`stage_ends`).  The two models hold the backbone's
    own layers; ``specialised`` maps the cut's output to the feature vector."""
    names = [layer.name for layer in backbone.layers]
    ends = stage_ends(backbone)
    if split is None:
        if len(ends) <= specialized_stages:
            raise MethodParamError("specialized_stages",
                                   f"the backbone has {len(ends)} stage(s) ({', '.join(ends) or 'none found'}); "
                                   f"{specialized_stages} specialised leave none shared: lower it or name the "
                                   "last shared layer in method.params.split_layer")
        split = ends[-(specialized_stages + 1)]
    elif split not in names:
        raise MethodParamError("split_layer", f"the backbone has no layer {split!r}; "
                                              f"{did_you_mean(split, names)}its stage ends: {', '.join(ends)}")
    cut = backbone.get_layer(split).output
    if split == names[-1] or cut is backbone.outputs[0]:
        raise MethodParamError("split_layer", f"{split!r} is the backbone's output; nothing would be "
                                              f"specialised (stage ends: {', '.join(ends)})")
    shared = keras.Model(backbone.inputs[0], cut, name="shared")
    problem = None
    try:
        block = keras.Model(cut, backbone.outputs[0], name="specialized")
    except Exception as exc:   # noqa: BLE001 - Keras refuses a graph that does not start at the cut
        problem = str(exc)
    else:
        before = {layer.name for layer in shared.layers}
        if len(block.inputs) != 1 or any(layer.name in before for layer in block.layers
                                         if not isinstance(layer, layers.InputLayer)):
            problem = "a later layer reads a tensor before the cut"
    if problem is not None:
        raise MethodParamError("split_layer", f"the backbone cannot be cut after {split!r} ({problem}); "
                                              f"name a layer every path goes through, such as {', '.join(ends)}")
    return shared, block


class MEMONet(DERNet):
    """MEMO's network (Zhou et al. 2023): shared generalised blocks, one specialised block per step.

    The config's backbone is cut after ``split`` (:func:`split_backbone`): the
    shallow part is ``shared`` by every step (frozen from the second step
    unless ``train_shared``), and each step adds a copy of the deep part (the
    new block started from the previous one's weights, as PyCIL's
    ``AdaptiveNet``); the rest is :class:`DERNet`: the classifier on the
    blocks' concatenated features, the auxiliary classifier on the newest.
    """

    def __init__(self, build: Callable[[], keras.Model], split: str | None = None, specialized_stages: int = 1,
                 copy_previous: bool = True, train_shared: bool = False):
        super().__init__(build, copy_previous)
        self.split, self.specialized_stages, self.train_shared = split, int(specialized_stages), bool(train_shared)
        # Cut now, so that a bad split is reported when the network is made (`multiloss check` included).
        self.shared, self._template = split_backbone(build(), split, self.specialized_stages)

    def _new_extractor(self) -> keras.Model:
        if not self.backbones:
            return self._template
        block = keras.models.clone_model(self._template)   # fresh weights; expand copies the previous block's
        for layer in block.layers:   # the template's layers are frozen by now and their clones keep the flag
            layer.trainable = True   # (setting the clone's own flag, already true, does not reach them)
        return block

    def expand(self, num_classes: int) -> None:
        if self.backbones:   # trained at the first step, then frozen (unless train_shared)
            self.shared.trainable = self.train_shared
        super().expand(num_classes)


def _batched(fn, x: np.ndarray, batch_size: int, reader: Callable | None = None) -> np.ndarray:
    """``fn`` over ``x`` in batches, eagerly (nothing to trace for each new shape); records (a structured
    array: an image folder's file paths) are read into inputs by ``reader`` batch by batch."""
    if not len(x):
        raise ValueError("no samples to predict")
    if is_records(x):
        if reader is None:
            raise ValueError("these inputs are records (file paths) and the network has no reader for them")
        return np.concatenate([np.asarray(fn(reader(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)])
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


__all__ = ["IncrementalNet", "DERNet", "FOSTERNet", "MEMONet", "split_backbone", "stage_ends",
           "LocalSimilarityClassifier", "NearestMeanScores", "saved_backbone",
           "BackboneError", "MethodParamError", "backbone_problem", "vector_layers", "copy_model", "copy_layer", "expand_classifier", "expand_lsc",
           "align_weights", "feature_maps", "imprint_proxies", "kmeans", "pre_relu_backbone", "WithScale",
           "QuadraticPenalty", "PenaltyNet", "get_backbone", "register_backbone", "BACKBONES", "cnn", "mlp",
           "resnet18", "resnet32",
           "keras_application"]
