"""Built-in data sources and the one interface they share.

A data source is ``(seed, **params) -> Splits``: inputs and a dict of named targets for the train,
validation and test parts, split deterministically from the seed.  Register one with
``@register_data(name)``; the file sources (``image_folder``, ``csv``, ``parquet``, ``tfrecord``)
are in :mod:`multiloss.run.sources`.  Targets every image source provides: ``class`` (int id),
``image`` (the input, for reconstruction), and for Fashion-MNIST ``group`` (tops, bottoms &
dresses, footwear, bags); pair sources provide ``class_a``, ``class_b`` and ``same``.

**A user's source** ``package.module:function`` (the CLI imports it from the current folder) returns
a :class:`Splits` or ``{"train": ..., "val": ..., "test": ..., "info": {...}}``, each part ``(x, y)``
arrays (``y`` a dict of named targets) or a ``tf.data`` dataset of *single examples* ``(x, y)`` or
``(x, y, sample_weight)``.  multiloss batches a dataset with ``train.batch_size`` and shuffles its
train part with the run's seed (``train.shuffle``).  An already batched dataset is refused (undo it
with ``ds.unbatch()``): its batch size and order would silently override the config's.

**The info contract**, checked for every user source (an error names the source and what is missing):

- ``input_shape``: one example's input shape without the batch axis, e.g. ``(64, 64, 3)``.  Taken
  from the arrays or the dataset's examples when they have one fully known shape (for a dict of
  inputs: one shared shape, else left to the model builder); examples with unknown dimensions
  (``(None, None, 3)``) must give it.
- ``num_classes``, ``class_names`` (optional): the class target's number of classes and their names
  in id order; they must agree, and ``num_classes`` is filled from ``class_names``.  The
  classification heads of ``multihead_cnn`` and ``mlp`` read ``num_classes``; ``multiloss predict``
  reports ``class_names``.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..spec.errors import RunError
from ..spec.imports import is_import_string
from ..spec.registry import Registry
from ..spec.validation import did_you_mean

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_GROUPS = ["tops", "bottoms & dresses", "footwear", "bags"]
FASHION_GROUP_OF_CLASS = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], "int32")


#: The shuffle buffer of a dataset whose elements are examples (not file paths), capped by its size.
SHUFFLE_BUFFER = 10_000


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of epoch ``epoch`` (0-based) of a run seeded ``seed``: a function of the two
    alone, so a run resumed at epoch k reads epochs k, k+1, ... as the uninterrupted run read them."""
    return int(np.random.default_rng([seed, epoch]).integers(2 ** 31))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` rows in epoch ``epoch``: a permutation drawn from :func:`epoch_seed`."""
    return np.random.default_rng(epoch_seed(seed, epoch)).permutation(n)


def digest_arrays(arrays: dict[str, Any]) -> str:
    """A short SHA-256 of named arrays: their names, shapes, dtypes and values."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype == object:
            a = a.astype(str)
        h.update(f"{name}{a.shape}{a.dtype.str}".encode())
        h.update(np.ascontiguousarray(a).data)      # hashed in place, not copied
    return h.hexdigest()[:16]


def check_same_data(run_path, before: dict[str, str | None] | None, now: dict[str, str | None]) -> None:
    """Refuse to resume the run at ``run_path`` on other examples than it began with (``before``, the
    digests its checkpoint keeps; None for a checkpoint without them).  Files added to an image folder
    would move images between the drawn splits, so test images would be trained on.  A split with no
    digest on either side (a user's dataset) is not compared."""
    if before is None:
        return
    changed = [k for k in sorted(set(before) | set(now)) if (k in before) != (k in now)
               or (before[k] is not None and now[k] is not None and before[k] != now[k])]
    if changed:
        raise RunError(f"{run_path}: the data differs from the run being resumed: the {', '.join(changed)} "
                       f"split{'s hold' if len(changed) > 1 else ' holds'} other examples than when the run began "
                       "(files added, removed or renamed?); --resume continues only on the same data: put it back, "
                       "or start a new run (--overwrite, or another name)")


def concatenated(datasets: list):
    """``datasets`` one after another, concatenated as a balanced tree (depth log₂ n, not n); each
    one's iterator is made only when the one before it is exhausted."""
    while len(datasets) > 1:
        datasets = [datasets[i].concatenate(datasets[i + 1]) if i + 1 < len(datasets) else datasets[i]
                    for i in range(0, len(datasets), 2)]
    return datasets[0]


@dataclass
class Part:
    """Inputs and named targets of one split (arrays), or a ``tf.data`` dataset of single examples.

    A dataset part may hold small records (file paths) with ``decode``, the function that reads
    one into ``(x, y)``: records are shuffled all at once, then decoded, so the examples stream.
    ``cache`` keeps the decoded examples: ``""`` in memory, else in files with that prefix.
    """

    x: Any
    y: dict[str, np.ndarray] | None = None
    decode: Callable | None = None
    cache: str | None = None
    #: For a dataset: a digest of what it reads, given by its source (an image folder: its files and ids).
    identity: str | None = None
    #: For a dataset: reads its records one by one and says what is wrong with each that does not read
    #: (an image folder: a damaged file), to name it when reading fails mid-epoch (:func:`read_errors_named`).
    check: Callable[[], list[str]] | None = None

    def __len__(self) -> int:
        first = next(iter(self.x.values())) if isinstance(self.x, dict) else self.x
        return len(first)

    def take(self, index) -> Part:
        """The rows at ``index`` (arrays only)."""
        x = {k: v[index] for k, v in self.x.items()} if isinstance(self.x, dict) else self.x[index]
        return Part(x, {k: v[index] for k, v in self.y.items()})

    @property
    def is_dataset(self) -> bool:
        return self.y is None

    @property
    def is_empty(self) -> bool:
        """No examples: arrays of 0 rows, or a dataset whose cardinality is known to be 0."""
        return int(self.x.cardinality()) == 0 if self.is_dataset else len(self) == 0

    def digest(self) -> str | None:
        """What the examples are, in a few characters: arrays' bytes, or a dataset's :attr:`identity`
        (None when its source gave none: a user's dataset is not read to digest it)."""
        if self.is_dataset:
            return self.identity
        x = self.x if isinstance(self.x, dict) else {"": self.x}
        return digest_arrays({**{f"x{k}": v for k, v in x.items()}, **{f"y{k}": v for k, v in self.y.items()}})

    def element_spec(self) -> tuple:
        """``(x, y, ...)`` specs of one example of a dataset part (after ``decode``)."""
        spec = (self.x.map(self.decode) if self.decode is not None else self.x).element_spec   # traced, not read
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(f"a dataset must yield (x, y) or (x, y, sample_weight) examples, not {spec}")
        return spec

    @property
    def size(self) -> int | None:
        """The number of examples; None for a dataset whose length tf.data does not know (a generator,
        a ``filter``)."""
        n = len(self) if not self.is_dataset else int(self.x.cardinality())
        return n if n >= 0 else None

    def steps(self, batch_size: int) -> int | None:
        """Batches in one pass of ``batch_size`` (the last one may be short); None when :attr:`size` is."""
        return None if self.size is None else -(-self.size // batch_size)

    def renamed(self, targets: dict[str, str]) -> Part:
        """Arrays with only the targets ``{key: data target}``, each under its key."""
        return Part(self.x, {key: self.y[source] for key, source in targets.items()})

    def epochs(self, batch_size: int, epochs: range, shuffle: bool, seed: int,
               targets: dict[str, str] | None = None):
        """Epochs ``epochs`` of batches one after another, as one ``tf.data`` dataset of
        ``steps(batch_size)`` batches an epoch, epoch e in the order of :func:`epoch_seed` ``(seed, e)``:
        a run resumed at epoch k reads what the uninterrupted run read from epoch k on.

        Arrays are gathered by :func:`epoch_order` (``targets`` is for datasets: map arrays' targets
        first); a dataset is shuffled as :meth:`batches` shuffles it, with each epoch's own seed.
        None for a dataset of unknown length (see :meth:`steps`).
        """
        import tensorflow as tf

        if self.is_dataset:
            if self.size is None:
                return None
            seeds = [epoch_seed(seed, e) if shuffle else None for e in epochs]
            return self.passes(seeds, targets, batch_size=batch_size).prefetch(tf.data.AUTOTUNE)
        n = len(self)

        def orders():   # one epoch's at a time: memory for n rows, not for n × epochs
            for e in epochs:
                yield (epoch_order(n, seed, e) if shuffle else np.arange(n)).astype("int64")

        rows = tf.data.Dataset.from_generator(orders, output_signature=tf.TensorSpec([n], tf.int64)).flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        data = tf.data.Dataset.from_tensors((self.x, self.y)).repeat()

        def gather(index, xy):
            return tf.nest.map_structure(lambda a: tf.gather(a, index), xy)

        options = tf.data.Options()   # several workers each keep every k-th batch (no files to shard), as Keras does
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return tf.data.Dataset.zip(rows, data).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE).with_options(options)

    def stream(self, batch_size: int, shuffle: bool, seed: int, start: int, count: int,
               targets: dict[str, str] | None = None):
        """``count`` full batches from example ``start`` on of the passes over a dataset part one after
        another (pass p in the order of :func:`epoch_seed` ``(seed, p)``; a batch may span two passes):
        one task's training batches, so a resumed run of tasks continues each task where it was.
        None for a dataset of unknown length."""
        import tensorflow as tf

        size = self.size
        if not size:
            return None
        first, skip = divmod(start, size)
        last = max(first + 1, -(-(start + count * batch_size) // size))
        seeds = [epoch_seed(seed, p) if shuffle else None for p in range(first, last)]
        return self.passes(seeds, targets, skip=skip).batch(batch_size).take(count).prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                targets: dict[str, str] | None = None, repeat: bool = False):
        """The dataset part as Keras reads it: shuffled with ``seed`` (a new order each pass, the
        same for the same seed), batched, prefetched; ``targets`` renames ``{key: data target}``.
        ``repeat``: the examples repeat without end (each pass shuffled anew), so every batch is full."""
        import tensorflow as tf

        ds = self.passes([seed if shuffle else None], targets, reshuffle=True)
        ds = ds.repeat() if repeat else ds
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def passes(self, seeds: list[int | None], targets: dict[str, str] | None = None, skip: int = 0,
               reshuffle: bool = False, batch_size: int | None = None):
        """A dataset part's examples, one pass for each of ``seeds`` one after another: shuffled with
        the seed (None: in order; ``reshuffle``: anew each time the pass is read) then decoded, the first
        ``skip`` of the first pass left out before they are decoded; ``targets`` renames ``{key: data
        target}``; ``batch_size``: each pass batched on its own.  A ``cache`` is made once, for every pass."""
        import tensorflow as tf

        def example(*records):
            x, y, *rest = self.decode(*records) if self.decode is not None else records
            if targets is None:
                return (x, y, *rest)
            weights = [weights_renamed(w, targets) for w in rest]
            return (x, {k: y[v] for k, v in targets.items()}, *[w for w in weights if not (isinstance(w, dict) and not w)])

        base, size, cached = self.x, int(self.x.cardinality()), self.cache is not None   # size -1: infinite
        known = size if size > 0 else SHUFFLE_BUFFER
        buffer = known if self.decode is not None and not cached else min(known, SHUFFLE_BUFFER)
        base = base.map(example, num_parallel_calls=tf.data.AUTOTUNE).cache(self.cache) if cached else base

        def one(seed: int | None, skip: int):
            ds = base if seed is None else base.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle)
            ds = ds.skip(skip) if skip else ds
            ds = ds if cached else ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
            return ds if batch_size is None else ds.batch(batch_size)

        return concatenated([one(seed, skip if k == 0 else 0) for k, seed in enumerate(seeds)])


def weights_renamed(sample_weight: Any, targets: dict[str, str]) -> Any:
    """A dataset's sample weights under the ``targets`` keys: a weight keyed like its ``y`` (by data
    target) goes to each key mapped to that target, one keyed by the key itself (a head) stays; one
    weight for every target stays as it is."""
    if not isinstance(sample_weight, dict):
        return sample_weight
    out = {k: sample_weight[k] for k in targets if k in sample_weight}
    out.update({k: sample_weight[v] for k, v in targets.items() if v in sample_weight})
    return out


def weight_key_problem(part: Part, split: str, keys: Iterable[str]) -> str | None:
    """What is wrong with a dataset's dict of sample weights: a key that is neither a data target of its
    ``y`` nor one of the target ``keys`` (heads) it is mapped to: it would weight nothing."""
    if not part.is_dataset:
        return None
    _, y, *weights = part.element_spec()
    if not (weights and isinstance(weights[0], dict) and isinstance(y, dict)):
        return None
    valid = list(dict.fromkeys([*map(str, y), *keys]))
    unknown = [k for k in weights[0] if k not in valid]
    if not unknown:
        return None
    return (f"the {split} data's sample weights have the key {unknown[0]!r}, which is no data target or head: "
            f"key them as its y is (`targets:` maps heads to them, weights and labels alike) or by head; "
            f"{did_you_mean(str(unknown[0]), valid)}valid: {', '.join(valid)}")


@dataclass
class Splits:
    """Train, validation and test parts plus what a model builder needs to know."""

    train: Part
    val: Part | None
    test: Part | None
    info: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> list[Part]:
        """The present splits' parts: train, val, test."""
        return [p for p in (self.train, self.val, self.test) if p is not None]

    def empty(self) -> list[str]:
        """The present splits with no examples (a source's params that drew none)."""
        return [s for s, p in (("train", self.train), ("val", self.val), ("test", self.test))
                if p is not None and p.is_empty]

    def digests(self) -> dict[str, str | None]:
        """Each present split's :meth:`Part.digest` (what ``--resume`` compares)."""
        return {s: p.digest() for s, p in (("train", self.train), ("val", self.val), ("test", self.test))
                if p is not None}


@contextlib.contextmanager
def read_errors_named(parts: Iterable[Part | None]) -> Iterator[None]:
    """Raise TensorFlow's error while a dataset is read (an image that does not decode, found only when
    an epoch reaches it) as a :class:`RunError` naming the records at fault, which each part's
    :attr:`Part.check` finds; an error no check explains passes as it is."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):   # a file damaged, or removed
        found = [problem for part in parts if part is not None and part.check is not None
                 for problem in part.check()]
        if not found:
            raise
        shown = "\n  ".join(found[:10]) + (f"\n  ... and {len(found) - 10} more" if len(found) > 10 else "")
        raise RunError(f"{len(found)} record(s) of the data cannot be read (found when an epoch read "
                       f"them):\n  {shown}") from None


DataSource = Callable[..., Splits]
#: Data source name -> ``(seed, **params) -> Splits``.
SOURCES: Registry[DataSource] = Registry("data source", providers=("multiloss.run.sources",))


def register_data(name: str):
    """Decorator: register a data source ``(seed, **params) -> Splits``.  A name taken by another
    source is refused (the conflict policy of :class:`~multiloss.spec.registry.Registry`)."""
    return SOURCES.register(name)


def data_names() -> list[str]:
    return SOURCES.names()


def get_source(name: str) -> DataSource:
    """A registered source, or a ``module:function`` (normalised to return Splits, its info checked)."""
    fn = SOURCES.get(name)
    if not is_import_string(name):
        return fn

    def user_source(seed: int, **params) -> Splits:
        fractions = {s: params.pop(f"{s}_fraction") for s in ("val", "test")    # a function that takes
                     if f"{s}_fraction" in params and not _takes(fn, f"{s}_fraction")}  # them draws its own
        splits = _normalise(fn(seed=seed, **params) if _takes(fn, "seed", via_kwargs=False) else fn(**params))
        return check_info(drawn(splits, seed, fractions))

    return user_source


def _takes(fn, name: str, via_kwargs: bool = True) -> bool:
    """Whether ``fn`` takes a keyword ``name``: a parameter of that name, or (``via_kwargs``) ``**kwargs``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or (via_kwargs and any(p.kind is p.VAR_KEYWORD for p in params.values()))


def drawn(splits: Splits, seed: int, fractions: dict[str, float]) -> Splits:
    """``splits`` with each of ``val``/``test`` it lacks drawn from its train arrays by ``fractions``
    (``{split: fraction}``, those given for a source that takes no such keyword), as the built-in sources
    draw theirs; a split it has is kept.  A dataset's examples cannot be drawn by position safely (its
    order may change from pass to pass), so a dataset is refused."""
    missing = [s for s in ("val", "test") if s in fractions and getattr(splits, s) is None and fractions[s] > 0]
    if not missing:
        return splits
    if splits.train.is_dataset:
        raise ValueError(f"{' and '.join(f'{s}_fraction' for s in missing)} cannot draw a split from a "
                         "tf.data.Dataset (its examples have no fixed positions: a dataset may reshuffle on "
                         "each pass, and drawn splits would then overlap); return "
                         f"{' and '.join(repr(s) for s in missing)} from the function (e.g. "
                         "image_dataset_from_directory(..., validation_split=, subset=)), or return arrays")
    rows = draw_missing(len(splits.train), {"val", "test"} - set(missing), seed, fractions.get("val", 0.0),
                        fractions.get("test", 0.0))
    return Splits(*(splits.train.take(rows[s]) if s in rows else getattr(splits, s) for s in ("train", "val", "test")),
                  splits.info)


def _normalise(result) -> Splits:
    if isinstance(result, Splits):
        return result
    if isinstance(result, dict) and "train" in result:
        def part(v):
            if v is None or isinstance(v, Part):
                return v
            if isinstance(v, (tuple, list)) and len(v) == 2:
                return Part(v[0], dict(v[1]))
            if not hasattr(v, "element_spec"):
                raise TypeError(f"a split must be (x, y) arrays or a tf.data.Dataset, not {type(v).__name__}")
            return Part(v)

        return Splits(part(result["train"]), part(result.get("val")), part(result.get("test")),
                      dict(result.get("info", {})))
    raise TypeError("a data source must return multiloss.run.data.Splits or "
                    "{'train': (x, y) | tf.data.Dataset, 'val': ..., 'test': ..., 'info': {...}}")


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _fits(shape: tuple, expected: tuple) -> bool:
    return len(shape) == len(expected) and all(a is None or b is None or a == b for a, b in zip(shape, expected))


def input_shapes(part: Part) -> dict[str, tuple] | tuple:
    """The shape of one example's input (a dict of them for named inputs), ``None`` for unknown dims."""
    x = part.element_spec()[0] if part.is_dataset else part.x
    shape = (lambda v: tuple(v.shape)) if part.is_dataset else (lambda v: tuple(np.shape(v)[1:]))
    return {k: shape(v) for k, v in x.items()} if isinstance(x, dict) else shape(x)


def check_info(splits: Splits) -> Splits:
    """The info contract of the module docstring: fill what the data shows; refuse batched datasets
    and a missing or contradicted ``input_shape``, ``num_classes`` or ``class_names``."""
    info, contract = splits.info, ("a source returns info {'input_shape': (height, width, channels), "
                                   "'num_classes': K, 'class_names': [...]} (see multiloss.run.data)")
    parts = {n: p for n, p in zip(("train", "val", "test"), (splits.train, splits.val, splits.test))
             if p is not None}
    shapes = {n: input_shapes(p) for n, p in parts.items()}
    train = shapes["train"]
    common = set(train.values()) if isinstance(train, dict) else {train}
    if "input_shape" not in info and len(common) == 1 and None not in next(iter(common)):
        info["input_shape"] = next(iter(common))
    if "input_shape" not in info and not isinstance(train, dict):
        batched = "; a batched dataset must be returned unbatched (ds.unbatch())" if train[:1] == (None,) else ""
        raise ValueError(f"info has no 'input_shape' and the train examples' input is shaped "
                         f"{_shape_text(train)}, not fully known; {contract}{batched}")
    try:
        given = info["input_shape"] = tuple(int(d) for d in info["input_shape"]) if "input_shape" in info else None
    except (TypeError, ValueError):
        raise ValueError(f"info['input_shape'] must be a tuple of ints, got {info['input_shape']!r}") from None
    for split, shape in shapes.items() if given is not None else ():
        for name, one in (shape.items() if isinstance(shape, dict) else [("input", shape)]):
            if parts[split].is_dataset and _fits(one, (None, *given)):
                raise ValueError(
                    f"the {split} dataset is already batched: its {name} is shaped {_shape_text(one)} where one "
                    f"example is {_shape_text(given)} (info['input_shape']); return it unbatched (ds.unbatch()): "
                    "multiloss batches it with train.batch_size and shuffles it with the run's seed")
            if not isinstance(shape, dict) and not _fits(one, given):
                raise ValueError(f"the {split} examples' input is shaped {_shape_text(one)}, but "
                                 f"info['input_shape'] is {_shape_text(given)}")
    names, k = info.get("class_names"), info.get("num_classes")
    if names is not None:
        if isinstance(names, str) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ValueError(f"info['class_names'] must be a list of distinct strings, got {names!r}; {contract}")
        info["class_names"], k = list(names), len(names) if k is None else k
        info["num_classes"] = k
    if k is not None and (type(k) is not int or k < 1 or (names is not None and k != len(names))):
        raise ValueError(f"info['num_classes'] must be a positive int equal to the number of class_names, got "
                         f"{k!r} for {len(names) if names is not None else 'no'} class_names; {contract}")
    return splits


def split_indices(n: int, seed: int, fractions: tuple[float, ...],
                  names: tuple[str, ...] = ("val_fraction", "test_fraction")) -> list[np.ndarray]:
    """Deterministic disjoint index sets of the given fractions (the rest is first).  Each fraction
    (named by ``names``) must be in [0, 1) and their sum below 1: otherwise the sets would overlap, and
    test examples would be trained on."""
    fractions_problem(fractions, names)
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(f * n)) for f in fractions]
    cuts = np.cumsum([n - sum(sizes), *sizes])
    return np.split(order, cuts[:-1])


def param_error(name: str, message: str) -> ValueError:
    return ValueError(f"data.params.{name}: {message}")


def fractions_problem(fractions: tuple[float, ...], names: tuple[str, ...]) -> None:
    """Raise the param error of the first fraction outside [0, 1), or of a sum of 1 or more."""
    for name, f in zip(names, fractions):
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 <= f < 1:
            raise param_error(name, f"must be a number in [0, 1), got {f!r}")
    if sum(fractions) >= 1:
        raise param_error(names[0], f"{' + '.join(names[:len(fractions)])} must be below 1, got "
                                    f"{' + '.join(map(str, fractions))}")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Each fraction in [0, 1) and their sum below 1 (:func:`split_indices`'s rule), checked up front."""
    fractions_problem((val_fraction, test_fraction), ("val_fraction", "test_fraction"))


def draw_missing(n: int, given: set[str], seed: int, val_fraction: float, test_fraction: float
                 ) -> dict[str, np.ndarray]:
    """Sorted row indices into the ``n`` training examples: ``train`` (the rest) and each of
    ``val``/``test`` that has no folder or file of its own (not in ``given``), by its fraction."""
    check_fractions(val_fraction, test_fraction)
    missing = [s for s in ("val", "test") if s not in given]
    fraction = {"val": val_fraction, "test": test_fraction}
    rest, *drawn = split_indices(n, seed, tuple(fraction[s] for s in missing), tuple(f"{s}_fraction" for s in missing))
    return {"train": np.sort(rest), **{s: np.sort(d) for s, d in zip(missing, drawn)}}


def _image_splits(images, labels, test: tuple | None, seed: int, val_fraction: float,
                  test_fraction: float, info: dict, extra_targets: Callable | None = None) -> Splits:
    def part(x, c):
        y = {"class": c.astype("int32"), "image": x}
        if extra_targets:
            y.update(extra_targets(c))
        return Part(x, y)

    if test is None:
        rest, val_idx, test_idx = split_indices(len(images), seed, (val_fraction, test_fraction))
        test_part = part(images[test_idx], labels[test_idx])
    else:
        rest, val_idx = split_indices(len(images), seed, (val_fraction,))
        test_part = part(*test)
    return Splits(part(images[rest], labels[rest]),
                  part(images[val_idx], labels[val_idx]) if len(val_idx) else None, test_part, info)


@register_data("digits")
def digits(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """scikit-learn's bundled 8×8 digits (1,797 images), scaled to [0, 1]: x is [N, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    info = {"input_shape": (8, 8, 1), "num_classes": 10, "class_names": [str(i) for i in range(10)]}
    return _image_splits(x, d.target, None, seed, val_fraction, test_fraction, info,
                         lambda c: {"parity": (c % 2).astype("int32")})


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def _fashion_file(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory}. Install it with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four IDX files "
        "from https://github.com/zalandoresearch/fashion-mnist and pass `path: <their folder>`."
    )


def load_fashion_mnist(path: str | os.PathLike | None = None):
    """``(x_train, y_train), (x_test, y_test)`` with images as float32 [N, 28, 28, 1] in [0, 1]."""
    directory = Path(path or FASHION_MNIST_DIR)

    def load(kind):
        x = read_idx(_fashion_file(directory, f"{kind}-images-idx3-ubyte"))
        y = read_idx(_fashion_file(directory, f"{kind}-labels-idx1-ubyte"))
        return (x.astype("float32") / 255.0)[..., None], y.astype("int32")

    return load("train"), load("t10k")


def _limit(x, y, n: int | None, seed: int):
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed + 7919).permutation(len(x))[:n])
    return x[idx], y[idx]


@register_data("fashion_mnist")
def fashion_mnist(seed: int = 0, path: str | None = None, val_fraction: float = 0.1,
                  train_limit: int | None = None, test_limit: int | None = None) -> Splits:
    """Fashion-MNIST from the Debian package's IDX files (or ``path``); official test set.

    ``train_limit``/``test_limit`` take a seeded subset (for quick runs).
    """
    (x, y), (xt, yt) = load_fashion_mnist(path)
    x, y = _limit(x, y, train_limit, seed)
    xt, yt = _limit(xt, yt, test_limit, seed + 1)
    info = {"input_shape": (28, 28, 1), "num_classes": 10, "class_names": FASHION_CLASSES,
            "num_groups": 4, "group_names": FASHION_GROUPS}
    return _image_splits(x, y, (xt, yt), seed, val_fraction, 0.0, info,
                         lambda c: {"group": FASHION_GROUP_OF_CLASS[c]})


def make_pairs(part: Part, seed: int, pairs_per_image: float = 1.0, same_fraction: float = 0.5) -> Part:
    """Pairs of images from one split: ``same_fraction`` of them from the same class."""
    for name, value, low in (("pairs_per_image", pairs_per_image, "above 0"), ("same_fraction", same_fraction, "in [0, 1]")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or (value <= 0 if name == "pairs_per_image" else not 0 <= value <= 1):
            raise param_error(name, f"must be a number {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    x, labels = part.x, part.y["class"]
    n = int(round(len(labels) * pairs_per_image))
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    a = rng.integers(0, len(labels), n)
    same = rng.random(n) < same_fraction
    b = rng.integers(0, len(labels), n)
    for c, members in by_class.items():  # same pairs: a partner from a's class
        rows = np.flatnonzero(same & (labels[a] == c))
        b[rows] = members[rng.integers(0, len(members), len(rows))]
    clash = ~same & (labels[b] == labels[a])
    while clash.any():  # different pairs: redraw partners of the same class
        b[clash] = rng.integers(0, len(labels), int(clash.sum()))
        clash = ~same & (labels[b] == labels[a])
    ca, cb = labels[a], labels[b]
    return Part({"image_a": x[a], "image_b": x[b]},
                {"class_a": ca, "class_b": cb, "same": (ca == cb).astype("int32")})


def _pairs(splits: Splits, seed: int, pairs_per_image: float, same_fraction: float) -> Splits:
    def pairs(part, offset):
        return None if part is None else make_pairs(part, seed + offset, pairs_per_image, same_fraction)

    info = dict(splits.info, pairs=True)
    return Splits(pairs(splits.train, 1), pairs(splits.val, 2), pairs(splits.test, 3), info)


@register_data("digits_pairs")
def digits_pairs(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 pairs_per_image: float = 2.0, same_fraction: float = 0.5) -> Splits:
    """Pairs of digits: inputs ``image_a``, ``image_b``; targets ``class_a``, ``class_b``, ``same``.

    Images are split first, so no image appears in two splits.
    """
    return _pairs(digits(seed, val_fraction, test_fraction), seed, pairs_per_image, same_fraction)


@register_data("fashion_mnist_pairs")
def fashion_mnist_pairs(seed: int = 0, path: str | None = None, val_fraction: float = 0.1,
                        train_limit: int | None = None, test_limit: int | None = None,
                        pairs_per_image: float = 1.0, same_fraction: float = 0.5) -> Splits:
    """Pairs of Fashion-MNIST images, as ``digits_pairs``."""
    base = fashion_mnist(seed, path, val_fraction, train_limit, test_limit)
    return _pairs(base, seed, pairs_per_image, same_fraction)


@register_data("npz")
def npz(seed: int = 0, path: str = "", inputs: list[str] | None = None,
        val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """Named arrays from a ``.npz``: ``inputs`` names the model inputs, every other array a target.

    Arrays named ``train/<name>``, ``val/<name>``, ``test/<name>`` give the split
    explicitly; otherwise it is drawn from the seed.
    """
    if not path:
        raise ValueError("npz source needs `path: <file.npz>`")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    inputs = list(inputs or [])

    def part(prefix: str, index=None) -> Part | None:
        sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)} if prefix else arrays
        if not sub:
            return None
        if index is not None:
            sub = {k: v[index] for k, v in sub.items()}
        missing = [i for i in inputs if i not in sub]
        if missing or not inputs:
            raise ValueError(f"npz {path}: `inputs` must name arrays in the file; missing {missing or inputs}; "
                             f"arrays: {sorted(sub)}")
        x = sub[inputs[0]] if len(inputs) == 1 else {i: sub[i] for i in inputs}
        return Part(x, {k: v for k, v in sub.items() if k not in inputs})

    if any(k.startswith("train/") for k in arrays):
        splits = Splits(part("train/"), part("val/"), part("test/"), {})
    else:
        n = len(next(iter(arrays.values())))
        rest, val_idx, test_idx = split_indices(n, seed, (val_fraction, test_fraction))
        splits = Splits(part("", rest), part("", val_idx) if len(val_idx) else None,
                        part("", test_idx) if len(test_idx) else None, {})
    x = splits.train.x
    if isinstance(x, np.ndarray):   # what the built-in model builders read
        splits.info["input_shape"] = tuple(int(d) for d in x.shape[1:])
    return splits


# --- Multi-Fashion (Lin et al., NeurIPS 2019) -------------------------------------------------


MULTI_SIZE = 36       # the canvas: a 28×28 item top-left, another shifted by 8 px to the bottom-right
MULTI_SHIFT = 8


def overlay_pairs(images: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Canvases [N, 36, 36, 1]: ``images[first]`` at the top-left, ``images[second]`` shifted by 8 px
    right and down, overlaid by the pixel-wise maximum."""
    n = len(first)
    out = np.zeros((n, MULTI_SIZE, MULTI_SIZE, 1), "float32")
    out[:, :28, :28] = images[first]
    s = MULTI_SHIFT
    out[:, s:s + 28, s:s + 28] = np.maximum(out[:, s:s + 28, s:s + 28], images[second])
    return out


@register_data("multi_fashion")
def multi_fashion(seed: int = 0, path: str | None = None, train_size: int = 60000, test_size: int = 10000,
                  val_fraction: float = 0.0) -> Splits:
    """Multi-Fashion (Lin, Zhen, Li, Zhang & Kwong, *Pareto multi-task learning*, NeurIPS 2019).

    Two Fashion-MNIST items on one 36×36 canvas — one at the top-left, one
    shifted 8 px to the bottom-right, overlaid by the pixel-wise maximum — and
    two 10-class tasks: ``left`` (the top-left item's class) and ``right``
    (the bottom-right item's).  Training canvases pair images of the official
    training set, test canvases images of the official test set; the pairs are
    drawn from the seed (``train_size``/``test_size`` canvases; the first
    ``min(size, N)`` use every image once at the top-left).  x is float32
    [N, 36, 36, 1] in [0, 1].
    """
    (x, y), (xt, yt) = load_fashion_mnist(path)
    r = np.random.default_rng(seed + 104729)

    def canvases(images, labels, size):
        first = np.concatenate([r.permutation(len(images)) for _ in range(-(-size // len(images)))])[:size]
        second = r.integers(0, len(images), size)
        return Part(overlay_pairs(images, first, second),
                    {"left": labels[first].astype("int32"), "right": labels[second].astype("int32")})

    train = canvases(x, y, train_size)
    val = None
    if val_fraction:
        rest, val_idx = split_indices(len(train), seed, (val_fraction,))
        train, val = train.take(np.sort(rest)), train.take(np.sort(val_idx))
    info = {"input_shape": (MULTI_SIZE, MULTI_SIZE, 1), "num_classes": 10, "class_names": FASHION_CLASSES,
            "tasks": ["left", "right"]}
    return Splits(train, val, canvases(xt, yt, test_size), info)
