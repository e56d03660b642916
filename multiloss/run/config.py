"""The run config: what ``multiloss train CONFIG`` runs.

Validated like the loss spec: every problem is a :class:`SpecError` naming
the YAML path and line (or the ``--set`` override it came from).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..core.guard import MODES
from ..spec.configfile import ConfigFile, read_config, validate_rest
from ..spec.errors import SpecError
from ..spec.loss_spec import LossSpec, load_spec, metric_log_name, spec_from_data
from ..spec.validation import Integer, Problems, check_params, did_you_mean
from ..spec.yamlio import dump_yaml
from .augment import AugmentList
from .data import Splits, get_source
from .models import get_builder
from .monitor import Mode, resolve_mode
from .optim import OptimizerConfig, ScheduleConfig, optimizer_problems
from .precision import Precision
from .tasks import label_targets, sampler_kind, sampler_problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Model):
    """A built-in source (``digits``, ``digits_pairs``, ``fashion_mnist``, ``fashion_mnist_pairs``,
    ``npz``) or ``package.module:function``."""

    source: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(_Model):
    """One task of ``tasks:``: its own data source and the labels (targets or terms) it carries."""

    data: DataConfig
    labels: list[str] | None = Field(
        None, description="The targets (heads, cross-output terms' targets) or terms whose labels this task's "
                          "data carries; default: the task's name.")


class ModelConfig(_Model):
    """A built-in builder (``siamese_cnn``, ``multihead_cnn``, ``mlp``) or ``package.module:function``."""

    builder: str
    params: dict[str, Any] = Field(default_factory=dict)


class EarlyStoppingConfig(_Model):
    """Early stopping and the best epoch's model (``best.keras``); see :mod:`multiloss.run.selection`."""

    monitor: str | dict[str, Mode] = Field(
        "val_loss", description="Any key the run logs (loss, <term>_loss, <head>_<metric>, each also with "
                                "val_), or several as {key: mode}: their delta_m (Δm%, lower is better) is "
                                "monitored.")
    mode: Mode = Field("auto", description="auto: min for losses and errors, max for accuracy, AUC and the "
                                           "like; give min or max for any other key.")
    baselines: dict[str, float] | None = Field(
        None, description="For several keys: each key's single-task baseline for delta_m; default: its "
                          "first-epoch value.")
    patience: Integer = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="The least change that counts as an improvement (≥ 0).")
    restore_best_weights: bool = True


class CheckpointConfig(_Model):
    every: Integer = Field(1, ge=1, description="Checkpoint every N epochs (needed by --resume).")
    keep: Integer = Field(1, ge=1, description="How many checkpoints to keep.")


class CallbacksConfig(_Model):
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)


class TrainConfig(_Model):
    epochs: Integer = Field(10, ge=1)
    batch_size: Integer = Field(64, ge=1)
    validation_split: float | None = Field(
        None, ge=0, lt=1, description="Fraction of the training data held out for validation "
        "(passed to the source as val_fraction); default: the source's own.")
    shuffle: bool = True
    jit_compile: bool = False
    precision: Precision = Field(
        "float32", description="Keras's dtype policy for the run: mixed_float16 (loss scaling: an overflow "
                               "skips its step and lowers the scale, as in Keras) or mixed_bfloat16.")
    verbose: Literal[0, 1, 2] = Field(1, description="1: a Keras progress bar per epoch; 2: one line per epoch.")
    nonfinite: Literal[MODES] = Field(
        "stop", description="A NaN/Inf in a term, the total or a gradient: stop (exit status 3, last "
                            "checkpoint intact) or skip that batch (counted and reported).")
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    steps_per_epoch: Integer | None = Field(
        None, ge=1, description="With tasks: the training steps of an epoch; default: the sum of the tasks' "
                                "batches (see multiloss.run.tasks).")
    augment: AugmentList = Field(
        default_factory=list, description="Keras random preprocessing layers applied to training batches only, "
                                          "e.g. [{random_flip: {mode: horizontal}}]; see multiloss.run.augment.")


def sampler_form(value: Any) -> Any:
    """``sampler:`` as given when it is a name or a mapping (checked with the tasks later); anything
    else (null, a list, a number) is refused saying which forms are valid."""
    if not isinstance(value, (str, dict)):
        sampler_kind(value)   # raises: what a sampler can be
    return value


class RunConfig(_Model):
    """One training run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: Integer = 0
    data: DataConfig | None = None
    tasks: dict[str, TaskConfig] | None = Field(
        None, description="One data source per task (instead of data), interleaved by the sampler; see "
                          "multiloss.run.tasks.")
    sampler: Annotated[str | dict[str, Any], BeforeValidator(sampler_form)] = Field(
        "round_robin", description="With tasks: round_robin, proportional (to the tasks' sizes) or "
                                   "{weighted: {<task>: <weight>}}.")
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
    _file: ConfigFile = ConfigFile()

    @property
    def spec(self) -> LossSpec:
        return self._spec

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def error(self, problems: Problems) -> SpecError:
        """A SpecError for ``[(path, message)]`` with source lines (or the ``--set`` they came from)."""
        return self._file.error(problems)

    def fingerprint(self) -> dict:
        """What a resumed run must share with the run it continues (all but epochs and reporting)."""
        skip = {"name": True, "output_dir": True, "distribute": True, "loss": True,
                "train": {"epochs", "verbose", "nonfinite", "callbacks"}}
        data = self._without_tasks(self.model_dump(mode="json", exclude=skip))  # older runs still resume
        if not data["train"].get("augment"):
            data["train"].pop("augment", None)     # runs saved before `augment` existed still resume
        data["loss"] = self.spec.to_dict()
        return data

    def _without_tasks(self, data: dict) -> dict:
        """``data`` (a dump) without the keys of ``tasks`` when the run has none."""
        if self.tasks is None:
            for key in ("tasks", "sampler"):
                data.pop(key, None)
            data["train"].pop("steps_per_epoch", None)
        else:
            data.pop("data", None)
        return data

    def to_yaml(self) -> str:
        """The resolved config, with the loss spec inlined in canonical form."""
        data = self._without_tasks(self.model_dump(mode="json"))
        data["loss"] = self.spec.to_dict()
        return dump_yaml(data)


def component_problems(cfg, get_model=get_builder) -> Problems:
    """Problems of the ``data``, ``model`` and ``optimizer`` blocks every run config shares.

    ``get_model`` looks up ``model.builder`` (model builders; incremental runs: backbones).
    """
    problems: Problems = []
    tasks = getattr(cfg, "tasks", None)
    blocks = [(("data",), cfg.data)] if cfg.data is not None else []
    blocks += [(("tasks", name, "data"), t.data) for name, t in (tasks or {}).items()]
    for where, data in blocks:
        try:
            problems += check_params(get_source(data.source), data.params, (*where, "params"), skip=("seed",))
        except LookupError as exc:
            problems.append(((*where, "source"), str(exc)))
    try:
        problems += check_params(get_model(cfg.model.builder), cfg.model.params, ("model", "params"),
                                 skip=("info",))
    except LookupError as exc:
        problems.append((("model", "builder"), str(exc)))
    problems += optimizer_problems(cfg.optimizer)
    return problems


def load_data(cfg, data: DataConfig | None = None, where: tuple = ("data",), **params):
    """The splits of ``data`` (default: ``cfg.data``, any run config); a source that fails is named at ``where``,
    or at ``train.validation_split`` when the ``val_fraction`` that gives is at fault."""
    data = cfg.data if data is None else data
    try:
        splits = get_source(data.source)(seed=cfg.seed, **{**data.params, **params})
    except SpecError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
        if "val_fraction" in params and reason.startswith("data.params.val_fraction"):
            where = ("train", "validation_split")
            reason = "it is the source's val_fraction, and " + reason.removeprefix("data.params.val_fraction: ")
        raise cfg.error([(where, f"data source {data.source!r} failed: {reason}")]) from None
    empty = splits.empty() if isinstance(splits, Splits) else []
    if empty:
        raise cfg.error([(where, f"data source {data.source!r} gave no examples in its {', '.join(empty)} "
                                 f"split{'s' if len(empty) > 1 else ''} (params: {dict(data.params, **params)}); "
                                 "give it more data, or params that draw some")])
    return splits


def data_problems(cfg: RunConfig) -> Problems:
    """``data`` or ``tasks`` (one of them), and what goes with tasks only."""
    if cfg.tasks is None:
        problems = [] if cfg.data is not None else [(("data",), "give data: (one source for every target) or "
                                                               "tasks: (one source per task)")]
        if cfg.train.steps_per_epoch is not None:
            problems.append((("train", "steps_per_epoch"), "is for tasks: only (an epoch of data: is one pass "
                                                           "over its train split)"))
        if cfg.sampler != "round_robin":
            problems.append((("sampler",), "is for tasks: only; give tasks: {<task>: {data: ...}}"))
        return problems
    if cfg.data is not None:
        return [(("tasks",), "give data: or tasks:, not both")]
    if not cfg.tasks:
        return [(("tasks",), "give at least one task: tasks: {<task>: {data: {source: ...}}}")]
    return sampler_problems(cfg.sampler, list(cfg.tasks))


def logged_keys(cfg: RunConfig) -> list[str]:
    """The keys a run logs each epoch: the total, each term's loss and weight, each head's metrics; then
    the same with ``val_``."""
    keys = ["loss"] + [f"{t.name}_{what}" for t in cfg.spec.resolve() for what in ("loss", "weight")]
    keys += [f"{head}_{metric_log_name(m)}" for head, ms in cfg.spec.head_metrics().items() for m in ms]
    return keys + [f"val_{k}" for k in keys]


def early_stopping_problems(cfg: RunConfig) -> Problems:
    """The monitored keys must be ones the run logs, each with a mode; baselines only for several keys."""
    es = cfg.train.callbacks.early_stopping
    if es is None:
        return []
    valid = logged_keys(cfg)
    where = ("train", "callbacks", "early_stopping")
    several = not isinstance(es.monitor, str)
    monitors = dict(es.monitor) if several else {es.monitor: es.mode}
    problems: Problems = []
    if several and len(monitors) < 2:
        problems.append(((*where, "monitor"), "give one key as a string, or two or more as {key: mode}"))
    for key, mode in monitors.items():
        path = (*where, "monitor", key) if several else (*where, "monitor")
        if key not in valid:
            problems.append((path, f"{key!r} is not a logged key; {did_you_mean(key, valid)}"
                                   f"valid: {', '.join(valid)}"))
        elif resolve_mode(key, mode) is None:
            problems.append((path if several else (*where, "mode"),
                             f"mode auto cannot tell whether {key!r} is better lower or higher; "
                             + (f"write {key}: min or {key}: max" if several else "give mode: min or mode: max")))
    if several and es.mode != "auto":
        problems.append(((*where, "mode"), "with several keys each key has its own mode and delta_m is "
                                           "minimised; leave mode out"))
    if es.baselines is not None:
        if not several:
            problems.append(((*where, "baselines"), "baselines are for a monitor of several keys (delta_m)"))
        elif set(es.baselines) != set(monitors):
            problems.append(((*where, "baselines"), f"give one baseline for each monitored key: "
                                                    f"{', '.join(monitors)}; got {', '.join(es.baselines)}"))
        else:
            problems += [((*where, "baselines", k), "a baseline of 0 makes the relative change undefined")
                         for k, v in es.baselines.items() if v == 0]
    return problems


def load_run_config(source: str | os.PathLike | dict, overrides: list[str] | None = None) -> RunConfig:
    """Load, override and validate a run config; raise SpecError naming path and line."""
    data, cf = read_config(source, overrides, "run config")
    cfg, problems = validate_rest(RunConfig, data, cf)
    problems += component_problems(cfg)
    spec_file = cf.resolve_path(cfg.loss) if isinstance(cfg.loss, str) else None
    try:
        if spec_file is None:
            cfg._spec = spec_from_data(cfg.loss, cf.lines, cf.name, prefix=("loss",), file=cf)
        elif not spec_file.is_file():
            problems.append((("loss",), f"the loss spec file {spec_file} does not exist; give a spec file "
                                        "(relative to the working folder or to this config) or an inline "
                                        "spec"))
        else:
            cfg._spec = load_spec(spec_file)
    except SpecError as exc:
        if spec_file is not None:
            raise
        problems += [(p, m) for p, _, m in exc.problems]
    problems += data_problems(cfg)
    if cfg._spec is not None:     # not about a monitor the schema refused (validate_rest left it out)
        monitor = ("train", "callbacks", "early_stopping", "monitor")
        refused = any(p[:4] == monitor for p, _ in problems)
        problems += [(p, m) for p, m in early_stopping_problems(cfg) if not (refused and p[:4] == monitor)]
        if cfg.tasks:
            problems += label_targets(cfg)[1]
    if problems:
        raise cf.error(problems)
    cfg._file = cf
    return cfg


__all__ = ["logged_keys", "RunConfig", "DataConfig", "TaskConfig", "data_problems", "ModelConfig", "OptimizerConfig", "ScheduleConfig", "TrainConfig",
           "load_run_config", "component_problems", "load_data", "ConfigFile"]
