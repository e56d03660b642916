"""The one optimizer builder: ``optimizer:`` of any run config to a Keras optimizer.

Parameters are checked against the optimizer's (and the schedule's) own
signature before anything is built, so a misspelt ``learnin_rate`` is named
with a did-you-mean rather than failing inside Keras.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..spec.errors import SpecError
from ..spec.validation import Problems, check_params, did_you_mean

_SKIP = {"Optimizer", "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"}  # wrap other optimizers


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScheduleConfig(_Model):
    """A ``keras.optimizers.schedules`` class, e.g. ``{name: CosineDecay, params: {decay_steps: 1000}}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Model):
    name: str = Field("adam", description="A Keras optimizer name: adam, sgd, rmsprop, adamw, ...")
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: ScheduleConfig | None = Field(None, description="Learning-rate schedule.")


def optimizers() -> dict[str, type]:
    """Keras's optimizers by lower-case name."""
    import keras

    out = {}
    for n in dir(keras.optimizers):
        cls = getattr(keras.optimizers, n)
        if n not in _SKIP and isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer):
            out[n.lower()] = cls
    return out


def schedules() -> dict[str, type]:
    import keras

    return {n: getattr(keras.optimizers.schedules, n) for n in dir(keras.optimizers.schedules)
            if n[0].isupper() and n != "LearningRateSchedule"}


def _optimizer_params(cls: type) -> list[str]:
    """Every keyword an optimizer accepts: its own and those of Keras's base optimizer."""
    import inspect

    import keras

    names = []
    for fn in (cls.__init__, keras.optimizers.Optimizer.__init__):
        names += [n for n, p in inspect.signature(fn).parameters.items()
                  if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return list(dict.fromkeys(names))


def _positive(value: Any, path: tuple, problems: Problems, what: str = "learning rate") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append((path, f"the {what} must be a number, got {value!r}"))
    elif not math.isfinite(value) or value <= 0:
        problems.append((path, f"the {what} must be a finite number > 0, got {value!r}"))


def optimizer_problems(cfg: OptimizerConfig, path: tuple = ("optimizer",), build: bool = False) -> Problems:
    """Every problem of an ``optimizer:`` block.

    ``build``: also build one to catch values Keras refuses (this starts
    TensorFlow's runtime, which a multi-worker strategy must precede).
    """
    problems: Problems = []
    known = optimizers()
    cls = known.get(cfg.name.lower())
    if cls is None:
        problems.append((path + ("name",), f"unknown optimizer {cfg.name!r}; {did_you_mean(cfg.name, known)}"
                                           f"valid: {', '.join(sorted(known))}"))
    else:
        problems += check_params(cls, cfg.params, path + ("params",), valid=_optimizer_params(cls))
        if "learning_rate" in cfg.params:
            if cfg.schedule is not None:
                problems.append((path + ("params", "learning_rate"),
                                 "give either params.learning_rate or a schedule, not both"))
            else:
                _positive(cfg.params["learning_rate"], path + ("params", "learning_rate"), problems)
    if cfg.schedule is not None:
        known_s = schedules()
        scls = known_s.get(cfg.schedule.name)
        spath = path + ("schedule",)
        if scls is None:
            problems.append((spath + ("name",), f"unknown schedule {cfg.schedule.name!r}; "
                                                f"{did_you_mean(cfg.schedule.name, known_s)}"
                                                f"valid: {', '.join(known_s)}"))
        else:
            problems += check_params(scls, cfg.schedule.params, spath + ("params",), skip=("self",))
            for key in ("initial_learning_rate", "decay_steps"):
                if key in cfg.schedule.params:
                    _positive(cfg.schedule.params[key], spath + ("params", key), problems, key.replace("_", " "))
    if build and not problems:   # values Keras itself refuses
        try:
            build_optimizer(cfg)
        except (TypeError, ValueError) as exc:
            where = path + (("schedule", "params") if cfg.schedule is not None else ("params",))
            problems.append((where, f"Keras refused it: {exc}"))
    return problems


def build_optimizer(cfg: OptimizerConfig, lr_scale: float = 1.0, cosine_steps: int | None = None):
    """A fresh Keras optimizer for ``cfg``.

    ``lr_scale`` multiplies the learning rate; ``cosine_steps`` replaces it by a
    cosine decay to 0 over that many steps (starting from the scaled rate).
    """
    import keras

    cls = optimizers()[cfg.name.lower()]
    params = dict(cfg.params)
    if cosine_steps is not None:
        base = float(cls(**params).learning_rate) * lr_scale
        params["learning_rate"] = keras.optimizers.schedules.CosineDecay(base, max(1, int(cosine_steps)))
        return cls(**params)
    if cfg.schedule is not None:
        sched = dict(cfg.schedule.params)
        if lr_scale != 1.0:
            if "initial_learning_rate" not in sched:
                raise SpecError([(("optimizer", "schedule"), None, "a learning-rate scale needs the "
                                  "schedule's `initial_learning_rate` parameter")], "config")
            sched["initial_learning_rate"] = sched["initial_learning_rate"] * lr_scale
        params["learning_rate"] = schedules()[cfg.schedule.name](**sched)
        return cls(**params)
    optimizer = cls(**params)
    if lr_scale != 1.0:
        optimizer.learning_rate = float(optimizer.learning_rate) * lr_scale
    return optimizer


__all__ = ["OptimizerConfig", "ScheduleConfig", "optimizers", "schedules", "optimizer_problems",
           "build_optimizer"]
