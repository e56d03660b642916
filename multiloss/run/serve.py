"""Serving a trained run: ``multiloss export`` and ``multiloss predict``.

``export`` writes an inference-only model that loads **without multiloss**:

* ``tf_saved_model``: Keras's ``model.export`` (a TensorFlow SavedModel with a ``serve`` endpoint), for
  TF Serving or ``tf.saved_model.load``; any model.  A model with one output also gets a
  ``serving_default`` signature that names it as ``predict`` does (Keras's would call it ``output_0``);
  ``serve`` still returns the tensor;
* ``keras``: a plain ``.keras`` file of the same layers, with no compile config and no multiloss class
  (Functional and Sequential models of Keras's own layers), for ``keras.saving.load_model``.

``predict`` runs the run's model on the arrays of an ``.npz`` and writes each named output; for a
classification head (a crossentropy loss over several classes) also the predicted class and, where the
data source names that head's target's classes, the class names.

Both load the run as ``evaluate`` does: its ``config.yaml`` first (so the import strings of the run's
own config are trusted and its model builder's module is imported), then ``model.keras`` under the
run's precision.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from ..core.keras_access import all_layers, export_input_signature
from ..losses import reduction as red
from ..spec.errors import RunError, SpecError
from ..spec.loss_table import canonical_name
from . import atomic
from .config import load_data
from .precision import dtype_policy
from .rundir import DAMAGED_MODEL, RunDir

Format = Literal["tf_saved_model", "keras"]
FORMATS = ("tf_saved_model", "keras")
CLASSIFICATION = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def load_run_model(run_dir: str | os.PathLike) -> tuple[RunDir, Any, keras.Model]:
    """The run folder, its config (None for a folder without ``config.yaml``) and its ``model.keras``."""
    from .kinds import kind_of_run

    run = RunDir(run_dir, resume=True)
    path = run.file("model.keras")
    if not path.is_file():
        seeds = sorted(p.name for p in run.path.glob("seed-*") if (p / "model.keras").is_file())
        if seeds:
            raise RunError(f"{run.path} is a `seeds:` run: each seed's run has its own model.keras; give one of "
                           f"{', '.join(str(run.path / s) for s in seeds)}")
        raise RunError(f"{run.path} has no model.keras: export and predict take the folder of a finished "
                       "`multiloss train` or `multiloss incremental` run")
    cfg = kind_of_run(run.path).load_config(run.file("config.yaml")) if run.file("config.yaml").is_file() \
        else None
    precision = getattr(getattr(cfg, "train", None), "precision", None) or "float32"
    with dtype_policy(precision):
        return run, cfg, run.read_archive(path, keras.saving.load_model, DAMAGED_MODEL)


def plain_model(model: keras.Model) -> keras.Model:
    """The same layers as a Keras class of Keras's own, uncompiled (nothing of multiloss in its file)."""
    custom = sorted({type(layer).__name__ for layer in all_layers(model)[1:]
                     if not type(layer).__module__.startswith("keras.")})
    if custom:
        raise RunError(f"the model has layers of classes that are not Keras's own ({', '.join(custom)}): a "
                       ".keras file of it needs their module to load; export it with --format tf_saved_model")
    if isinstance(model, keras.Sequential):
        first = model.inputs[0]
        head = keras.Input(batch_shape=first.shape, dtype=first.dtype, name=first.name.split(":")[0])
        return keras.Sequential([head, *model.layers], name=model.name)
    if getattr(model, "output_names", None) and hasattr(model, "inputs") and model.inputs:
        return keras.Model(model.input, model.output, name=model.name)       # inputs and outputs as nested
    raise RunError(f"a {type(model).__name__} (a subclassed model) has no plain Keras form: export it with "
                   "--format tf_saved_model")


def _shape(shape) -> str:
    return "[" + ", ".join("B" if d is None else str(d) for d in shape) + "]"


def output_names(model: keras.Model, count: int) -> list[str]:
    """The names of a model's ``count`` outputs: its ``output_names``, else its last layer's name for
    one output, else ``output_<i>``."""
    return list(getattr(model, "output_names", None) or
                ([model.layers[-1].name] if count == 1 else [f"output_{i}" for i in range(count)]))


def signature(model: keras.Model) -> list[str]:
    """Input and output names, shapes and dtypes of a Keras model, one line each."""
    inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
    lines = [f"input  {getattr(t, 'name', 'x').split(':')[0]}: {_shape(t.shape)} {t.dtype}" for t in inputs]
    outputs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    lines += [f"output {n}: {_shape(t.shape)} {t.dtype}" for n, t in zip(output_names(model, len(outputs)), outputs)]
    return lines


def served_signature(path: Path) -> list[str]:
    """The ``serving_default`` signature of a SavedModel as TF Serving sees it: its input and output
    names, shapes and dtypes."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    lines = [f"input  {n}: {_shape(s.shape)} {s.dtype.name}" for n, s in sorted(kwargs.items())]
    lines += [f"output {n}: {_shape(s.shape)} {s.dtype.name}" for n, s in sorted(fn.structured_outputs.items())]
    return lines


def input_specs(model: keras.Model) -> tuple[dict[str, tuple[tuple, str]], str]:
    """The model's inputs ``{name: (shape, dtype)}`` and how a call takes them: ``"one"`` (a tensor),
    ``"dict"`` (by name) or ``"list"``.  A subclassed model's come from its saved build config (an
    unnamed single input is called ``inputs``)."""
    if getattr(model, "inputs", None):
        specs = {t.name.split(":")[0]: (tuple(t.shape), str(t.dtype)) for t in model.inputs}
        return specs, "one" if len(specs) == 1 else "dict"
    shape = (model.get_build_config() or {}).get("input_shape")
    if shape is None:
        raise RunError(f"the {type(model).__name__} in model.keras has no saved input shape, so its inputs "
                       "are unknown; build it (call it once) before it is saved")
    dtype = str(model.input_dtype)
    if isinstance(shape, dict):
        return {k: (tuple(v), dtype) for k, v in shape.items()}, "dict"
    if all(d is None or isinstance(d, int) for d in shape):
        return {"inputs": (tuple(shape), dtype)}, "one"
    return {f"input_{i}": (tuple(v), dtype) for i, v in enumerate(shape)}, "list"


def packed(arrays: dict[str, Any], how: str) -> Any:
    """Named arrays as the model's call takes them (see :func:`input_specs`)."""
    return next(iter(arrays.values())) if how == "one" else arrays if how == "dict" else list(arrays.values())


def called_once(model: keras.Model) -> Any:
    """The model's output on one example of zeros of its input shape (a loaded subclassed model's from
    its saved build config): Keras exports only a model that has been called."""
    specs, how = input_specs(model)
    return model(packed({n: np.zeros((1, *shape[1:]), dtype) for n, (shape, dtype) in specs.items()}, how))


def write_saved_model(model: keras.Model, folder: Path) -> None:
    """Keras's ``model.export`` to ``folder``; a model with one output tensor also gets a
    ``serving_default`` that returns it by the name ``predict`` gives it (Keras's calls it ``output_0``)."""
    # A Functional or Sequential model has its outputs (and may take variable sizes or strings, which
    # zeros cannot stand for); a subclassed one is called once, as Keras exports only a called model.
    out = model.outputs if getattr(model, "inputs", None) else called_once(model)
    if isinstance(out, dict) or len(keras.tree.flatten(out)) != 1:
        model.export(str(folder), format="tf_saved_model", verbose=False)
        return
    name, = output_names(model, 1)
    archive, inputs = keras.export.ExportArchive(), export_input_signature(model)
    archive.track_and_add_endpoint("serve", model, inputs)
    archive.add_endpoint("serving_default", lambda *args: {name: model(*args)}, input_signature=inputs)
    archive.write_out(str(folder), verbose=False)


def export_target(run: RunDir, fmt: Format, out: str | os.PathLike | None) -> Path:
    """Where ``export`` writes: ``--out`` or the run's ``export/``; refused where it would replace
    something that is not an earlier export of that format, or Keras could not save."""
    if out is None:
        return run.file("export") / ("model.keras" if fmt == "keras" else "saved_model")
    target = Path(out)
    if fmt == "keras":
        if target.suffix != ".keras":
            raise RunError(f"--out {out}: --format keras writes a .keras file; give a path ending in .keras")
        if target.is_dir():
            raise RunError(f"--out {out} is a folder; --format keras writes a .keras file there only if it is "
                           "not one (give another path, or remove the folder)")
    elif target.exists() and not (target / "saved_model.pb").is_file():
        raise RunError(f"--out {out} exists and is not a SavedModel folder: --format tf_saved_model replaces "
                       "only an earlier export (give a new path, or remove it)")
    return target


def export_run(run_dir: str | os.PathLike, fmt: Format = "tf_saved_model", out: str | os.PathLike | None = None
               ) -> Path:
    """Write the run's model for serving (see the module docstring); returns where; prints its signature."""
    if fmt not in FORMATS:
        raise RunError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    run, _, model = load_run_model(run_dir)
    plain = plain_model(model) if fmt == "keras" else model
    target = export_target(run, fmt, out)
    if fmt == "keras":
        atomic.write_with(target, plain.save)
        lines = signature(plain)
    else:
        atomic.write_dir(target, lambda tmp: write_saved_model(model, tmp))
        lines = served_signature(target)
    print("\n".join(lines))
    print(f"wrote {target} ({fmt}; inference only, loads without multiloss)")
    return target


def read_inputs(path: str | os.PathLike, model: keras.Model) -> Any:
    """The arrays of the ``.npz`` at ``path`` as the model's input (one array, or one per named input),
    each checked against the model's input: numeric, its shape past the batch axis, one batch size."""
    how_to = "numpy.savez(path, name=array, ...), one array per model input"
    if not Path(path).is_file():
        raise RunError(f"--input {path}: no such file; give an .npz of the model's inputs ({how_to})")
    if not zipfile.is_zipfile(path):
        raise RunError(f"--input {path} is not an .npz (a zip of .npy arrays); write one with {how_to}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise RunError(f"--input {path}: an array does not read ({exc}); write the file with {how_to}") from None
    specs, how = input_specs(model)
    names = list(specs)
    if not arrays:
        raise RunError(f"--input {path} holds no arrays; the model's inputs are {names}")
    if len(arrays) == 1 and len(names) == 1:
        chosen = {names[0]: next(iter(arrays.values()))}
    else:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise RunError(f"--input {path} has no array {missing[0]!r}; the model's inputs are {names}, the "
                           f"file's arrays {sorted(arrays)}")
        chosen = {n: arrays[n] for n in names}
    for name, array in chosen.items():
        shape, dtype = specs[name]
        where = f"--input {path}: array {name!r}" if name in arrays else f"--input {path}: its array"
        expected = f"the model's input {name!r} takes {_shape(shape)} {dtype}"
        if array.dtype.kind not in "biuf":
            raise RunError(f"{where} holds {array.dtype} values; {expected}")
        if array.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape[1:], array.shape[1:])):
            raise RunError(f"{where} has shape {list(array.shape)}; {expected} (B: any number of rows)")
        if array.dtype.kind in "iu" and "float" in dtype:
            warnings.warn(f"{where} holds integers ({array.dtype}), fed to the model as they are: give the "
                          "values as the run's data source gave them (an image folder's pixels are scaled to "
                          "[0, 1])", stacklevel=2)
    rows = {n: len(a) for n, a in chosen.items()}
    if len(set(rows.values())) > 1:
        raise RunError(f"--input {path}: the arrays have different numbers of rows {rows}; each input needs "
                       "one row per example")
    if not any(rows.values()):
        raise RunError(f"--input {path}: no rows to predict (its arrays have shapes "
                       f"{ {n: list(a.shape) for n, a in chosen.items()} }); give at least one example")
    return packed(chosen, how)


def predict_run(run_dir: str | os.PathLike, inputs: str | os.PathLike, out: str | os.PathLike | None = None
                ) -> Path:
    """The run's model on the arrays of ``inputs`` (an ``.npz``: one array, or one per model input)."""
    run, cfg, model = load_run_model(run_dir)
    pred = model.predict(read_inputs(inputs, model), verbose=0)
    if not isinstance(pred, dict):
        pred = {output_names(model, 1)[0]: pred}
    result = {k: np.asarray(v) for k, v in pred.items()}
    spec = getattr(model.loss, "spec", None)
    if spec is None:            # an incremental run's model: scores over its classes, named in classes.json
        (head, scores), = result.items()
        best = scores.argmax(-1)    # a score's position: the classes in the order they were learnt
        classes = run.read_json("classes.json") if run.file("classes.json").is_file() else {}
        result[f"{head}_class"] = np.asarray(classes["class_ids"])[best] if "class_ids" in classes else best
        if "class_names" in classes:
            result[f"{head}_class_name"] = np.asarray(classes["class_names"])[best]
        return _write_predictions(run, out, result)
    info = _data_info(cfg)
    terms = spec.resolve()
    for term in terms:
        head = term.outputs[0]
        axis = red.head_class_axis(terms, head)          # channels first: the loss's `axis`
        scores = result[head]
        if len(term.outputs) == 1 and canonical_name(term.loss) in CLASSIFICATION and scores.ndim and \
                -scores.ndim <= axis < scores.ndim and scores.shape[axis] > 1:
            ids = scores.argmax(axis)
            result[f"{head}_class"] = ids
            names = _class_names(info, cfg, term.target or head)
            if names and len(names) == scores.shape[axis]:
                result[f"{head}_class_name"] = np.asarray(names)[ids]
    return _write_predictions(run, out, result)


def _write_predictions(run: RunDir, out, result: dict) -> Path:
    target = Path(out) if out is not None else run.file("predictions.npz")
    atomic.write_with(target, lambda tmp: _save_npz(tmp, result))
    for k, v in result.items():
        print(f"{k}: {list(v.shape)} {v.dtype}")
    print(f"wrote {target}")
    return target


def _save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _data_info(cfg) -> dict:
    """The run's data source's ``info`` (class names), or {} with a warning saying why it is not there."""
    if cfg is None or getattr(cfg, "tasks", None) is not None:
        return {}
    try:
        return load_data(cfg).info
    except (SpecError, RunError, OSError, LookupError, ValueError) as exc:
        warnings.warn(f"no class names written: the run's data source does not load here ({exc})",
                      stacklevel=3)
        return {}


def _class_names(info: dict, cfg, target: str) -> list[str] | None:
    """The class names of a head's data target: the source's per-target ``classes`` where it has them
    (a table), else its one class target's ``class_names``."""
    if cfg is None:             # a folder without config.yaml: no data source to name the classes
        return None
    source = cfg.targets.get(target, target)
    if "classes" in info:
        names = info["classes"].get(source)
    else:
        names = info.get("class_names")
    return [str(n) for n in names] if names else None


__all__ = ["FORMATS", "Format", "export_run", "load_run_model", "plain_model", "predict_run", "read_inputs",
           "called_once", "input_specs", "output_names", "served_signature", "signature",
           "write_saved_model"]
