"""``multiloss train``: a run config to a saved model, with logs and plots.

Artifacts in ``output_dir/<name>``, each written atomically: ``config.yaml``,
``history.csv``/``history.json`` (every logged key, every epoch),
``metrics.json``, ``model.keras``, ``checkpoints/``, ``tensorboard/`` and
``plots/*.png``.  ``checkpoints/state.json`` is written last at each
checkpoint, so a run killed at any moment resumes from a consistent state.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import atomic
from .config import RunConfig, load_run_config
from .data import Part, Splits, get_source
from .errors import SpecError
from .keras_compile import compile as ml_compile
from .models import get_builder
from .plots import plot_history

STATE = "state.json"


def make_strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise SpecError([(("distribute",), None, "multi_worker needs the TF_CONFIG environment variable "
                                                    "(cluster and task); see the README")], "run config")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    return task.get("type", "worker") == "chief" or (
        task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
        and "chief" not in tf_config.get("cluster", {}))


def make_optimizer(cfg: RunConfig) -> keras.optimizers.Optimizer:
    params = dict(cfg.optimizer.params)
    if cfg.optimizer.schedule is not None:
        cls = getattr(keras.optimizers.schedules, cfg.optimizer.schedule.name)
        params["learning_rate"] = cls(**cfg.optimizer.schedule.params)
    names = {n.lower(): n for n in dir(keras.optimizers)}
    return getattr(keras.optimizers, names[cfg.optimizer.name.lower()])(**params)


def load_splits(cfg: RunConfig) -> Splits:
    params = dict(cfg.data.params)
    if cfg.train.validation_split is not None:
        params["val_fraction"] = cfg.train.validation_split
    return get_source(cfg.data.source)(seed=cfg.seed, **params)


def target_keys(cfg: RunConfig) -> list[str]:
    """Every key of y the loss spec and metrics read: head names and term targets."""
    keys = [t.target for t in cfg.spec.resolve() if t.target is not None]
    keys += [h for h in cfg.spec.head_metrics()]
    return list(dict.fromkeys(keys))


def prepare(part: Part | None, cfg: RunConfig, split: str) -> Any:
    """``(x, y)`` for Keras, ``y`` keyed by head/target name via ``cfg.targets``."""
    if part is None or part.is_dataset:
        return part and part.x
    y = {}
    for key in target_keys(cfg):
        source_key = cfg.targets.get(key, key)
        if source_key not in part.y:
            raise SpecError([(("targets", key), None,
                              f"the {split} data has no target {source_key!r} for {key!r}; data targets: "
                              f"{sorted(part.y)}; map it with `targets: {{{key}: <data target>}}`")],
                            "run config")
        y[key] = part.y[source_key]
    return part.x, y


class RunRecorder(keras.callbacks.Callback):
    """Each epoch: history files; every N epochs: a checkpoint, then ``state.json``."""

    def __init__(self, run_dir: Path, history: list[dict], every: int, keep: int, write: bool):
        super().__init__()
        self.run_dir, self.history, self.every, self.keep, self.write = run_dir, history, every, keep, write

    def on_epoch_end(self, epoch: int, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history[:] = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        if not self.write:
            return
        write_history(self.run_dir, self.history)
        if (epoch + 1) % self.every == 0:
            self.checkpoint(epoch + 1)

    def checkpoint(self, epoch: int) -> None:
        ckpt_dir = self.run_dir / "checkpoints"
        name = f"epoch-{epoch:04d}.keras"
        atomic.write_with(ckpt_dir / name, self.model.save)
        state = {"epoch": epoch, "checkpoint": name, "history": self.history}
        atomic.write_text(ckpt_dir / STATE, json.dumps(state, indent=1))
        for old in sorted(ckpt_dir.glob("epoch-*.keras"))[: -self.keep]:
            old.unlink()


def write_history(run_dir: Path, history: list[dict]) -> None:
    keys = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic.write_text(run_dir / "history.csv", buf.getvalue())
    atomic.write_text(run_dir / "history.json", json.dumps(history, indent=1))


def read_state(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoints" / STATE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    return state if (run_dir / "checkpoints" / state["checkpoint"]).exists() else None


def prebuild(model, xy) -> None:
    """Build the compiled loss and metrics from two real samples.

    Keras otherwise builds them symbolically from the first distributed batch,
    which fails for the per-replica values of a multi-worker strategy.
    """
    x, y = xy
    head = {k: v[:2] for k, v in x.items()} if isinstance(x, dict) else x[:2]
    y = {k: v[:2] for k, v in y.items()}
    y_pred = model(head, training=False)
    for obj in (model._compile_loss, model._compile_metrics):
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
    from .quickstart import format_table

    splits = [s for s in ("train", "val", "test") if s in metrics]
    keys = ["loss"] + [k for t in terms for k in (f"{t}_loss", f"{t}_weight")]
    first = metrics[splits[0]]
    keys += sorted(k for k in first if k not in keys)
    rows = [[k] + [f"{metrics[s].get(k, float('nan')):.4f}" for s in splits] for k in keys]
    return format_table(rows, ["", *splits])


def train(config: str | os.PathLike | dict | RunConfig, overrides: list[str] | None = None,
          resume: bool = False) -> dict:
    """Run a config end to end; returns the final metrics."""
    cfg = config if isinstance(config, RunConfig) else load_run_config(config, overrides)
    run_dir = cfg.run_dir
    chief = is_chief()
    strategy = make_strategy(cfg.distribute)
    keras.utils.set_random_seed(cfg.seed)
    state = read_state(run_dir) if resume else None
    if resume and state is None:
        print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from scratch")
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temporaries(run_dir)
        atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())

    splits = load_splits(cfg)
    train_xy, val_xy, test_xy = (prepare(splits.train, cfg, "train"), prepare(splits.val, cfg, "val"),
                                 prepare(splits.test, cfg, "test"))
    with strategy.scope():
        if state is not None:
            model = keras.saving.load_model(run_dir / "checkpoints" / state["checkpoint"])
        else:
            model = get_builder(cfg.model.builder)(splits.info, **cfg.model.params)
            ml_compile(model, cfg.spec, optimizer=make_optimizer(cfg), jit_compile=cfg.train.jit_compile)
        if isinstance(train_xy, tuple):
            prebuild(model, train_xy)
    history: list[dict] = list(state["history"]) if state else []
    initial_epoch = state["epoch"] if state else 0

    ckpt = cfg.train.callbacks.checkpoint
    callbacks: list[keras.callbacks.Callback] = [
        RunRecorder(run_dir, history, ckpt.every, ckpt.keep, chief)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    es = cfg.train.callbacks.early_stopping
    if es is not None:
        callbacks.append(keras.callbacks.EarlyStopping(**es.model_dump()))

    start = time.perf_counter()
    if initial_epoch < cfg.train.epochs:
        fit_args: dict[str, Any] = {"epochs": cfg.train.epochs, "initial_epoch": initial_epoch,
                                    "callbacks": callbacks, "verbose": cfg.train.verbose}
        if isinstance(train_xy, tuple):
            fit_args.update(x=train_xy[0], y=train_xy[1], batch_size=cfg.train.batch_size,
                            shuffle=cfg.train.shuffle)
        else:
            fit_args["x"] = train_xy
        model.fit(validation_data=val_xy, **fit_args)
    seconds = time.perf_counter() - start

    metrics = evaluate_splits(model, {"train": train_xy, "val": val_xy, "test": test_xy},
                              cfg.train.batch_size)
    terms = model.loss.term_names
    if chief:
        atomic.write_with(run_dir / "model.keras", model.save)
        write_history(run_dir, history)
        summary = {"splits": metrics, "epochs": len(history), "train_seconds": round(seconds, 2),
                   "resumed_from_epoch": initial_epoch or None}
        atomic.write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
        plot_history(history, terms, run_dir / "plots")
        print(f"\n{cfg.name}: {len(history)} epochs, {seconds:.1f}s training")
        print(summary_table(metrics, terms))
        print(f"artifacts: {run_dir}")
    return metrics


def evaluate_run(run_dir: str | os.PathLike) -> dict:
    """Re-evaluate a saved run on its test split (rebuilt from the saved config and seed)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir / "config.yaml")
    model = keras.saving.load_model(run_dir / "model.keras")
    splits = load_splits(cfg)
    metrics = evaluate_splits(model, {"test": prepare(splits.test, cfg, "test")}, cfg.train.batch_size)
    atomic.write_text(run_dir / "evaluation.json", json.dumps(metrics, indent=1))
    print(summary_table(metrics, model.loss.term_names))
    return metrics


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Redraw a run's figures from its history.json."""
    run_dir = Path(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    cfg = load_run_config(run_dir / "config.yaml")
    files = plot_history(history, [t.name for t in cfg.spec.resolve()], run_dir / "plots")
    for f in files:
        print(f)
    return files


def default_config_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("multiloss") / "configs" / "siamese_digits.yaml"))


__all__ = ["train", "evaluate_run", "plot_run", "np"]
