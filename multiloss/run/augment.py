"""Data augmentation from YAML: Keras's random preprocessing layers, on training batches only.

    train:
      augment:
        - random_flip: {mode: horizontal}
        - random_translation: {height_factor: 0.1, width_factor: 0.1}
        - random_crop: {padding: 4}          # pad 4 zero pixels on each side, crop back to the input's size

Every ``keras.layers.Random*`` layer is named by its snake_case name (``random_flip``,
``random_crop``, ``random_translation``, ``random_rotation``, ``random_zoom``, ``random_contrast``,
``random_brightness``, ...), with the layer's own parameters.  Three rules of multiloss's:

* ``seed`` is not a parameter: layer ``i`` is seeded with the run's seed (+ ``i``), so the same
  config draws the same augmentations;
* ``value_range`` (the layers that have one) defaults to ``[0, 1]``, the pixel range of every
  built-in image source (Keras's default is ``[0, 255]``);
* ``random_crop``'s ``height`` and ``width`` default to the input's size, and ``padding: p`` pads
  ``p`` zero pixels on every side first (the pad-and-crop of CIFAR training).  Every layer must keep
  the input's shape: the training batches and the evaluation batches go to the same model.

The layers are applied to the inputs of training batches only (never to validation or test
batches, and never to the targets: a reconstruction target stays the unaugmented image); a dict of
inputs has each input augmented with its own draws.  They are not part of any saved model.
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator

from ..spec.validation import Problems, unknown_key

#: Parameters of multiloss's own, on top of the Keras layer's.
EXTRA_PARAMS = {"random_crop": ("padding",)}
#: Set by the run, not by the config.
RUN_PARAMS = ("seed", "name", "kwargs", "self")
#: Parameters given by the input's shape when left out.
FROM_SHAPE = {"random_crop": ("height", "width")}
#: Values Keras takes without complaint but ignores (RandomFlip with another mode flips nothing).
CHOICES = {("random_flip", "mode"): ("horizontal", "vertical", "horizontal_and_vertical")}
ENTRY_FORM = "each entry is {layer: {parameter: value}} (or a layer name alone), e.g. {random_flip: {mode: horizontal}}"


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def layer_classes() -> dict[str, type]:
    """``{snake_case name: class}`` of every ``keras.layers.Random*`` layer."""
    import keras

    return {snake_case(n): getattr(keras.layers, n) for n in sorted(dir(keras.layers))
            if n.startswith("Random") and isinstance(getattr(keras.layers, n), type)}


def layer_params(name: str, cls: type) -> tuple[list[str], list[str]]:
    """``(valid, required)`` parameter names of the layer ``name`` in YAML."""
    params = inspect.signature(cls.__init__).parameters.values()
    valid = [p.name for p in params if p.name not in RUN_PARAMS and p.kind is not p.VAR_KEYWORD]
    required = [p.name for p in params if p.default is p.empty and p.name not in RUN_PARAMS
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in FROM_SHAPE.get(name, ())]
    return valid + list(EXTRA_PARAMS.get(name, ())), required


def parse_entry(entry: Any) -> tuple[str, dict] | None:
    """``(layer name, params)`` of one entry, or None when it has neither form."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if params is None:
            return str(name), {}
        if isinstance(params, dict):
            return str(name), dict(params)
    return None


def augment_problems(entries: list) -> Problems:
    """Problems of an ``augment`` list, with paths inside it (``(1, "random_flip", "mod")``)."""
    classes = layer_classes()
    problems: Problems = []
    for i, entry in enumerate(entries):
        parsed = parse_entry(entry)
        if parsed is None:
            problems.append(((i,), f"{ENTRY_FORM}; got {entry!r}"))
            continue
        name, params = parsed
        if name not in classes:
            problems.append(((i, name), unknown_key(name, classes, "augmentation layer")))
            continue
        valid, required = layer_params(name, classes[name])
        bad = False
        for key in params:
            if key == "seed":
                problems.append(((i, name, key), "the seed is drawn from the run's `seed`; leave it out"))
                bad = True
            elif key not in valid:
                problems.append(((i, name, key), unknown_key(key, valid, "parameter")))
                bad = True
            elif (name, key) in CHOICES and params[key] not in CHOICES[name, key]:
                problems.append(((i, name, key), unknown_key(params[key], CHOICES[name, key], key)))
                bad = True
        for key in required:
            if key not in params:
                problems.append(((i, name), f"{name} needs `{key}`; its parameters: {', '.join(valid)}"))
                bad = True
        if not bad:
            try:   # values Keras refuses, at construction or on a first (RGB) batch: mode: diagonal
                stack = make_layers(name, params, seed=0, shape=(16, 16, 3))
                if name != "random_crop":   # its size is the data's business (checked by Augmenter)
                    stack[-1](np.zeros((1, 16, 16, 3), "float32"), training=True)
            except Exception as exc:   # noqa: BLE001 - whatever Keras raises for this value, named
                problems.append(((i, name), f"{name}: {exc}"))
    return problems


def _checked(entries: list) -> list:
    """The pydantic check of an ``augment`` field: its problems at their paths inside the list."""
    from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

    problems = augment_problems(entries)
    if problems:
        raise ValidationError.from_exception_data("augment", [
            InitErrorDetails(type=PydanticCustomError("augment", "{message}", {"message": m}), loc=p, input=entries)
            for p, m in problems])
    return entries


#: The type of an ``augment`` key in a config: a list of layers, checked with paths and did-you-mean.
AugmentList = Annotated[list[Any], AfterValidator(_checked)]


def make_layers(name: str, params: dict, seed: int, shape: tuple) -> list:
    """The Keras layers of one entry (``random_crop`` with ``padding``: zero padding, then the crop)."""
    import keras

    cls = layer_classes()[name]
    params = dict(params)
    padding = params.pop("padding", 0) if name == "random_crop" else 0
    if name == "random_crop":
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"padding must be a whole number of pixels ≥ 0, got {padding!r}")
        if len(shape) != 3:
            raise ValueError(f"random_crop needs image inputs [height, width, channels], got shape {tuple(shape)}")
        params.setdefault("height", int(shape[0]))
        params.setdefault("width", int(shape[1]))
    if "value_range" in inspect.signature(cls.__init__).parameters:
        params.setdefault("value_range", (0, 1))
    stack = [keras.layers.ZeroPadding2D(padding)] if padding else []
    return stack + [cls(seed=seed, **params)]


class AugmentError(ValueError):
    """An ``augment`` list that does not fit the data: ``problems`` with paths inside the list."""

    def __init__(self, problems: Problems):
        super().__init__("; ".join(f"augment[{p[0]}]: {m}" for p, m in problems))
        self.problems = problems


class Augmenter:
    """The layers of an ``augment`` list for inputs of ``shapes`` (one shape, or ``{input: shape}``),
    seeded from ``seed``; ``augmenter(x)`` augments a batch (a dict: each input with its own layers).

    Every layer is tried on a zero batch of each shape first (on a copy, so the draws are not
    consumed): a layer that fails or changes the shape raises :class:`AugmentError`.
    """

    def __init__(self, entries: list, seed: int, shapes: tuple | dict):
        self.entries, self.seed = list(entries), int(seed)
        self.named = isinstance(shapes, dict)
        shapes = dict(shapes) if self.named else {"": tuple(shapes)}
        problems: Problems = []
        for shape in shapes.values():
            problems += self._try(shape)
        if problems:
            raise AugmentError(list(dict.fromkeys(problems)))
        self.stacks = {k: self._stack(self.seed + 1000 * j, shape) for j, (k, shape) in enumerate(shapes.items())}

    def _stack(self, seed: int, shape: tuple):
        import keras

        layers = []
        for i, entry in enumerate(self.entries):
            name, params = parse_entry(entry)
            layers += make_layers(name, params, seed + i, shape)
        return keras.Sequential(layers, name="augment")

    def _try(self, shape: tuple) -> Problems:
        x = np.zeros((2, *shape), "float32")
        for i, entry in enumerate(self.entries):
            name, params = parse_entry(entry)
            try:
                for layer in make_layers(name, params, 0, shape):
                    x = np.asarray(layer(x, training=True))
            except Exception as exc:   # noqa: BLE001 - whatever Keras raises for this input, named
                return [((i, name), f"{name} fails on inputs shaped {tuple(shape)}: {exc}")]
        if x.shape[1:] != tuple(shape):
            return [((len(self.entries) - 1, name), f"the augmentations turn inputs shaped {tuple(shape)} into "
                     f"{x.shape[1:]}; they must keep the shape (the model sees unaugmented inputs at evaluation); "
                     "random_crop crops to the input's size by default, after `padding`")]
        return []

    def __call__(self, x):
        """A training batch, augmented (``training=True``)."""
        if self.named:
            return {k: self.stacks[k](v, training=True) for k, v in x.items()}
        return self.stacks[""](x, training=True)

    def dataset(self, ds):
        """A batched ``tf.data`` dataset of ``(x, y[, sample_weight])`` with ``x`` augmented (in order)."""
        def augment(x, *rest):
            return (self(x), *rest)

        return ds.map(augment)


def augmenter_for(cfg, entries: list, seed: int, shapes, where: tuple = ("train", "augment")) -> Augmenter | None:
    """The ``augment`` layers of a config for inputs of ``shapes``, seeded with ``seed`` (None without
    layers); layers that do not fit the inputs are a SpecError at ``where`` (``cfg.error``)."""
    if not entries:
        return None
    try:
        return Augmenter(entries, seed, shapes)
    except AugmentError as exc:
        raise cfg.error([(where + p, m) for p, m in exc.problems]) from None


__all__ = ["AugmentList", "Augmenter", "AugmentError", "augment_problems", "layer_classes",
           "augmenter_for"]
