"""The file sources: ``image_folder``, ``csv``, ``parquet`` and ``tfrecord``.

Registered like the sources of :mod:`multiloss.run.data` (whose registry imports this module the
first time it is read).  Each splits the same way: a split with its own folder or file comes from
it; a split without one is drawn from the training examples by its fraction (``val_fraction``,
``test_fraction``), disjoint and the same for the same seed.  Each gives ``info`` with
``input_shape`` and, where it knows them, ``num_classes`` and ``class_names``.  A problem names
its parameter (``data.params.image_size``) or its file, and what would be valid.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..spec.validation import did_you_mean
from .data import Part, Splits, digest_arrays, draw_missing, param_error, register_data

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")
#: The last bytes of a whole PNG (its IEND chunk), JPEG (EOI) and GIF (trailer), by their first bytes.
IMAGE_ENDS = {b"\x89PNG": b"IEND\xaeB`\x82", b"\xff\xd8\xff": b"\xff\xd9", b"GIF8": b";"}
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
#: Folder names of explicit splits, in the order they are looked for.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
FEATURE_DTYPES = ("float32", "int64", "string")


def decode_image(raw, size: tuple[int, int], channels: int):
    """Encoded image bytes to float32 ``[height, width, channels]`` in [0, 1], resized (bilinear)."""
    import tensorflow as tf

    image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
    return tf.ensure_shape(tf.image.resize(image, size) / 255.0, (*size, channels))


# --- image_folder ---------------------------------------------------------------------------


def image_size_param(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    size = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise param_error("image_size", f"must be [height, width] of positive ints (or one int for a square), "
                                        f"got {value!r}")
    return int(size[0]), int(size[1])


def op_reason(exc: Exception) -> str:
    """The gist of a TensorFlow op error (``Invalid PNG data, size 60``): its last line, without the
    function, node and op names around it."""
    text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[\[.*?\]\]|\s*\[Op:[^\]]*\]", "", getattr(exc, "message", "") or str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else str(exc)


def looks_whole(head: bytes, tail: bytes, size: int) -> bool:
    """Whether an image file ends as its format ends (a BMP: is as long as its header says)."""
    if head.startswith(b"BM"):
        return size >= int.from_bytes(head[2:6], "little")
    return any(head.startswith(magic) and tail.endswith(end) for magic, end in IMAGE_ENDS.items())


def check_decodes(f: Path) -> None:
    """Refuse ``f`` if TensorFlow cannot decode it (a file cut short: a download or copy interrupted)."""
    import tensorflow as tf

    try:
        tf.io.decode_image(f.read_bytes(), expand_animations=False)
    except tf.errors.InvalidArgumentError as exc:
        raise ValueError(f"{f} is cut short or damaged: {op_reason(exc)}; remove or replace it") from None


def damaged_images(files: Iterable[str]) -> list[str]:
    """What is wrong with each of ``files`` that TensorFlow cannot decode (every file is read)."""
    problems = []
    for f in files:
        try:
            check_decodes(Path(f))
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
    return problems


def check_image(f: Path) -> None:
    """Refuse a file that is no image by its first bytes, or one cut short.  Cheap: only its first
    and last bytes are read; a file whose end is not its format's end (trailing bytes, or cut short)
    is decoded once, and refused only if that fails."""
    with open(f, "rb") as handle:
        head = handle.read(6)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - len(IMAGE_ENDS[b"\x89PNG"]), 0))
        tail = handle.read()
    if not head.startswith(IMAGE_MAGIC):
        raise ValueError(f"{f} is not a PNG, JPEG, GIF or BMP image (it starts with {head[:4]!r}); "
                         "remove or replace it")
    if not looks_whole(head, tail, size):
        check_decodes(f)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (any depth), sorted; each one checked (:func:`check_image`).  Hidden
    files and folders (``.ipynb_checkpoints/``, ``._x.png``) are left out at every depth, as hidden class
    folders are: Jupyter's checkpoint copies are not images of the class they sit in."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for f in files:
        check_image(f)
    return files


def subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def split_folders(root: Path) -> dict[str, Path]:
    """``{split: folder}`` for a tree with ``train/`` (and ``val/``, ``test/``); ``{}`` for class folders."""
    names = subfolders(root)
    known = {n: s for s, ns in SPLIT_FOLDERS.items() for n in ns}
    if "train" not in names:
        return {}
    others = [n for n in names if n not in known]
    if others:
        raise param_error("path", f"{root} has a train/ folder and other folders ({', '.join(others)}); put "
                                  "every class folder under train/ (and val/, test/), or have no train/ folder")
    found: dict[str, Path] = {}
    for name in names:
        if known[name] in found:
            raise param_error("path", f"{root} has both {found[known[name]].name}/ and {name}/; keep one")
        found[known[name]] = root / name
    return found


def class_files(folder: Path, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """The image paths under ``folder/<class>/`` and their class ids (an index into ``classes``); a
    class without a folder, or with an empty one, has none."""
    unknown = [c for c in subfolders(folder) if c not in classes]
    if unknown:
        raise param_error("path", f"{folder} has class folders the training data lacks: {', '.join(unknown)}; "
                                  f"classes (from the training folders): {', '.join(classes)}")
    paths, labels = [], []
    for i, name in enumerate(classes):
        if (folder / name).is_dir():
            found = image_files(folder / name)
            paths += [str(p) for p in found]
            labels += [i] * len(found)
    return paths, np.asarray(labels, "int32")


def check_classes_have_images(folder: Path, classes: list[str], labels: np.ndarray) -> None:
    """Refuse a class folder of ``folder`` with no image: a class that could never be learned."""
    empty = [f"{folder / c}" for i, c in enumerate(classes) if not (labels == i).any()]
    if empty:
        raise param_error("path", f"class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
                                  f"{'have' if len(empty) > 1 else 'has'} no image files (accepted extensions: "
                                  f"{', '.join(IMAGE_EXTENSIONS)}, at any depth); add images or remove the folder")


def check_classes_trained(folder: Path, classes: list[str], records: dict[str, tuple[list[str], np.ndarray]],
                          seed: int, fractions: dict[str, float]) -> None:
    """Refuse a class whose every image the drawn ``val``/``test`` took: the model could not learn it."""
    train = records["train"][1]
    for i, name in enumerate(classes):
        if (train == i).any():
            continue
        drawn = {s: int((records[s][1] == i).sum()) for s in ("val", "test") if s in records}
        n = sum(drawn.values())
        where = " and ".join(f"{s} ({k})" if n > 1 else s for s, k in drawn.items() if k)
        by = ", ".join(f"{s}_fraction {fractions[s]}" for s in drawn)
        raise param_error("path", f"class {name!r} ({folder / name}) has {n} image{'s' if n > 1 else ''}, drawn into "
                                  f"{where} by {by}, seed {seed}: a class needs at least one training image (the "
                                  "splits are drawn over all images, not per class); add images of it, lower "
                                  f"{' or '.join(f'{s}_fraction' for s in drawn)}, or give the splits their own "
                                  "folders (path/train/<class>/, path/val/<class>/, path/test/<class>/)")


def warn_missing_classes(folder: Path, classes: list[str], labels: np.ndarray, split: str) -> None:
    """Warn of the classes of ``train/`` a ``val/`` or ``test/`` folder has no image of."""
    missing = [c for i, c in enumerate(classes) if not (labels == i).any()]
    if missing:
        warnings.warn(f"data.params.path: {folder} has no images of the class{'es' if len(missing) > 1 else ''} "
                      f"{', '.join(map(repr, missing))} of train/: their {split} accuracy is not measured, and "
                      f"{split} figures over all classes cover the others only; add images in {folder}/<class>/",
                      UserWarning, stacklevel=3)


def split_records(train: tuple[list[str], np.ndarray], train_folder: Path, folders: dict[str, Path],
                  classes: list[str], seed: int, val_fraction: float, test_fraction: float
                  ) -> dict[str, tuple[list[str], np.ndarray]]:
    """Each split's image paths and class ids: the training folder's images (``train``, of
    ``train_folder``) less the ``val``/``test`` drawn from them, and the images of each split folder.
    A class left without a training image is refused; a class a split folder lacks is warned of."""
    paths, labels = train
    rows = draw_missing(len(paths), set(folders), seed, val_fraction, test_fraction)
    records = {s: ([paths[i] for i in idx], labels[idx]) for s, idx in rows.items()}
    check_classes_trained(train_folder, classes, records, seed, {"val": val_fraction, "test": test_fraction})
    for split, folder in folders.items():
        if split != "train":
            records[split] = class_files(folder, classes)
            warn_missing_classes(folder, classes, records[split][1], split)
    return records


@register_data("image_folder")
def image_folder(seed: int = 0, path: str = "", image_size: int | list[int] | None = None,
                 color_mode: str = "rgb", cache: bool | str = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.2) -> Splits:
    """Images in class folders, ``path/<class>/<image>`` or ``path/{train,val,test}/<class>/<image>``.

    Class names are the folder names (sorted; their ids in that order).  The images stream from disk:
    each split is a dataset of file paths, read and decoded after shuffling, as float32 in [0, 1],
    resized to ``image_size`` ([height, width]; default: the first training image's size).
    ``color_mode``: grayscale, rgb or rgba.  ``cache``: true keeps the decoded images in memory after
    the first epoch, a path prefix keeps them in files there.  Targets: ``class``, ``image``.

    Refused when it loads: a file that is no image or is cut short (:func:`check_image`), a class
    folder without images, a class whose every image the drawn ``val``/``test`` took.  A class of
    ``train/`` that a ``val/`` or ``test/`` folder lacks is a warning.  A file damaged inside (its first
    and last bytes whole) is found when an epoch reads it: the run stops with an error naming every
    such file (:attr:`Part.check`).
    """
    import tensorflow as tf

    root = Path(path)
    if not path or not root.is_dir():
        raise param_error("path", f"{path!r} is not a folder; give the folder holding the class folders "
                                  "(path/<class>/<image>.png, or path/train/<class>/<image>.png)")
    if color_mode not in COLOR_MODES:
        raise param_error("color_mode", f"unknown color mode {color_mode!r}; valid: {', '.join(COLOR_MODES)}")
    if not isinstance(cache, (bool, str)):
        raise param_error("cache", f"must be true, false or a path prefix for cache files, got {cache!r}")
    size = image_size_param(image_size)
    folders = split_folders(root)
    train_folder = folders.get("train", root)
    classes = subfolders(train_folder)
    if not classes:
        raise param_error("path", f"{train_folder} has no class folders; expected {train_folder}/<class>/<image>")
    paths, labels = class_files(train_folder, classes)
    check_classes_have_images(train_folder, classes, labels)
    records = split_records((paths, labels), train_folder, folders, classes, seed, val_fraction, test_fraction)
    channels = COLOR_MODES[color_mode]
    if size is None:
        shape = tf.io.decode_image(tf.io.read_file(paths[0]), channels=channels, expand_animations=False).shape
        size = (int(shape[0]), int(shape[1]))

    def decode(file, label):
        image = decode_image(tf.io.read_file(file), size, channels)
        return image, {"class": label, "image": image}

    def part(split: str) -> Part | None:
        files, ids = records[split]
        if not files:
            return None
        where = None if cache is False else "" if cache is True else f"{cache}-{split}"
        return Part(tf.data.Dataset.from_tensor_slices((files, ids)), decode=decode, cache=where,
                    identity=digest_arrays({"files": np.asarray(files, str), "ids": np.asarray(ids)}),
                    check=lambda: damaged_images(files))

    info = {"input_shape": (*size, channels), "num_classes": len(classes), "class_names": classes}
    return Splits(part("train"), part("val"), part("test"), info)


# --- csv and parquet ------------------------------------------------------------------------


def csv_column(cells: list[str]) -> np.ndarray:
    """A CSV column: int64 when every cell is an integer, float64 when numbers (NaN for empty cells),
    else text (an object array, None for empty cells)."""
    try:
        values = np.array([float(c) if c else np.nan for c in cells], "float64")
    except ValueError:
        return np.array([c or None for c in cells], dtype=object)
    if cells and all(c.lstrip("+-").isdigit() for c in cells):
        return values.astype("int64")
    return values


def _first_gap(column: np.ndarray) -> tuple[int, str] | None:
    """``(row, what it holds)`` of a column's first cell that is no finite number, or None."""
    for i, cell in enumerate(column):
        if cell is None:
            return i, "nothing (an empty cell)"
        try:
            value = float(cell)
        except (TypeError, ValueError):
            return i, f"the text {cell!r}"
        if not np.isfinite(value):
            return i, "nothing (an empty cell) or NaN" if np.isnan(value) else str(value)
    return None


def read_csv(path: Path, delimiter: str = ",") -> dict[str, np.ndarray]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save the table as "
                         "UTF-8 CSV") from None
    if not rows:
        raise ValueError(f"{path} is empty; a CSV table starts with a header row of column names")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if len(set(header)) < len(header):
        raise ValueError(f"{path}: the header names a column twice: {header}")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {line} has {len(row)} fields, the header {len(header)}")
    return {name: csv_column([row[i].strip() for row in body]) for i, name in enumerate(header)}


def read_parquet(path: Path) -> dict[str, np.ndarray]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("the parquet source needs pyarrow, which is not installed: "
                         "pip install 'multiloss[parquet]' (or pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from None
    out = {}
    for name, column in zip(table.column_names, table.columns):
        kind, values = column.type, column.to_pylist()
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            out[name] = np.array([np.nan if v is None else v for v in values],
                                 "float64" if None in values else "int64")
        elif pa.types.is_floating(kind):
            out[name] = np.array([np.nan if v is None else v for v in values], "float64")
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
            out[name] = np.array(values, dtype=object)
        else:
            raise ValueError(f"{path}: column {name!r} has type {kind}; a table source reads numbers "
                             "(inputs, targets) and text (class targets)")
    return out


def check_split_mapping(path: dict) -> None:
    if "train" not in path or set(path) - set(SPLITS):
        raise param_error("path", f"a mapping of split files needs train (and may have val, test); got "
                                  f"{sorted(path)}")


def table_paths(path: Any) -> dict[str, Path]:
    """``{"": file}`` for one file, ``{split: file}`` for ``{train: ..., val: ..., test: ...}``."""
    if isinstance(path, dict):
        check_split_mapping(path)
        return {split: Path(p) for split, p in path.items()}
    if not path:
        raise param_error("path", "give the table file, or {train: file, val: file, test: file}")
    return {"": Path(path)}


def encode_targets(tables: dict[str, dict[str, np.ndarray]], targets: list[str]
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[str]]]:
    """Each split's targets as arrays for Keras, and the class names of the class targets: a text
    column becomes ids of its sorted values (-1 where empty), an integer column stays ids 0..max."""
    ys: dict[str, dict[str, np.ndarray]] = {s: {} for s in tables}
    classes: dict[str, list[str]] = {}
    for name in targets:
        columns = {s: t[name] for s, t in tables.items()}
        if any(c.dtype == object for c in columns.values()):
            names = sorted({str(v) for c in columns.values() for v in c if v is not None})
            ids = {n: i for i, n in enumerate(names)}
            for s, c in columns.items():
                ys[s][name] = np.array([-1 if v is None else ids[str(v)] for v in c], "int32")
            classes[name] = names
        elif all(c.dtype.kind == "i" for c in columns.values()):
            for s, c in columns.items():
                ys[s][name] = c.astype("int32")
            top = max(int(c.max(initial=-1)) for c in columns.values())
            if all(int(c.min(initial=0)) >= 0 for c in columns.values()) and top >= 0:
                classes[name] = [str(i) for i in range(top + 1)]
        else:
            for s, c in columns.items():
                ys[s][name] = c.astype("float32")
    return ys, classes


def table_splits(tables: dict[str, dict[str, np.ndarray]], files: dict[str, Path], seed: int,
                 inputs: list[str] | None, targets: list[str] | None, val_fraction: float,
                 test_fraction: float) -> Splits:
    """Splits of tables read from ``files`` (keyed as :func:`table_paths`): the ``inputs`` columns
    stacked as x ``[N, len(inputs)]`` float32, each ``targets`` column a named target."""
    if not inputs or isinstance(inputs, str) or not all(isinstance(i, str) for i in inputs):
        raise param_error("inputs", f"must list the input columns, e.g. [x1, x2]; got {inputs!r}; columns of "
                                    f"{next(iter(files.values()))}: {list(next(iter(tables.values())))}")
    first = next(iter(tables.values()))
    targets = list(targets) if targets is not None else [c for c in first if c not in inputs]
    for key, names in (("inputs", inputs), ("targets", targets)):
        for split, table in tables.items():
            missing = [n for n in names if n not in table]
            if missing:
                raise param_error(key, f"{files[split]} has no column {missing[0]!r}; columns: {list(table)}")
    for split, table in tables.items():
        for name in inputs:
            gap = _first_gap(table[name])
            if gap is not None:
                raise ValueError(f"{files[split]}: input column {name!r} must hold a finite number in every "
                                 f"row; line {gap[0] + 2} holds {gap[1]} (an input is a numeric column without "
                                 "gaps)")
    ys, classes = encode_targets(tables, targets)
    parts = {s: Part(np.stack([t[i].astype("float32") for i in inputs], axis=1), ys[s]) for s, t in tables.items()}
    if "" in parts:
        whole, parts = parts.pop(""), {}
        given: set[str] = set()
    else:
        whole, given = parts["train"], set(parts)
    if not len(whole):
        raise ValueError(f"{files.get('', files.get('train'))} has no rows under its header")
    rows = draw_missing(len(whole), given, seed, val_fraction, test_fraction)
    parts.update({s: whole.take(idx) for s, idx in rows.items()})
    info: dict[str, Any] = {"input_shape": (len(inputs),), "classes": classes}
    for name in targets:
        if name in classes:   # the first class target: what the classification heads read
            info.update(num_classes=len(classes[name]), class_names=classes[name])
            break
    return Splits(*(parts.get(s) if parts.get(s) is not None and len(parts[s]) else None for s in SPLITS), info)


def read_tables(path: Any, read: Callable[[Path], dict[str, np.ndarray]]
                ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Path]]:
    files = table_paths(path)
    for f in files.values():
        if not f.is_file():
            raise param_error("path", f"{f} is not a file")
    return {split: read(f) for split, f in files.items()}, files


@register_data("csv")
def csv(seed: int = 0, path: str | dict[str, str] = "", inputs: list[str] | None = None,
        targets: list[str] | None = None, delimiter: str = ",", val_fraction: float = 0.1,
        test_fraction: float = 0.2) -> Splits:
    """A CSV table with a header row: ``inputs`` columns form x, each ``targets`` column (default: every
    other column) a target of that name.  ``path`` is one file, or ``{train: ..., val: ..., test: ...}``.

    Text target columns become class ids of their sorted values (``info['classes']``; -1 for an
    empty cell), integer ones stay ids, other numbers are float32 (NaN for an empty cell).
    """
    tables, files = read_tables(path, lambda f: read_csv(f, delimiter))
    return table_splits(tables, files, seed, inputs, targets, val_fraction, test_fraction)


@register_data("parquet")
def parquet(seed: int = 0, path: str | dict[str, str] = "", inputs: list[str] | None = None,
            targets: list[str] | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """A Parquet table, read as ``csv`` reads a CSV table (needs pyarrow: ``multiloss[parquet]``)."""
    tables, files = read_tables(path, read_parquet)
    return table_splits(tables, files, seed, inputs, targets, val_fraction, test_fraction)


# --- tfrecord -------------------------------------------------------------------------------


def converter(dtype: str, image_shape: tuple[int, int, int] | None) -> Callable:
    """A parsed feature to what Keras reads: image bytes to pixels, int64 to int32, floats as they are."""
    import tensorflow as tf

    def convert(value):
        if image_shape is not None:
            return decode_image(value, image_shape[:2], image_shape[2])
        return tf.cast(value, tf.int32) if dtype == "int64" else value

    return convert


def feature_parser(features: Any) -> tuple[dict, dict[str, Callable], dict[str, tuple]]:
    """From ``data.params.features``: the ``tf.io.parse_single_example`` spec, each feature's
    conversion (int64 to int32, image bytes to float32 pixels) and each feature's shape."""
    import tensorflow as tf

    if not isinstance(features, dict) or not features:
        raise param_error("features", "must map each feature to its dtype or {dtype, shape, default, decode}, "
                                      "e.g. {image: {dtype: string, decode: image, shape: [32, 32, 3]}, "
                                      "label: int64}")
    spec, convert, shapes = {}, {}, {}
    for name, given in features.items():
        where = f"features.{name}"
        entry = {"dtype": given} if isinstance(given, str) else dict(given or {})
        unknown = sorted(set(entry) - {"dtype", "shape", "default", "decode"})
        if unknown:
            raise param_error(where, f"unknown keys {unknown}; valid: dtype, shape, default, decode")
        dtype, shape, decode = entry.get("dtype"), entry.get("shape", []), entry.get("decode")
        if dtype not in FEATURE_DTYPES:
            raise param_error(f"{where}.dtype", f"{dtype!r} is not a TFRecord dtype; valid: "
                                                f"{', '.join(FEATURE_DTYPES)}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise param_error(f"{where}.shape", f"must be a list of positive ints ([] for a scalar), got {shape!r}")
        if decode is not None and (decode != "image" or dtype != "string" or len(shape) != 3
                                   or shape[2] not in COLOR_MODES.values()):
            raise param_error(f"{where}.decode", "only `decode: image` is known, for a string feature of "
                                                 "encoded PNG/JPEG/GIF/BMP bytes with shape [height, width, "
                                                 f"channels (1, 3 or 4)]; got decode {decode!r}, dtype {dtype}, "
                                                 f"shape {shape}")
        if dtype == "string" and decode is None:
            raise param_error(where, "a string feature must be decoded (decode: image, shape: [h, w, c]); "
                                     "leave other string features out of `features`")
        kind = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}[dtype]
        stored = [] if decode else list(shape)
        spec[name] = tf.io.FixedLenFeature(stored, kind, default_value=entry.get("default"))
        convert[name] = converter(dtype, tuple(shape) if decode else None)
        shapes[name] = tuple(shape)
    return spec, convert, shapes


def record_mismatch(serialized: bytes, features: dict, shapes: dict[str, tuple]) -> str | None:
    """What keeps one ``tf.train.Example`` from the parse spec ``features`` (:func:`feature_parser`), said
    in the config's terms (a feature missing, of another kind, or with another number of values than its
    ``shape`` takes); None if it fits or the record is no Example."""
    import tensorflow as tf

    try:
        stored = tf.train.Example.FromString(serialized).features.feature
    except Exception:  # noqa: BLE001 - not an Example: TensorFlow's own reason stands
        return None
    kinds = {tf.int64: "int64_list", tf.float32: "float_list", tf.string: "bytes_list"}
    dtypes = {"int64_list": "int64", "float_list": "float32", "bytes_list": "string"}
    for name, spec in features.items():
        if name not in stored:
            if spec.default_value is None:
                return f"the record has no feature {name!r}; {did_you_mean(name, list(stored))}its features: " \
                       f"{sorted(stored)}"
            continue
        kind = stored[name].WhichOneof("kind")
        if kind != kinds[spec.dtype]:
            return f"feature {name!r} holds {dtypes.get(kind, kind)} values, not {spec.dtype.name} ones; give " \
                   f"its dtype: {dtypes.get(kind, kind)}"
        count, want = len(getattr(stored[name], kind).value), int(np.prod(spec.shape, dtype=np.int64))
        if count != want:
            return f"feature {name!r} holds {count} values; its shape {list(shapes[name])} takes {want}"
    return None


def rows_of(ds, keep: np.ndarray):
    """The elements of ``ds`` at the positions where ``keep`` is true, streamed, with their count known."""
    import tensorflow as tf

    mask = tf.constant(keep)

    def kept(i, _):
        return mask[i]

    def record(_, r):
        return r

    chosen = ds.enumerate().filter(kept).map(record)
    return chosen.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))


def record_files(path: Any, where: str) -> list[str]:
    patterns = [path] if isinstance(path, str) else list(path or [])
    files = sorted({f for p in patterns for f in glob.glob(str(p))})
    if not files:
        raise param_error(where, f"no TFRecord file matches {path!r}; give a file, a glob (data/*.tfrecord) or a "
                                 "list of them, or {train: ..., val: ..., test: ...}")
    return files


@register_data("tfrecord")
def tfrecord(seed: int = 0, path: Any = "", features: dict | None = None, inputs: list[str] | None = None,
             targets: list[str] | None = None, class_names: list[str] | None = None,
             compression: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """``tf.train.Example`` records, parsed by the feature spec ``features`` ({name: dtype} or {name:
    {dtype: float32|int64|string, shape, default, decode: image}}).  ``inputs`` names x (one
    feature, or several as a dict), ``targets`` the targets (default: every other feature);
    ``class_names`` gives the class target's names.  ``path``: a file, a glob or a list, or
    ``{train: ..., val: ..., test: ...}``; without explicit splits the records are counted once.
    """
    import tensorflow as tf

    if compression not in (None, "GZIP", "ZLIB"):
        raise param_error("compression", f"must be GZIP, ZLIB or left out, got {compression!r}")
    spec, convert, shapes = feature_parser(features)
    if not inputs or isinstance(inputs, str) or any(i not in spec for i in inputs):
        raise param_error("inputs", f"must list features of data.params.features ({', '.join(spec)}); "
                                    f"got {inputs!r}")
    targets = list(targets) if targets is not None else [f for f in spec if f not in inputs]
    unknown = [t for t in targets if t not in spec]
    if unknown:
        raise param_error("targets", f"{unknown[0]!r} is not in data.params.features ({', '.join(spec)})")
    if isinstance(path, dict):
        check_split_mapping(path)
    if class_names is not None and (isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names)):
        raise param_error("class_names", f"must be a list of names, in class id order; got {class_names!r}")
    groups = ({s: record_files(p, f"path.{s}") for s, p in path.items()} if isinstance(path, dict)
              else {"": record_files(path, "path")})

    def example(serialized):
        values = tf.io.parse_single_example(serialized, spec)
        values = {k: convert[k](v) for k, v in values.items()}
        x = values[inputs[0]] if len(inputs) == 1 else {i: values[i] for i in inputs}
        return x, {t: values[t] for t in targets}

    raw = {s: tf.data.TFRecordDataset(files, compression_type=compression) for s, files in groups.items()}
    for split, ds in raw.items():     # the first record tells at once whether the spec fits
        try:
            next(iter(ds.take(1).map(example)))
        except StopIteration:
            raise ValueError(f"{groups[split][0]}: no records") from None
        except tf.errors.OpError as exc:
            first = next(iter(ds.take(1))).numpy()
            why = record_mismatch(first, spec, shapes) or exc.message.splitlines()[0]
            raise ValueError(f"{groups[split][0]}: the first record does not fit data.params.features: "
                             f"{why}") from None
    def identity(files: list[str], rows=None) -> str:      # the files (names, sizes) and the rows drawn
        named = {"files": np.asarray(files, str), "sizes": np.asarray([os.path.getsize(f) for f in files])}
        return digest_arrays(named if rows is None else {**named, "rows": rows})

    def check(files: list[str]):      # each record parsed alone: the ones that do not, by file and number
        def problems() -> list[str]:
            found = []
            for f in files:
                for i, serialized in enumerate(tf.data.TFRecordDataset(f, compression_type=compression)):
                    try:
                        example(serialized)
                    except tf.errors.OpError as exc:
                        why = record_mismatch(serialized.numpy(), spec, shapes) or op_reason(exc)
                        found.append(f"{f}, record {i}: {why}")
            return found

        return problems

    parts = {s: Part(ds.map(example), identity=identity(groups[s]), check=check(groups[s]))
             for s, ds in raw.items() if s}
    if "" in raw or "val" not in raw or "test" not in raw:
        key = "" if "" in raw else "train"
        pool = raw[key]
        n = int(pool.reduce(np.int64(0), lambda count, _: count + 1))
        for split, idx in draw_missing(n, set(raw) - {""}, seed, val_fraction, test_fraction).items():
            parts[split] = Part(rows_of(pool, np.isin(np.arange(n), idx)).map(example),
                                identity=identity(groups[key], idx), check=check(groups[key])) if len(idx) else None
    info: dict[str, Any] = {"input_shapes": {i: shapes[i] for i in inputs}}
    if len({shapes[i] for i in inputs}) == 1:
        info["input_shape"] = shapes[inputs[0]]
    if class_names is not None:
        info.update(class_names=list(class_names), num_classes=len(class_names))
    return Splits(*(parts.get(s) for s in SPLITS), info)
