"""What an incremental run holds of each split: the inputs as arrays, or records read on demand.

A split becomes ``(x, class ids)``:

* **arrays** (``digits``, ``npz``, a user source's ``(x, y)``): ``x`` as it is;
* **records** (``image_folder``, whose datasets are of file paths, decoded after shuffling): ``x``
  is a numpy *structured* array of the records, for an image folder ``(path, label)`` (the field of
  text is called ``path``), and the images are read from disk whenever the network sees them (a
  :class:`RecordReader` on the network).  The training split, the exemplar memory and its
  checkpoints hold file paths, not pixels: a folder of large images costs what its paths cost;
* **other datasets** (a user's ``tf.data`` source, ``tfrecord``): read once into arrays (they have
  no records to go back to; a large image set is better given as an ``image_folder``).

The class ids are read from the split's ``class`` target (the config's ``data.target``): for records through the source's own
``decode`` with only the target kept (TensorFlow prunes the image decoding: one pass over the
file names).  :func:`stage_batches` streams a training stage's batches: read, augmented and given
per-batch targets, in a seeded order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..run.data import Part
from ..run.sources import op_reason
from ..spec.errors import RunError
from ..spec.validation import did_you_mean

#: Examples read at a time when a dataset is read into arrays or its labels are counted.
CHUNK = 4096


def is_records(x) -> bool:
    """Whether ``x`` holds records (a structured array) rather than the inputs themselves."""
    return isinstance(x, np.ndarray) and x.dtype.names is not None


def class_ids(values, split: str, target: str = "class") -> np.ndarray:
    """A split's class target as int32 ids ``[N]``, or a ValueError saying what it is instead."""
    y = np.asarray(values)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"the {split} split's `{target}` target must be class ids (integers, one per example), "
                         f"not {y.dtype} values shaped {y.shape[1:] or '()'} per example (one-hot targets: "
                         "take their argmax)")
    if len(y) and y.min() < 0:
        raise ValueError(f"the {split} split's `{target}` target has the id {int(y.min())}; class ids are 0, 1, ...; "
                         "an example without a class cannot be learned class-incrementally: leave it out")
    return y.astype("int32")


def _read_dataset(ds, fields) -> list[np.ndarray]:
    chunks = list(ds.batch(CHUNK).as_numpy_iterator())
    if not chunks:
        return []
    return [np.concatenate([np.asarray(c[i] if isinstance(c, tuple) else c) for c in chunks]) for i in fields]


def _text(values: np.ndarray) -> np.ndarray:
    return np.char.decode(values.astype("S"), "utf-8") if values.dtype.kind in "OS" else values


def records_of(part: Part) -> np.ndarray:
    """A record part's records as a structured array (text fields as ``str``; the first one ``path``)."""
    spec = part.x.element_spec
    specs = spec if isinstance(spec, tuple) else (spec,)
    if any(len(s.shape) for s in specs):
        raise ValueError("a dataset of records must yield scalars (file paths, ids), not "
                         f"{[tuple(s.shape) for s in specs]}")
    columns = _read_dataset(part.x if isinstance(spec, tuple) else part.x.map(lambda r: (r,)), range(len(specs)))
    columns = [_text(c) for c in columns] or [np.zeros(0, s.dtype.as_numpy_dtype) for s in specs]
    names = [f"r{i}" for i in range(len(columns))]
    text = [i for i, c in enumerate(columns) if c.dtype.kind == "U"]
    if text:
        names[text[0]] = "path"
    if len(columns) == 2 and text == [0]:
        names[1] = "label"
    out = np.zeros(len(columns[0]), [(n, c.dtype) for n, c in zip(names, columns)])
    for n, c in zip(names, columns):
        out[n] = c
    return out


class RecordReader:
    """Records (the rows of :func:`records_of`) to the inputs they stand for, through the source's
    ``decode``; ``reader(rows)`` is a numpy batch of inputs.  A record that cannot be read (an image
    file damaged where the source's load-time check does not look, or since the run began) is a
    RunError naming it."""

    def __init__(self, decode: Callable, names: tuple[str, ...], field_specs: tuple, input_spec):
        import tensorflow as tf

        self.names, self.decode = tuple(names), decode
        self.input_shape = tuple(input_spec.shape)
        self.field_dtypes = tuple(s.dtype for s in field_specs)

        def one(*fields):
            return decode(*fields)[0]

        @tf.function(input_signature=[tuple(tf.TensorSpec([None], d) for d in self.field_dtypes)], reduce_retracing=True)
        def read(fields):
            return tf.map_fn(lambda r: one(*r), fields, fn_output_signature=tf.TensorSpec(input_spec.shape,
                                                                                            input_spec.dtype))

        self._read = read

    @classmethod
    def of(cls, part: Part, names: tuple[str, ...]) -> RecordReader:
        spec = part.x.element_spec
        return cls(part.decode, names, spec if isinstance(spec, tuple) else (spec,), part.element_spec()[0])

    def read(self, rows: np.ndarray):
        """The inputs of ``rows`` as a tensor (a TensorFlow error if one cannot be read)."""
        import tensorflow as tf

        return self._read(tuple(tf.constant(rows[n], dtype=d) for n, d in zip(self.names, self.field_dtypes)))

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        try:
            return np.asarray(self.read(rows))
        except tf.errors.InvalidArgumentError as exc:
            raise self.unreadable(rows, exc) from None

    def unreadable(self, rows: np.ndarray, exc: Exception) -> RunError:
        """The error of a batch that could not be read, naming its first record that cannot be read alone
        (by its ``path``); only on that failure is each record read again, one at a time."""
        import tensorflow as tf

        for i in range(len(rows)):
            try:
                self.read(rows[i: i + 1])
            except tf.errors.InvalidArgumentError as one:
                row = rows[i]
                what = row["path"] if "path" in self.names else f"the record {tuple(row.tolist())}"
                return RunError(f"{what} cannot be read: {op_reason(one)}; remove or replace it")
        return RunError(f"a batch of {len(rows)} records cannot be read: {op_reason(exc)}")


class MissingTarget(ValueError):
    """A split without the target that holds the class ids."""

    def __init__(self, split: str, target: str, targets: list[str] | str, fix: str = "") -> None:
        hint = did_you_mean(target, targets) if isinstance(targets, list) else ""
        super().__init__(f"the {split} split has no `{target}` target (class ids); {hint}its targets: {targets}; "
                         f"set `data.target` to the one that holds the class ids{fix}")


def target_names(part: Part) -> list[str] | None:
    """The names of a split's targets; None for a dataset whose y is one unnamed tensor."""
    if not part.is_dataset:
        return list(part.y)
    y_spec = part.element_spec()[1]
    return list(y_spec) if isinstance(y_spec, dict) else None


def split_data(part: Part, split: str, target: str = "class") -> tuple[np.ndarray, np.ndarray, RecordReader | None]:
    """``(x, class ids, reader)`` of one split (see the module docstring); ``reader`` for records only.

    A ValueError says what the split lacks (the class ids' ``target``, a single input)."""
    if not part.is_dataset:
        if isinstance(part.x, dict):
            raise ValueError(f"the {split} split has several inputs ({', '.join(part.x)}); an incremental run's "
                             "network takes one")
        if target not in part.y:
            raise MissingTarget(split, target, sorted(target_names(part)))
        return np.asarray(part.x), class_ids(part.y[target], split, target), None
    x_spec, y_spec, *weights = part.element_spec()
    if weights:
        raise ValueError(f"the {split} dataset yields sample weights; an incremental run weighs every example "
                         "alike: yield (x, y) examples")
    if isinstance(x_spec, dict):
        raise ValueError(f"the {split} split has several inputs ({', '.join(x_spec)}); an incremental run's "
                         "network takes one")
    if not isinstance(y_spec, dict) or target not in y_spec:
        targets = sorted(target_names(part) or []) if isinstance(y_spec, dict) else "one unnamed tensor"
        raise MissingTarget(split, target, targets, f", or yield (x, {{'{target}': id}}) examples")
    if part.decode is not None:
        records = records_of(part)
        labels = _read_dataset(part.x.map(lambda *r: part.decode(*r)[1][target]), [0])
        return records, class_ids(labels[0] if labels else np.zeros(0, "int32"), split, target), RecordReader.of(
            part, records.dtype.names)
    x, labels = _read_dataset(part.x.map(lambda x, y: (x, y[target])), [0, 1]) or (None, None)
    if x is None:
        raise ValueError(f"the {split} dataset is empty")
    return x, class_ids(labels, split, target), None


def stage_batches(x: np.ndarray, y: dict[str, np.ndarray], batch_size: int, seed: int,
                  read: Callable | None, augment: Callable | None,
                  live: Callable[[np.ndarray, np.ndarray], dict] | None):
    """A training stage's batches as a ``tf.data`` dataset, made in Python one batch at a time, in order.

    Each epoch: a new order of the rows (``np.random.default_rng(seed)``, the same for the same seed);
    each batch: its rows of ``x`` (records read by ``read``), augmented by ``augment``, its rows of
    every target in ``y``, and the targets ``live(x_batch, rows)`` computes from the batch as augmented.
    """
    import tensorflow as tf

    n = len(x)
    rng = np.random.default_rng(seed)

    def batch(rows: np.ndarray):
        xb = read(x[rows]) if read is not None and is_records(x) else x[rows]
        if augment is not None:
            xb = np.asarray(augment(xb))
        yb = {k: v[rows] for k, v in y.items()}
        if live is not None:
            yb.update(live(xb, rows))
        return xb, yb

    def epoch():
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            yield batch(order[i: i + batch_size])

    def spec(a):
        a = np.asarray(a)
        return tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))

    probe_x = read(x[:1]) if read is not None and is_records(x) else x[:1]
    probe_y = {k: v[:1] for k, v in y.items()}
    if live is not None:
        probe_y.update(live(probe_x, np.arange(1)))
    signature = (spec(probe_x), {k: spec(v) for k, v in probe_y.items()})
    ds = tf.data.Dataset.from_generator(epoch, output_signature=signature)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))


__all__ = ["is_records", "records_of", "RecordReader", "split_data", "stage_batches", "class_ids", "MissingTarget"]
