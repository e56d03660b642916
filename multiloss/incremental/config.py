"""The config of ``multiloss incremental CONFIG``: one class-incremental scenario.

Validated like the run config of ``multiloss train`` (whose ``data``,
``model`` and ``optimizer`` pieces it reuses): every problem is a
:class:`SpecError` naming the YAML path and line, or the ``--set`` override
it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import keras
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..config import DataConfig, ModelConfig, OptimizerConfig, _check_params, apply_overrides
from ..data import get_source
from ..errors import SpecError
from ..spec import _line_of, _pydantic_problems
from ..yamlio import Lines, dump_yaml, load_yaml, read_source
from .methods import Method, get_method
from .network import get_backbone


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioConfig(_Model):
    """Which classes arrive when."""

    order_seed: int = Field(1993, description="Class order: np.random.seed(order_seed); "
                                              "np.random.permutation(num_classes).")
    class_order: list[int] | None = Field(None, description="An explicit class order (overrides order_seed).")
    initial: int = Field(ge=1, description="Classes of the first step.")
    increment: int = Field(ge=1, description="Classes added by each later step.")
    steps: int | None = Field(None, ge=1, description="Stop after this many steps (default: all classes).")


class MemoryConfig(_Model):
    """The exemplar memory: a total ``budget`` shared by the seen classes, or ``per_class``."""

    budget: int | None = Field(None, ge=1, description="Exemplars in total, shared by the seen classes.")
    per_class: int | None = Field(None, ge=1, description="Exemplars of every class.")
    selection: Literal["herding", "random"] = "herding"

    @model_validator(mode="after")
    def _one_regime(self):
        if (self.budget is None) == (self.per_class is None):
            raise ValueError("give either `budget` (exemplars in total) or `per_class`, not both "
                             "and not neither")
        return self


class MethodConfig(_Model):
    name: str = Field(description="finetune | joint | lwf | icarl | eeil | wa")
    params: dict[str, Any] = Field(default_factory=dict)


class StepTrainConfig(_Model):
    epochs: int = Field(5, ge=1, description="Epochs of each step's training.")
    batch_size: int = Field(128, ge=1)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the learning rate decays to 0 over each training stage "
                                "(a fresh schedule per stage, as the fresh optimizer).")
    verbose: Literal[0, 1, 2] = 0


class IncrementalConfig(_Model):
    """One class-incremental scenario, run by ``multiloss incremental CONFIG``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, description="Data split, initialisation and shuffling.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(builder="cnn"),
                               description="The feature extractor: cnn, mlp or package.module:function.")
    scenario: ScenarioConfig
    memory: MemoryConfig | None = None
    method: MethodConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: StepTrainConfig = Field(default_factory=StepTrainConfig)
    output_dir: str = "runs"

    _lines: Lines = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr("<config>")
    _applied: dict = PrivateAttr(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def make_method(self) -> Method:
        return get_method(self.method.name)(**self.method.params)

    def error(self, problems: list[tuple[tuple, str]]) -> SpecError:
        """A SpecError for ``[(path, message)]`` with source lines (or the ``--set`` they came from)."""
        return _error(problems, self._lines, self._source, self._applied)

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json"))

    def fingerprint(self) -> dict:
        """What a resumed run must share with the run it continues."""
        return self.model_dump(mode="json", include={"seed", "data", "model", "scenario", "memory", "method",
                                                     "optimizer", "train"},
                               exclude={"train": {"verbose"}})


def _error(problems, lines: Lines, source: str, applied: dict) -> SpecError:
    out = []
    for p, m in problems:
        origin = next((t for k, t in applied.items() if tuple(p[: len(k)]) == k), None)
        out.append((p, None, f"{m} (from --set {origin})") if origin else (p, _line_of(lines, p), m))
    return SpecError(out, source)


def _optimizer_problems(opt: OptimizerConfig) -> list[tuple[tuple, str]]:
    problems = []
    names = {n.lower(): n for n in dir(keras.optimizers)
             if isinstance(getattr(keras.optimizers, n), type)
             and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)}
    if opt.name.lower() not in names:
        problems.append((("optimizer", "name"), f"unknown optimizer {opt.name!r}; valid: "
                                                f"{', '.join(sorted(names))}"))
    if opt.schedule is not None and not hasattr(keras.optimizers.schedules, opt.schedule.name):
        problems.append((("optimizer", "schedule", "name"), f"unknown schedule {opt.schedule.name!r}"))
    if not problems and opt.schedule is not None:
        try:
            getattr(keras.optimizers.schedules, opt.schedule.name)(**opt.schedule.params)
        except (TypeError, ValueError) as exc:
            problems.append((("optimizer", "schedule", "params"), str(exc)))
    if not problems:  # the parameters, by building one (cheap; Keras names what it does not know)
        try:
            make_optimizer(opt)
        except (TypeError, ValueError) as exc:
            problems.append((("optimizer", "params"), str(exc)))
    return problems


def make_optimizer(opt: OptimizerConfig, lr_scale: float = 1.0,
                   cosine_steps: int | None = None) -> keras.optimizers.Optimizer:
    """A fresh optimizer from the config; ``lr_scale`` multiplies its learning rate;
    ``cosine_steps``: the rate decays to 0 over that many steps (cosine)."""
    names = {n.lower(): n for n in dir(keras.optimizers)}
    cls = getattr(keras.optimizers, names[opt.name.lower()])
    params = dict(opt.params)
    if cosine_steps is not None:
        base = float(cls(**params).learning_rate) * lr_scale
        params["learning_rate"] = keras.optimizers.schedules.CosineDecay(base, max(1, int(cosine_steps)))
        return cls(**params)
    if opt.schedule is not None:
        sched = dict(opt.schedule.params)
        if lr_scale != 1.0:
            if "initial_learning_rate" not in sched:
                raise SpecError([(("optimizer", "schedule"), None, "a learning-rate scale needs the "
                                  "schedule's `initial_learning_rate` parameter")], "config")
            sched["initial_learning_rate"] = sched["initial_learning_rate"] * lr_scale
        params["learning_rate"] = getattr(keras.optimizers.schedules, opt.schedule.name)(**sched)
        return cls(**params)
    optimizer = cls(**params)
    if lr_scale != 1.0:
        optimizer.learning_rate = float(optimizer.learning_rate) * lr_scale
    return optimizer


def load_incremental_config(source: str | os.PathLike | dict,
                            overrides: list[str] | None = None) -> IncrementalConfig:
    """Load, override and validate an incremental config; raise SpecError naming path and line."""
    lines: Lines = {}
    if isinstance(source, dict):
        data, name = dict(source), "<dict>"
    else:
        text, name = read_source(source)
        data, lines = load_yaml(text, name)
    if not isinstance(data, dict):
        raise SpecError([((), 1, "an incremental config must be a mapping")], name)
    applied = apply_overrides(data, overrides or [], lines)

    try:
        cfg = IncrementalConfig.model_validate(data)
    except ValidationError as exc:
        raise _error(_pydantic_problems(exc), lines, name, applied) from None
    cfg._lines, cfg._source, cfg._applied = lines, name, applied
    problems: list[tuple[tuple, str]] = []
    try:
        _check_params(get_source(cfg.data.source), cfg.data.params, ("data", "params"), problems, skip=("seed",))
    except LookupError as exc:
        problems.append((("data", "source"), str(exc)))
    try:
        _check_params(get_backbone(cfg.model.builder), cfg.model.params, ("model", "params"), problems,
                      skip=("info",))
    except LookupError as exc:
        problems.append((("model", "builder"), str(exc)))
    problems += _optimizer_problems(cfg.optimizer)
    try:
        method_cls = get_method(cfg.method.name)
    except LookupError as exc:
        problems.append((("method", "name"), str(exc)))
    else:
        try:
            method_cls.Params(**cfg.method.params)
        except ValidationError as exc:
            problems += [(("method", "params") + p, m) for p, m in _pydantic_problems(exc)]
        if method_cls.replay and cfg.memory is None:
            problems.append((("method", "name"), f"method {method_cls.name!r} keeps exemplars: add "
                                                 "`memory: {budget: K}` or `memory: {per_class: m}`"))
    if cfg.train.lr_schedule != "constant" and cfg.optimizer.schedule is not None:
        problems.append((("train", "lr_schedule"), f"lr_schedule {cfg.train.lr_schedule!r} replaces "
                                                   "optimizer.schedule: give one of them"))
    order = cfg.scenario.class_order
    if order is not None and len(set(order)) != len(order):
        problems.append((("scenario", "class_order"), "class_order repeats a class"))
    if problems:
        raise cfg.error(problems)
    return cfg


__all__ = ["IncrementalConfig", "ScenarioConfig", "MemoryConfig", "MethodConfig", "StepTrainConfig",
           "load_incremental_config", "make_optimizer"]
