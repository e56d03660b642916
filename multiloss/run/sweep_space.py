"""The search space of a sweep: the search specs, paths into plain config data, and the draws.

Search specs: ``{log_uniform: [low, high]}``, ``{uniform: [low, high], step: s}``,
``{int: [low, high]}``, ``{choice: [a, b, ...]}`` (an option may hold search specs of its own,
drawn only when it is chosen: a strategy with its params) and, under a name of its own,
``{simplex: [path, path, ...], total: 1}`` (weights ≥ 0 that sum to ``total``, uniform on the
simplex: independent exponential variables, normalised).  A path goes through mappings by key and
through lists by index or by an item's ``name`` (``loss.terms.contrastive.weight``).

The draws ask an Optuna trial (``suggest_float``, ``suggest_int``, ``suggest_categorical``), or
anything with those methods (:class:`FixedPick`, which checks the corners of a space).
No TensorFlow, no Optuna import here.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ..spec.configfile import list_item
from ..spec.validation import Problems, expand_shorthand, pydantic_problems, unknown_key

KINDS = ("log_uniform", "uniform", "int", "choice", "simplex")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ordered(bounds: tuple, kind: str) -> tuple:
    if not bounds[0] < bounds[1]:
        raise ValueError(f"{kind}: give [low, high] with low < high, got [{bounds[0]}, {bounds[1]}]")
    return bounds


def _on_grid(low, high, step, kind: str) -> None:
    """``high`` is ``low`` plus a whole number (≥ 1) of ``step``s: Optuna would otherwise move ``high``
    down to the grid, and a step past the range leaves only ``low`` to draw."""
    count = (high - low) / step
    whole = math.floor(count + 1e-9)
    if whole < 1:
        raise ValueError(f"{kind}: step {step} is larger than the range [{low}, {high}], so every draw "
                         f"would be {low}; give a step of at most {high - low:g}")
    if abs(count - round(count)) > 1e-9 * max(1.0, count):
        fit = low + whole * step
        raise ValueError(f"{kind}: the range [{low}, {high}] is not a whole number of steps {step}; give "
                         f"high {fit:g} (low + {whole}·step) or a step that divides {high - low:g}")


class LogUniform(_Model):
    """``{log_uniform: [low, high]}``: a float drawn uniformly in log space (weights, learning rates)."""

    log_uniform: tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)],
                       Annotated[float, Field(gt=0, allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.log_uniform, "log_uniform")
        return self


class Uniform(_Model):
    """``{uniform: [low, high]}``, optionally on a grid of ``step``."""

    uniform: tuple[Annotated[float, Field(allow_inf_nan=False)], Annotated[float, Field(allow_inf_nan=False)]]
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.uniform, "uniform")
        if self.step is not None:
            _on_grid(*self.uniform, self.step, "uniform")
        return self


class IntRange(_Model):
    """``{int: [low, high]}``: an integer, both ends included (``log: true`` for a log scale)."""

    int: tuple[int, int]
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        _ordered(self.int, "int")
        low, high = self.int
        if self.log and low < 1:
            raise ValueError(f"int with log: true needs low ≥ 1 (a log scale has no 0), got [{low}, {high}]")
        if self.log and self.step != 1:
            raise ValueError(f"int with log: true takes no step (Optuna draws every integer on a log "
                             f"scale), got step {self.step}")
        _on_grid(low, high, self.step, "int")
        return self


class Choice(_Model):
    """``{choice: [a, b, ...]}``: one of the options; an option may hold search specs of its own."""

    choice: list[Any] = Field(min_length=1)


class Simplex(_Model):
    """``{simplex: [path, ...], total: 1}``: weights on the simplex, under a name of the sweep's own."""

    simplex: list[str] = Field(min_length=2)
    total: float = Field(1.0, gt=0, allow_inf_nan=False)


def _kind_tag(value: Any) -> str | None:
    """The union's tag of a search spec: ``spec[kind]`` (a ``[`` keeps it out of error paths, which
    would otherwise name the kind twice: ``...log_uniform.log_uniform.0``)."""
    if isinstance(value, BaseModel):
        kind = TAGS.get(type(value))
        return None if kind is None else f"spec[{kind}]"
    if isinstance(value, dict):
        found = [k for k in KINDS if k in value]
        if len(found) == 1:
            return f"spec[{found[0]}]"
    return None


TAGS = {LogUniform: "log_uniform", Uniform: "uniform", IntRange: "int", Choice: "choice", Simplex: "simplex"}
SPEC_HINT = ("expected a search spec: {log_uniform: [low, high]}, {uniform: [low, high]}, {int: [low, high]}, "
             "{choice: [a, b, ...]} or {simplex: [path, path, ...]}")
Param = Annotated[
    Union[Annotated[LogUniform, Tag("spec[log_uniform]")], Annotated[Uniform, Tag("spec[uniform]")],
          Annotated[IntRange, Tag("spec[int]")], Annotated[Choice, Tag("spec[choice]")], Annotated[Simplex, Tag("spec[simplex]")]],
    Discriminator(_kind_tag, custom_error_type="search_spec", custom_error_message=SPEC_HINT),
]
PARAM = TypeAdapter(Param)


def nested_specs(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path inside value, spec data)`` of each search spec an option of a choice holds."""
    if _kind_tag(value) is not None:
        return [(path, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in nested_specs(v, (*path, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in nested_specs(v, (*path, i))]
    return []


def choice_problems(spec: Choice, where: tuple) -> Problems:
    """Nested search specs inside a choice's options: each must be valid (simplexes are not allowed there)."""
    problems: Problems = []
    for i, option in enumerate(spec.choice):
        for inner, data in nested_specs(option):
            at = (*where, "choice", i, *inner)
            try:
                nested = PARAM.validate_python(data)
            except ValidationError as exc:
                problems += [((*at, *p), m) for p, m in pydantic_problems(exc)]
                continue
            if isinstance(nested, Simplex):
                problems.append((at, "a simplex cannot sit inside a choice; give it its own entry in space"))
            elif isinstance(nested, Choice):
                problems += choice_problems(nested, at)
    return problems


def locate(data: dict, parts: list[str], barrier: tuple = ()) -> tuple[list, tuple]:
    """``(concrete path, override root)`` of a dotted path in plain config data.

    The root is what one ``--set`` gives a value: the path itself, or the part up to the first list
    (the whole list is set, so the trial's config shows it whole) or up to the ``barrier`` key.  A missing
    key is created (as ``--set`` creates it), except in a mapping of named mappings (``loss.outputs``,
    ``model.params.heads``), where it must name one of them: KeyError says which keys there are.
    """
    node, concrete, root = data, [], None
    for i, part in enumerate(parts):
        if root is None and (isinstance(node, list) or (barrier and tuple(concrete) == barrier)):
            root = tuple(concrete)
        if node is None:
            node = {}
        if isinstance(node, list):
            key: Any = list_item(node, part)
        elif isinstance(node, dict):
            named = bool(node) and all(isinstance(v, dict) for v in node.values())
            if part not in node and named and i < len(parts) - 1:
                where = ".".join(map(str, concrete)) or "the top"
                raise KeyError(f"the run config has no {part!r} in {where}; "
                               + unknown_key(part, [str(k) for k in node]).split("; ", 1)[1])
            key = part
        else:
            raise KeyError(f"{'.'.join(map(str, concrete))} is {type(node).__name__} {node!r} in the run config, "
                           "not a mapping or a list, so nothing can be set inside it")
        concrete.append(key)
        node = expand_shorthand(key, node.get(key) if isinstance(node, dict) else node[key])
    return concrete, root if root is not None else tuple(concrete)


def get(data: Any, parts) -> Any:
    for part in parts:
        data = data[part]
    return data


def put(data: Any, parts: list, value: Any) -> None:
    """Set ``value`` at a concrete path, creating missing mappings on the way (a shorthand's as its mapping)."""
    for part in parts[:-1]:
        if isinstance(data, dict):
            child = expand_shorthand(part, data.get(part))      # `weighting: dwa`: {strategy: dwa, ...}
            data[part] = child if isinstance(child, (dict, list)) else {}
        data = data[part]
    data[parts[-1]] = value


def simplex_weights(draws: list[float], total: float) -> list[float]:
    """Independent uniform draws in [0, 1] -> weights uniform on the simplex of sum ``total``
    (exponential variables normalised: a flat Dirichlet)."""
    e = [-math.log(max(1.0 - u, 1e-300)) for u in draws]
    s = sum(e)
    return [total / len(e)] * len(e) if s == 0 else [total * x / s for x in e]


def short_name(path: str) -> str:
    """What a path is called in tables and labels: its last part, or the one before a final ``weight``."""
    parts = path.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] == "weight" else parts[-1]


def choice_labels(options: list) -> list:
    """What Optuna records for each option: the option itself when all are plain scalars, else a name
    (a ``strategy``'s or an item's ``name``), else the option as JSON."""
    if all(o is None or isinstance(o, (bool, int, float, str)) for o in options) and \
            len({repr(o) for o in options}) == len(options):
        return list(options)
    labels = [o.get("strategy", o.get("name")) if isinstance(o, dict) else None for o in options]
    labels = [lab if isinstance(lab, str) else json.dumps(o, sort_keys=True) for lab, o in zip(labels, options)]
    return labels if len(set(labels)) == len(labels) else [str(i) for i in range(len(options))]


def draw(trial, name: str, spec) -> Any:
    """One value of ``spec`` from ``trial`` (an Optuna trial, or anything with its ``suggest_*``)."""
    if isinstance(spec, LogUniform):
        return trial.suggest_float(name, *spec.log_uniform, log=True)
    if isinstance(spec, Uniform):
        return trial.suggest_float(name, *spec.uniform, step=spec.step)
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, *spec.int, step=spec.step, log=spec.log)
    if isinstance(spec, Choice):
        labels = choice_labels(spec.choice)
        label = trial.suggest_categorical(name, labels)
        return fill(trial, f"{name}[{label}]", spec.choice[labels.index(label)])
    raise TypeError(f"no draw for {type(spec).__name__}")


def fill(trial, name: str, value: Any) -> Any:
    """``value`` with each search spec inside it replaced by a draw (named by its path under ``name``)."""
    found = nested_specs(value)
    if not found:
        return value
    if found == [((), value)]:
        return draw(trial, name, PARAM.validate_python(value))
    if isinstance(value, dict):
        return {k: fill(trial, f"{name}.{k}", v) for k, v in value.items()}
    return [fill(trial, f"{name}.{i}", v) for i, v in enumerate(value)]


def sample(trial, space: dict) -> dict[str, Any]:
    """The values of one trial: ``{config path: value}`` (a simplex gives one value per member path)."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, Simplex):
            draws = [trial.suggest_float(f"{key}.{short_name(p)}", 0.0, 1.0) for p in spec.simplex]
            values.update(zip(spec.simplex, simplex_weights(draws, spec.total)))
        else:
            values[key] = draw(trial, key, spec)
    return values


class FixedPick:
    """Stands in for an Optuna trial: the low end of every range, option ``i`` (or the last) of every choice."""

    def __init__(self, i: int):
        self.i = i

    def suggest_float(self, name, low, high, **kwargs):
        return float(low)

    def suggest_int(self, name, low, high, **kwargs):
        return int(low)

    def suggest_categorical(self, name, choices):
        return choices[min(self.i, len(choices) - 1)]


__all__ = ["Choice", "FixedPick", "IntRange", "KINDS", "LogUniform", "PARAM", "Param", "Simplex", "Uniform",
           "choice_labels", "choice_problems", "draw", "fill", "get", "locate", "nested_specs", "put", "sample",
           "short_name", "simplex_weights"]
