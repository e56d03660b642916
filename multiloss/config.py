"""The run config: what ``multiloss train CONFIG`` runs.

Validated like the loss spec: every problem is a :class:`SpecError` naming
the YAML path and line (or the ``--set`` override it came from).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .data import get_source
from .errors import SpecError
from .models import get_builder
from .spec import LossSpec, _line_of, _pydantic_problems, load_spec, spec_from_data
from .yamlio import Lines, dump_yaml, load_yaml, read_source


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Model):
    """A built-in source (``digits``, ``digits_pairs``, ``fashion_mnist``, ``fashion_mnist_pairs``,
    ``npz``) or ``package.module:function``."""

    source: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(_Model):
    """A built-in builder (``siamese_cnn``, ``multihead_cnn``, ``mlp``) or ``package.module:function``."""

    builder: str
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleConfig(_Model):
    """A ``keras.optimizers.schedules`` class, e.g. ``{name: CosineDecay, params: {decay_steps: 1000}}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Model):
    name: str = Field("adam", description="A Keras optimizer name: adam, sgd, rmsprop, adamw, ...")
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: ScheduleConfig | None = Field(None, description="Learning-rate schedule.")


class EarlyStoppingConfig(_Model):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=0)
    min_delta: float = 0.0
    restore_best_weights: bool = True


class CheckpointConfig(_Model):
    every: int = Field(1, ge=1, description="Checkpoint every N epochs (needed by --resume).")
    keep: int = Field(1, ge=1, description="How many checkpoints to keep.")


class CallbacksConfig(_Model):
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)


class TrainConfig(_Model):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    validation_split: float | None = Field(
        None, ge=0, lt=1, description="Fraction of the training data held out for validation "
        "(passed to the source as val_fraction); default: the source's own.")
    shuffle: bool = True
    jit_compile: bool = False
    verbose: Literal[0, 1, 2] = Field(1, description="1: a Keras progress bar per epoch; 2: one line per epoch.")
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)


class RunConfig(_Model):
    """One training run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    targets: dict[str, str] = Field(
        default_factory=dict, description="Model output (or term target) -> data target key; "
        "unlisted names map to themselves.")
    loss: dict[str, Any] | str = Field(description="An inline loss spec, or the path of a spec file.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    output_dir: str = "runs"

    _spec: LossSpec | None = None
    _base: Path = Path(".")

    @property
    def spec(self) -> LossSpec:
        return self._spec

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_yaml(self) -> str:
        """The resolved config, with the loss spec inlined in canonical form."""
        data = self.model_dump(mode="json")
        data["loss"] = self.spec.to_dict()
        return dump_yaml(data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); values are read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError([(("--set",), None, f"expected key.path=value, got {text!r}")], "--set")
    parsed, _ = load_yaml(value, f"--set {key}") if value.strip() else ("", {})
    return key.split("."), parsed


def apply_overrides(data: dict, overrides: list[str], lines: Lines) -> dict[tuple, str]:
    """Set each ``key.path=value`` in ``data``; return {path: override text}."""
    applied = {}
    for text in overrides:
        path, value = parse_override(text)
        applied[tuple(path)] = text
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        lines.pop(tuple(path), None)
    return applied


def _check_params(fn, params: dict, path: tuple, problems: list, skip: tuple = ()) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [n for n in sig.parameters if n not in skip]
    for key in params:
        if key not in valid:
            problems.append((path + (key,), f"unknown parameter {key!r}; valid: {', '.join(valid)}"))


def load_run_config(source: str | os.PathLike | dict, overrides: list[str] | None = None) -> RunConfig:
    """Load, override and validate a run config; raise SpecError naming path and line."""
    lines: Lines = {}
    base = Path(".")
    if isinstance(source, dict):
        data, name = dict(source), "<dict>"
    else:
        text, name = read_source(source)
        data, lines = load_yaml(text, name)
        if name != "<string>":
            base = Path(name).parent
    if not isinstance(data, dict):
        raise SpecError([((), 1, "a run config must be a mapping")], name)
    applied = apply_overrides(data, overrides or [], lines)

    def fail(problems):
        out = []
        for p, m in problems:
            origin = next((t for k, t in applied.items() if tuple(p[: len(k)]) == k), None)
            out.append((p, None, f"{m} (from --set {origin})") if origin else (p, _line_of(lines, p), m))
        raise SpecError(out, name)

    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        fail(_pydantic_problems(exc))
    problems: list[tuple[tuple, str]] = []
    try:
        source_fn = get_source(cfg.data.source)
        _check_params(source_fn, cfg.data.params, ("data", "params"), problems, skip=("seed",))
    except LookupError as exc:
        problems.append((("data", "source"), str(exc)))
    try:
        builder = get_builder(cfg.model.builder)
        _check_params(builder, cfg.model.params, ("model", "params"), problems, skip=("info",))
    except LookupError as exc:
        problems.append((("model", "builder"), str(exc)))
    import keras

    # Looked up without instantiating: a multi-worker strategy must be created
    # before TensorFlow's runtime starts.
    optimizers = {n.lower(): n for n in dir(keras.optimizers)
                  if isinstance(getattr(keras.optimizers, n), type)
                  and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)}
    if cfg.optimizer.name.lower() not in optimizers:
        problems.append((("optimizer", "name"), f"unknown optimizer {cfg.optimizer.name!r}; valid: "
                                                f"{', '.join(sorted(optimizers))}"))
    sched = cfg.optimizer.schedule
    if sched is not None and not hasattr(keras.optimizers.schedules, sched.name):
        names = [n for n in dir(keras.optimizers.schedules) if n[0].isupper() and n != "LearningRateSchedule"]
        problems.append((("optimizer", "schedule", "name"),
                         f"unknown schedule {sched.name!r}; valid: {', '.join(names)}"))
    try:
        if isinstance(cfg.loss, str):
            path = Path(cfg.loss)
            cfg._spec = load_spec(path if path.is_absolute() or path.exists() else base / path)
        else:
            cfg._spec = spec_from_data(cfg.loss, lines, name, prefix=("loss",))
    except SpecError as exc:
        if isinstance(cfg.loss, str) or not problems:
            raise
        problems += [(p, m) for p, _, m in exc.problems]
    if problems:
        fail(problems)
    cfg._base = base
    return cfg
