"""Serving a trained run: ``multiloss export`` and ``multiloss predict``.

``export`` writes an inference-only model that loads **without multiloss**:

* ``tf_saved_model``: Keras's ``model.export`` (a TensorFlow SavedModel with a ``serve`` endpoint), for
  TF Serving or ``tf.saved_model.load``; any model;
* ``keras``: a plain ``.keras`` file of the same layers, with no compile config and no multiloss class
  (Functional and Sequential models of Keras's own layers), for ``keras.saving.load_model``.

``predict`` runs the run's model on the arrays of an ``.npz`` and writes each named output; for a
classification head (a crossentropy loss over several classes) also the predicted class and, where the
data source names them, the class names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from ..core.keras_access import all_layers
from ..spec.errors import RunError, SpecError
from . import atomic
from .config import load_data, load_run_config
from .rundir import RunDir

Format = Literal["tf_saved_model", "keras"]
FORMATS = ("tf_saved_model", "keras")
CLASSIFICATION = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def load_run_model(run_dir: str | os.PathLike) -> tuple[RunDir, keras.Model]:
    """The run folder and its trained ``model.keras``."""
    run = RunDir(run_dir, resume=True)
    path = run.file("model.keras")
    if not path.is_file():
        raise RunError(f"{run.path} has no model.keras: export and predict take the folder of a finished "
                       "`multiloss train` or `multiloss incremental` run")
    return run, keras.saving.load_model(path)


def plain_model(model: keras.Model) -> keras.Model:
    """The same layers as a Keras class of Keras's own, uncompiled (nothing of multiloss in its file)."""
    custom = sorted({type(layer).__name__ for layer in all_layers(model)[1:]
                     if not type(layer).__module__.startswith("keras.")})
    if custom:
        raise RunError(f"the model has layers of classes that are not Keras's own ({', '.join(custom)}): a "
                       ".keras file of it needs their module to load; export it with --format tf_saved_model")
    if isinstance(model, keras.Sequential):
        return keras.Sequential(model.layers, name=model.name)
    if getattr(model, "output_names", None) and hasattr(model, "inputs") and model.inputs:
        return keras.Model(model.input, model.output, name=model.name)       # inputs and outputs as nested
    raise RunError(f"a {type(model).__name__} (a subclassed model) has no plain Keras form: export it with "
                   "--format tf_saved_model")


def signature(model: keras.Model) -> list[str]:
    """Input and output names and shapes, one line each."""
    def shape(t) -> str:
        return "[" + ", ".join("B" if d is None else str(d) for d in t.shape) + "]"

    inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
    lines = [f"input  {getattr(t, 'name', 'x').split(':')[0]}: {shape(t)} {t.dtype}" for t in inputs]
    outputs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(outputs))])
    lines += [f"output {n}: {shape(t)} {t.dtype}" for n, t in zip(names, outputs)]
    return lines


def export_run(run_dir: str | os.PathLike, fmt: Format = "tf_saved_model", out: str | os.PathLike | None = None
               ) -> Path:
    """Write the run's model for serving (see the module docstring); returns where; prints its signature."""
    if fmt not in FORMATS:
        raise RunError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    run, model = load_run_model(run_dir)
    plain = plain_model(model) if fmt == "keras" else model
    default = run.file("export") / ("model.keras" if fmt == "keras" else "saved_model")
    target = Path(out) if out is not None else default
    if fmt == "keras":
        atomic.write_with(target, plain.save)
    else:
        atomic.write_dir(target, lambda tmp: model.export(str(tmp), format="tf_saved_model", verbose=False))
    print("\n".join(signature(plain)))
    print(f"wrote {target} ({fmt}; inference only, loads without multiloss)")
    return target


def predict_run(run_dir: str | os.PathLike, inputs: str | os.PathLike, out: str | os.PathLike | None = None
                ) -> Path:
    """The run's model on the arrays of ``inputs`` (an ``.npz``: one array, or one per model input)."""
    run, model = load_run_model(run_dir)
    with np.load(inputs, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    names = [t.name.split(":")[0] for t in model.inputs]
    if len(arrays) == 1:
        x = next(iter(arrays.values()))
    else:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise RunError(f"{inputs} has no array {missing[0]!r}; the model's inputs are {names}, the file's "
                           f"arrays {sorted(arrays)}")
        x = {n: arrays[n] for n in names}
    pred = model.predict(x, verbose=0)
    if not isinstance(pred, dict):
        names = getattr(model, "output_names", None) or [model.layers[-1].name]
        pred = {names[0]: pred}
    result = {k: np.asarray(v) for k, v in pred.items()}
    spec = getattr(model.loss, "spec", None)
    if spec is None:            # an incremental run's model: scores over its classes, named in classes.json
        (head, scores), = result.items()
        ids = scores.argmax(-1)
        result[f"{head}_class"] = ids
        if run.file("classes.json").is_file():
            result[f"{head}_class_name"] = np.asarray(run.read_json("classes.json")["class_names"])[ids]
        return _write_predictions(run, out, result)
    class_names = _class_names(run)
    for term in spec.resolve():
        head = term.outputs[0]
        if len(term.outputs) == 1 and term.loss.name in CLASSIFICATION and result[head].shape[-1] > 1:
            ids = result[head].argmax(-1)
            result[f"{head}_class"] = ids
            if class_names and len(class_names) == result[head].shape[-1]:
                result[f"{head}_class_name"] = np.asarray(class_names)[ids]
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


def _class_names(run: RunDir) -> list[str] | None:
    """The data source's class names, if it has them (read from the run's config)."""
    try:
        cfg = load_run_config(run.file("config.yaml"))
        names = load_data(cfg).info.get("class_names")
    except (SpecError, RunError, OSError, LookupError, ValueError):    # no names: written without them
        return None
    return [str(n) for n in names] if names else None


__all__ = ["FORMATS", "Format", "export_run", "load_run_model", "plain_model", "predict_run", "signature"]
