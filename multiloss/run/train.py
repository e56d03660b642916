"""``multiloss train``: a run config to a saved model, with logs and plots.

Artifacts in ``output_dir/<name>``, each written atomically: ``config.yaml``,
``history.csv``/``history.json`` (every logged key, every epoch),
``metrics.json``, ``model.keras``, ``checkpoints/``, ``tensorboard/`` and
``plots/*.png``.  ``checkpoints/state.json`` is written last at each
checkpoint, so a run killed at any moment resumes from a consistent state.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..core import keras_access
from ..core.compile import compile as ml_compile
from ..spec.errors import SpecError
from ..spec.validation import did_you_mean
from . import selection
from .augment import augmenter_for
from .config import RunConfig, load_data, load_run_config
from .console import table
from .data import Part, Splits, input_shapes, read_errors_named, weight_key_problem
from .epochlog import EpochLog
from .kinds import RunKind, register_kind
from .models import build_with, get_builder
from .optim import build_optimizer
from .plots import plot_history
from .precision import dtype_policy
from .rundir import RunDir
from .tasks import TaskData, TaskError, label_targets, target_keys, task_data


def make_strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "mirrored":
        return keras_access.mirrored_strategy()
    if kind == "multi_worker":
        tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


TASK_TYPES = ("chief", "worker", "evaluator", "ps")
TF_CONFIG_FORM = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


def tf_config() -> dict:
    """``TF_CONFIG`` (multi_worker's cluster and task), checked: a SpecError at ``distribute`` says what
    is wrong with it, rather than a JSON or TensorFlow traceback."""
    def refuse(why: str):
        raise SpecError([(("distribute",), None, f"multi_worker needs the TF_CONFIG environment variable, "
                                                 f"and {why}; give JSON such as {TF_CONFIG_FORM} (see the README)")],
                        "run config") from None

    text = os.environ.get("TF_CONFIG")
    if not text:
        refuse("it is not set" if text is None else "it is empty")
    try:
        value = json.loads(text)
    except ValueError as exc:
        refuse(f"it is not JSON ({exc})")
    task = value.get("task") if isinstance(value, dict) else None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        refuse(f"its cluster must map task types to lists of host:port, got {cluster!r}")
    if not isinstance(task, dict) or task.get("type") not in TASK_TYPES or \
            not isinstance(task.get("index", 0), int) or isinstance(task.get("index", 0), bool):
        refuse(f"its task must be {{type: one of {', '.join(TASK_TYPES)}, index: an integer}}, got {task!r}")
    if task["type"] not in cluster or not 0 <= task.get("index", 0) < len(cluster[task["type"]]):
        refuse(f"its task {task!r} is not in its cluster {cluster!r}")
    return value


def is_chief(distribute: str = "multi_worker") -> bool:
    """Whether this process writes the run folder: always, but for a multi_worker worker that is not
    the chief (TF_CONFIG is read only for multi_worker: a stale one does not silence a plain run)."""
    if distribute != "multi_worker":
        return True
    value = tf_config()
    task = value["task"]
    return task["type"] == "chief" or (task["type"] == "worker" and task.get("index", 0) == 0
                                       and "chief" not in value["cluster"])


def load_splits(cfg: RunConfig) -> Splits | TaskData:
    """The splits of ``data``, or (``tasks``) every task's, checked against each other (:mod:`.tasks`)."""
    extra = {} if cfg.train.validation_split is None else {"val_fraction": cfg.train.validation_split}
    if cfg.tasks is None:
        return load_data(cfg, **extra)
    splits = {name: load_data(cfg, t.data, ("tasks", name, "data"), **extra) for name, t in cfg.tasks.items()}
    try:
        return task_data(cfg, splits, label_targets(cfg)[0])
    except TaskError as exc:
        raise cfg.error([(exc.path, exc.message)]) from None


def check_monitor_has_val(cfg: RunConfig, data: Splits | TaskData) -> None:
    """A ``val_`` key monitored by early stopping needs a validation split: without one Keras warns that
    it is not available and the run trains on, selecting nothing.  Checked before training (and by
    ``validate``), not when a saved run is evaluated."""
    es = cfg.train.callbacks.early_stopping
    monitors = [] if es is None else [es.monitor] if isinstance(es.monitor, str) else list(es.monitor)
    val = [k for k in monitors if k.startswith("val_")]
    parts = data.splits.values() if isinstance(data, TaskData) else [data]
    if val and all(p.val is None for p in parts):
        path = ("train", "callbacks", "early_stopping", "monitor") + ((val[0],) if len(monitors) > 1 else ())
        raise cfg.error([(path, f"{val[0]!r} needs a validation split, and the data has none: give "
                                "train.validation_split > 0 (or a source with a val split), or monitor a "
                                f"training key ({val[0][4:]!r})")])


def data_digests(data: Splits | TaskData) -> dict[str, str | None]:
    """Each split's digest (``task.split`` for tasks): what a resumed run must find again."""
    if isinstance(data, TaskData):
        return {f"{t}.{s}": d for t, splits in data.splits.items() for s, d in splits.digests().items()}
    return data.digests()


def prepare_split(data: Splits | TaskData, cfg: RunConfig, split: str) -> Any:
    """What a split is evaluated on (:func:`prepare`); for tasks every task's batches of ``split``, the
    tasks one after another.  Never shuffled, never augmented: training reads :func:`train_batches`."""
    if isinstance(data, TaskData):
        return data.evaluation(split)
    return prepare(getattr(data, split), cfg, split)


def target_mapping(part: Part, cfg: RunConfig, split: str) -> dict[str, str] | None:
    """``{target key: data target}`` for the loss spec's targets (``cfg.targets`` renames), each checked
    against the data's; None for a dataset whose y is one tensor (it goes to Keras as it is)."""
    names = part.element_spec()[1] if part.is_dataset else part.y
    if not isinstance(names, dict):
        return None
    keys = {key: cfg.targets.get(key, key) for key in target_keys(cfg)}
    problem = weight_key_problem(part, split, keys)
    if problem:
        raise cfg.error([(("data", "source"), f"{cfg.data.source}: {problem}")])
    for key, source_key in keys.items():
        if source_key not in names:
            path = ("targets", key) if key in cfg.targets else \
                ("loss", "outputs", key) if key in cfg.spec.outputs else ("loss",)
            raise cfg.error([(path, f"the {split} data has no target {source_key!r} for {key!r}; "
                                    f"{did_you_mean(source_key, [str(n) for n in names])}data targets: "
                                    f"{sorted(names)}; map it with `targets: {{{key}: <data target>}}`")])
    return keys


def train_batches(data: Splits | TaskData, cfg: RunConfig, initial_epoch: int) -> tuple[Any, int | None]:
    """What ``fit`` trains on from ``initial_epoch`` to ``train.epochs``: one ``tf.data`` dataset of
    every remaining epoch's batches, and the batches in an epoch.  Epoch e's order is drawn from the
    run's seed and e alone (:meth:`Part.epochs`), so each epoch is shuffled anew and a resumed run reads
    what the uninterrupted run would have.  With ``train.augment`` the inputs are augmented here, so the
    model itself, and its ``model.keras``, hold no augmentation layer.  A dataset of unknown length
    is one pass (Keras reads it each epoch, ``None`` batches an epoch)."""
    if isinstance(data, TaskData):
        ds = data.train_dataset(initial_epoch, cfg.train.epochs)
        augmenter = augmenter_for(cfg, cfg.train.augment, cfg.seed, input_shapes(data.splits[data.names[0]].train))
        return (ds if augmenter is None else augmenter.dataset(ds)), data.steps
    part, batch_size = data.train, cfg.train.batch_size
    keys = target_mapping(part, cfg, "train")
    augmenter = augmenter_for(cfg, cfg.train.augment, cfg.seed, input_shapes(part))
    if not part.is_dataset:
        part, keys = part.renamed(keys), None
    epochs = range(initial_epoch, max(cfg.train.epochs, initial_epoch + 1))
    ds, steps = part.epochs(batch_size, epochs, cfg.train.shuffle, cfg.seed, keys), part.steps(batch_size)
    if ds is None:
        ds, steps = part.batches(batch_size, shuffle=cfg.train.shuffle, seed=cfg.seed, targets=keys), None
    return (ds if augmenter is None else augmenter.dataset(ds)), steps


def prepare(part: Part | None, cfg: RunConfig, split: str) -> Any:
    """A split to evaluate on: ``(x, y)`` arrays, or a dataset part batched with ``train.batch_size``, in
    its own order and unaugmented; ``y`` keyed by head/target name via ``cfg.targets``."""
    if part is None:
        return None
    keys = target_mapping(part, cfg, split)
    if part.is_dataset:
        return part.batches(cfg.train.batch_size, targets=keys)
    arrays = part.renamed(keys)
    return arrays.x, arrays.y


class RunRecorder(keras.callbacks.Callback):
    """Each epoch: the history files; every N epochs and after the last: a checkpoint (the model, then
    ``state.json``)."""

    def __init__(self, run: RunDir, history: list[dict], every: int, keep: int, fingerprint: dict,
                 data: dict[str, str | None] | None = None, selection: dict | None = None):
        super().__init__()
        self.run, self.history, self.every, self.keep = run, history, every, keep
        self.fingerprint, self.data, self.selection = fingerprint, data, selection

    def on_epoch_end(self, epoch: int, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history[:] = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        self.run.write_history(self.history)
        # The last epoch too (the epochs asked for, or early stopping's: its callback ran first), so a
        # resume of a finished run does not train again the epochs after an `every`-th one.
        last = epoch + 1 == self.params.get("epochs") or self.model.stop_training
        if (epoch + 1) % self.every == 0 or last:
            self.checkpoint(epoch + 1)

    def checkpoint(self, epoch: int) -> None:
        self.run.save_checkpoint(epoch, {f"epoch-{epoch:04d}.keras": self.model.save},
                                 {"epoch": epoch, "history": self.history, "fingerprint": self.fingerprint, "data": self.data,
                                  "selection": self.selection, "seed_states": keras_access.seed_states(self.model)},
                                 keep=self.keep)


def prebuild(model, xy) -> None:
    """Build the compiled loss and metrics from two real samples.

    Keras otherwise builds them symbolically from the first distributed batch,
    which fails for the per-replica values of a multi-worker strategy.
    """
    x, y = xy
    head = {k: v[:2] for k, v in x.items()} if isinstance(x, dict) else x[:2]
    y = {k: v[:2] for k, v in y.items()}
    y_pred = model(head, training=False)
    for obj in (keras_access.compiled_loss(model), keras_access.compiled_metrics(model)):
        if obj is not None and not obj.built:
            obj.build(y, y_pred)


def evaluate_splits(model, data: dict[str, Any], batch_size: int) -> dict[str, dict[str, float]]:
    out = {}
    for split, xy in data.items():
        if xy is None:
            continue
        if isinstance(xy, tuple):
            res = model.evaluate(xy[0], xy[1], batch_size=batch_size, verbose=0, return_dict=True)
        else:
            res = model.evaluate(xy, verbose=0, return_dict=True)
        out[split] = {k: float(v) for k, v in res.items()}
    return out


def summary_table(metrics: dict[str, dict[str, float]], terms: list[str]) -> str:
    splits = [s for s in ("train", "val", "test") if s in metrics]
    keys = ["loss"] + [k for t in terms for k in (f"{t}_loss", f"{t}_weight")]
    first = metrics[splits[0]]
    keys += sorted(k for k in first if k not in keys)
    rows = [[k] + [f"{metrics[s].get(k, float('nan')):.4f}" for s in splits] for k in keys]
    return table(rows, ["", *splits])


def build_model(cfg: RunConfig, info: dict) -> keras.Model:
    """The configured model, compiled with the run's loss spec and optimizer."""
    model = build_with(get_builder(cfg.model.builder), cfg.model.builder, info, cfg.model.params, cfg.error)
    if not isinstance(model, keras.Model):
        raise cfg.error([(("model", "builder"), f"{cfg.model.builder!r} returned a "
                                               f"{type(model).__name__}, not a keras.Model")])
    return ml_compile(model, cfg.spec, optimizer=build_optimizer(cfg.optimizer),
                      jit_compile=cfg.train.jit_compile, nonfinite=cfg.train.nonfinite)


def dry_run(cfg: RunConfig) -> dict[str, float]:
    """Build data, model and loss; run one training batch through the loss; train nothing.  Seeded as
    a run is (before the data, again before the model), so it shows the run's first batch's values."""
    keras.utils.set_random_seed(cfg.seed)
    splits = load_splits(cfg)
    check_monitor_has_val(cfg, splits)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, splits.info)
    x, y, *rest = next(iter(train_batches(splits, cfg, 0)[0]))     # the first training batch, as fit reads it
    sw = rest[0] if rest else None
    result = model.loss.compute(y, model(x, training=False), sw)
    values = {name: float(v) for name, v in result.losses.items()}
    total = float(result.total)
    targets = {t.name: t.target for t in model.loss.terms}
    for name, v in values.items():
        w = sw.get(targets[name]) if isinstance(sw, dict) else None
        absent = ", absent from this batch: no labels" if w is not None and not np.any(np.asarray(w)) else ""
        print(f"  {name:<24} {v:.6g}  (weight {float(result.weights[name]):g}{absent})")
    print(f"{cfg.name}: dry run OK: one batch of the train split through {len(values)} terms, "
          f"total {total:.6g}; nothing was trained or written")
    return {"total": total, **values}


def train(config: str | os.PathLike | dict | RunConfig, overrides: list[str] | None = None,
          resume: bool = False, overwrite: bool = False) -> dict:
    """Run a config end to end; returns the final metrics.

    An existing run folder is continued only with ``resume`` and replaced only
    with ``overwrite``; otherwise :class:`RunError` is raised and nothing is touched.
    """
    cfg = config if isinstance(config, RunConfig) else load_run_config(config, overrides)
    with dtype_policy(cfg.train.precision):
        return _train(cfg, resume, overwrite)


def _train(cfg: RunConfig, resume: bool, overwrite: bool) -> dict:
    chief = is_chief(cfg.distribute)
    strategy = make_strategy(cfg.distribute)
    keras.utils.set_random_seed(cfg.seed)   # as start() sets it again, for the model
    splits = load_splits(cfg)       # the data and (to overwrite) the model first: a run is replaced
    check_monitor_has_val(cfg, splits)
    if overwrite:                   # only by one that gets as far as training
        with strategy.scope():
            build_model(cfg, splits.info)
    run = KIND.folder(cfg, resume=resume, overwrite=overwrite, writer=chief)
    if resume and run.holds_run():  # refused before the folder is touched, as a changed config is
        problems = selection.resume_problems(cfg.train.callbacks.early_stopping, run.read_state())
        if problems:
            raise cfg.error(problems)
    with run:                       # the folder is locked from open() to the run's end
        digests = data_digests(splits)
        state = KIND.start(run, cfg, data=digests)
        with strategy.scope():
            model = restore_model(run, state, cfg) if state is not None else build_model(cfg, splits.info)
        history: list[dict] = list(state["history"]) if state else []
        initial_epoch = state["epoch"] if state else 0
        train_xy, val_xy, test_xy = (prepare_split(splits, cfg, s) for s in ("train", "val", "test"))
        batches, steps = train_batches(splits, cfg, initial_epoch)
        with strategy.scope():
            if isinstance(train_xy, tuple):
                prebuild(model, train_xy)

        start = time.perf_counter()
        es = cfg.train.callbacks.early_stopping
        with read_errors_named(splits.parts()):
            if es is not None and selection.stopped_before(es, history):
                selection.restore_best(es, run, model)         # a resumed run that had stopped: its result stands
            elif initial_epoch < cfg.train.epochs:
                fit(model, cfg, batches, steps, val_xy, initial_epoch, run_callbacks(cfg, run, history, chief, digests))
            seconds = time.perf_counter() - start
            metrics = evaluate_splits(model, {"train": train_xy, "val": val_xy, "test": test_xy},
                                      cfg.train.batch_size)
        if chief:
            write_results(cfg, run, model, history, metrics, seconds, initial_epoch)
        return metrics


def restore_model(run: RunDir, state: dict, cfg: RunConfig) -> keras.Model:
    """The model of the checkpoint ``state`` names, with the config's non-finite mode and its random
    layers' seed generators where they were (``.keras`` does not hold them)."""
    model = run.read_archive(run.checkpoints / state["files"][0], keras.saving.load_model)
    keras_access.set_seed_states(model, state.get("seed_states", []))
    model.loss.guard.mode = cfg.train.nonfinite
    return model


def run_callbacks(cfg: RunConfig, run: RunDir, history: list[dict], chief: bool,
                  data: dict[str, str | None] | None = None) -> list[keras.callbacks.Callback]:
    """History files and checkpoints (with the data's digests), TensorBoard (chief only), early stopping,
    plain epoch lines."""
    ckpt = cfg.train.callbacks.checkpoint
    callbacks: list[keras.callbacks.Callback] = [
        RunRecorder(run, history, ckpt.every, ckpt.keep, cfg.fingerprint(), data,
                    selection.criterion(cfg.train.callbacks.early_stopping))]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.file("tensorboard"))))
    es = cfg.train.callbacks.early_stopping
    if es is not None:
        callbacks[:0] = selection.callbacks(es, run, history)   # delta_m logged before the history records it
    if plain_epoch_lines(cfg):
        callbacks.append(EpochLog(lambda line: print(line, flush=True)))   # plain lines, weights when they change
    return callbacks


def plain_epoch_lines(cfg: RunConfig) -> bool:
    """One printed line per epoch instead of Keras's progress bar (``verbose: 2``, or output not a terminal)."""
    return cfg.train.verbose == 2 or (cfg.train.verbose == 1 and not sys.stdout.isatty())


def fit(model: keras.Model, cfg: RunConfig, batches: Any, steps_per_epoch: int | None, val_xy: Any,
        initial_epoch: int, callbacks: list[keras.callbacks.Callback]) -> None:
    """``model.fit`` from ``initial_epoch`` to ``train.epochs`` on :func:`train_batches`'s dataset;
    validation arrays in batches of ``train.batch_size`` too (Keras's default for them is 32)."""
    model.fit(batches, steps_per_epoch=steps_per_epoch, validation_data=val_xy,
              validation_batch_size=cfg.train.batch_size, epochs=cfg.train.epochs,
              initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False,
              verbose=0 if plain_epoch_lines(cfg) else cfg.train.verbose)


def write_results(cfg: RunConfig, run: RunDir, model: keras.Model, history: list[dict],
                  metrics: dict[str, dict[str, float]], seconds: float, initial_epoch: int) -> None:
    """``model.keras``, the history files, ``metrics.json`` and the plots; the summary table printed."""
    terms = model.loss.term_names
    run.write_with("model.keras", model.save)
    run.write_history(history)
    skipped = sum(int(row.get("nonfinite_skipped", 0)) for row in history)
    timing = {"train_seconds": round(seconds, 2), "resumed_from_epoch": initial_epoch or None}
    if initial_epoch >= len(history) and run.file("metrics.json").is_file():     # a finished run resumed:
        old = run.read_json("metrics.json")                                       # nothing trained now
        timing = {k: old.get(k, v) for k, v in timing.items()}
    summary = {"splits": metrics, "epochs": len(history), **timing, "nonfinite_skipped_batches": skipped}
    es = cfg.train.callbacks.early_stopping
    if es is not None:
        summary["selection"] = selection.summary(es, run, history)
    run.write_json("metrics.json", summary)
    plot_history(history, terms, run.file("plots"))
    print(f"\n{cfg.name}: {len(history)} epochs, {seconds:.1f}s training"
          + (f", {skipped} batch(es) skipped (non-finite)" if skipped else ""))
    print(summary_table(metrics, terms))
    print(f"artifacts: {run.path}")


def default_config_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("multiloss") / "configs" / "siamese_digits.yaml"))


class TrainKind(RunKind):
    """``multiloss train``: a run config to a trained, saved model (:func:`train`)."""

    name = "train"
    config_kind = "run"
    may_change = "train.epochs, verbose, nonfinite and callbacks"
    resumes_from = "from the last checkpoint"

    def load_config(self, source, overrides=None) -> RunConfig:
        return load_run_config(default_config_path() if source is None else source, overrides)

    def run(self, config, overrides=None, *, resume=False, overwrite=False) -> dict:
        return train(config, overrides, resume=resume, overwrite=overwrite)

    def dry_run(self, cfg: RunConfig) -> dict[str, float]:
        with dtype_policy(cfg.train.precision):
            return dry_run(cfg)

    def check(self, config: str | os.PathLike | dict, overrides: list[str] | None = None) -> str:
        """Everything ``train`` checks before it trains (config, data, model, loss, targets); writes nothing."""
        cfg = load_run_config(config, overrides)
        splits = load_splits(cfg)
        check_monitor_has_val(cfg, splits)
        with dtype_policy(cfg.train.precision):
            model = build_model(cfg, splits.info)
        train_batches(splits, cfg, 0)                  # targets, augmentations
        for split in ("val", "test"):
            prepare_split(splits, cfg, split)
        terms = model.loss.term_names
        data = f"data {cfg.data.source!r}" if cfg.tasks is None else \
            f"tasks {', '.join(cfg.tasks)} (sampler {cfg.sampler})"
        return (f"run config {cfg.name!r}: {data}, model {cfg.model.builder!r} with outputs "
                f"{', '.join(model.output_names)}; {len(terms)} terms: {', '.join(terms)}")

    def evaluate(self, run_dir: str | os.PathLike) -> dict:
        """Re-evaluate a saved run on its test split (rebuilt from the saved config and seed)."""
        run = RunDir(run_dir, resume=True)
        cfg = load_run_config(run.file("config.yaml"))
        splits = load_splits(cfg)
        test = prepare_split(splits, cfg, "test")
        if test is None:
            source = f"data source {cfg.data.source!r} gives" if cfg.tasks is None else "tasks' data sources give"
            raise cfg.error([(("data",) if cfg.tasks is None else ("tasks",),
                              f"the {source} no test split, so there is nothing to evaluate; give it one "
                              "(npz: test/<name> arrays; a user source: a 'test' entry)")])
        model = run.read_archive(run.file("model.keras"), keras.saving.load_model, run.model_fix())
        with read_errors_named(splits.parts()):
            metrics = evaluate_splits(model, {"test": test}, cfg.train.batch_size)
        print(summary_table(metrics, model.loss.term_names))    # shown even where the folder cannot take the file
        run.write_json("evaluation.json", metrics)
        return metrics

    def plot(self, run_dir: str | os.PathLike) -> list[Path]:
        """Redraw a run's figures from its history.json."""
        run = RunDir(run_dir, resume=True)
        cfg = load_run_config(run.file("config.yaml"))
        files = plot_history(run.read_json("history.json"), [t.name for t in cfg.spec.resolve()],
                             run.file("plots"))
        for f in files:
            print(f)
        return files


KIND = register_kind(TrainKind())
check_run, evaluate_run, plot_run = KIND.check, KIND.evaluate, KIND.plot

__all__ = ["train", "check_run", "dry_run", "evaluate_run", "plot_run", "build_model", "default_config_path",
           "TrainKind", "KIND"]
