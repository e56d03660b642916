"""The sweep file: what ``multiloss sweep SWEEP.yaml`` searches, and how a trial's run config is made.

A sweep file names a run config (``run:``, relative to the sweep file), a search space over any of
its config paths, the objectives (logged keys with a direction), the number of trials, pruning,
the sampler and the storage of the Optuna study::

    name: siamese_weights
    run: siamese_digits.yaml
    trials: 16
    objectives: {val_bin_out_accuracy: max, val_contrastive_loss: min}
    space:
      loss.outputs.bin_out.weight: {log_uniform: [0.05, 5]}
      loss.terms.contrastive.weight: {log_uniform: [0.01, 1]}

The search specs are :mod:`multiloss.run.sweep_space`'s.

A trial's run config is the run config with ``--set`` overrides (the sweep's ``set:`` list, then
the sampled values), exactly what ``multiloss train RUN --set ...`` reads: its errors name the
override they came from.  This module imports no TensorFlow; checking the sampled run configs
(:func:`load_sweep`) imports the run layer when it is called.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..spec.configfile import ConfigFile, read_config, validate_rest
from ..spec.errors import SpecError
from ..spec.validation import SWEEP_SHORTHANDS, Integer, Problems, did_you_mean, shorthand, unknown_key
from ..spec.yamlio import dump_yaml
from .monitor import Mode, resolve_mode
from .sweep_space import (
    KINDS,
    SPEC_HINT,
    Choice,
    FixedPick,
    Param,
    Simplex,
    choice_labels,
    choice_problems,
    get,
    locate,
    put,
    sample,
)

#: The keys a run config has at its top level (a sampled path must start with one of them).
RUN_KEYS = ("seed", "data", "model", "targets", "loss", "optimizer", "train", "distribute")
#: Keys the sweep sets in every trial itself.
SWEEP_SETS = ("name", "output_dir")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruningConfig(_Model):
    """Median pruning of a one-objective sweep on the objective's per-epoch values (Optuna's MedianPruner)."""

    enabled: bool = True
    startup_trials: Integer = Field(5, ge=0, description="Trials that are never pruned, to learn the median from.")
    warmup_epochs: Integer = Field(1, ge=0, description="Epochs of each trial that are never pruned.")


class SamplerConfig(_Model):
    """Optuna's sampler: auto (TPE for one objective, NSGA-II for several), tpe, nsga2 or random."""

    name: Literal["auto", "tpe", "nsga2", "random"] = "auto"
    params: dict[str, Any] = Field(default_factory=dict, description="The sampler's keyword arguments.")


class StorageConfig(_Model):
    """Where the study lives: ``storage: URL`` (any SQLAlchemy URL Optuna accepts) or ``{journal: FILE}``
    (Optuna's journal file storage, relative to the sweep file)."""

    url: str | None = None
    journal: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if self.url is not None and self.journal is not None:
            raise ValueError(f"give a SQLAlchemy URL or a journal file, not both: the URL {self.url!r} and the "
                             f"journal {self.journal!r} (a --set storage.journal=... over `storage: URL` keeps "
                             "the URL; give --set 'storage={journal: FILE}')")
        if self.url is None and self.journal is None:
            raise ValueError("give a SQLAlchemy URL (storage: postgresql://...) or a journal file "
                             "(storage: {journal: study.journal})")
        return self


class SweepConfig(_Model):
    """A sweep: a run config, a search space over its paths, objectives and a number of trials."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="The sweep folder: output_dir/name.")
    run: str = Field(description="The run config every trial starts from (relative to the sweep file).")
    set: list[str] = Field(default_factory=list, description="--set overrides of the run config for every "
                                                             "trial, e.g. train.epochs=3.")
    objectives: dict[str, Mode] = Field(min_length=1, description="Logged keys (train or val_), each "
                                        "min, max or auto (as early stopping's mode); the final model's values.")
    space: dict[str, Param] = Field(min_length=1, description="Config path -> search spec; a simplex under a "
                                                              "name of its own.")
    trials: Integer = Field(20, ge=1, description="Trials in the study, whatever their end (complete, pruned, failed).")
    seed: Integer = 0
    sampler: Annotated[SamplerConfig, shorthand("sampler")] = Field(default_factory=SamplerConfig)
    pruning: Annotated[PruningConfig, shorthand("pruning")] = Field(default_factory=PruningConfig)
    storage: Annotated[StorageConfig, shorthand("storage")] | None = Field(
        None, description="Default: a SQLite file in the sweep folder; any SQLAlchemy URL Optuna accepts "
                          "(postgresql://..., mysql://...), or {journal: FILE}.")
    baselines: str | dict[str, float] | None = Field(
        None, description="Single-task values for Δm%: the baselines.json `multiloss baselines` wrote, or "
                          "{objective: value}.")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="Points tried first, each {space key: value} (e.g. the run's own "
                                          "weights, to see them beside the front); keys left out are sampled.")
    output_dir: str = "sweeps"



class Sweep:
    """A validated sweep: its config, where it came from, its run config's path and plain data."""

    def __init__(self, config: SweepConfig, cf: ConfigFile, run_path: Path, base: dict, run_file: ConfigFile):
        self.config, self.file, self.run_path, self.base = config, cf, run_path, base
        self.modes = {key: resolve_mode(key, mode) for key, mode in config.objectives.items()}
        #: The run config's ``loss`` is a spec file: its data stands in, and a sampled ``loss.`` path
        #: overrides the whole loss (inlined).
        self.inline_loss = isinstance(base.get("loss"), str)
        if self.inline_loss and run_file.resolve_path(base["loss"]).is_file():
            base["loss"] = read_config(run_file.resolve_path(base["loss"]), what="loss spec")[0]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def folder(self) -> Path:
        return Path(self.config.output_dir) / self.config.name

    @property
    def objectives(self) -> list[str]:
        return list(self.config.objectives)

    def error(self, problems: Problems) -> SpecError:
        return self.file.error(problems)

    def paths(self) -> dict[str, tuple]:
        """Every config path the space sets (a simplex's members included) -> its space key."""
        out = {}
        for key, spec in self.config.space.items():
            for path in (spec.simplex if isinstance(spec, Simplex) else [key]):
                out[path] = ("space", key)
        return out

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The ``--set`` texts that give a run config the sampled ``values`` ({path: value})."""
        data = copy.deepcopy(self.base)
        roots: dict[tuple, None] = {}
        for path, value in values.items():
            parts, root = locate(data, path.split("."), barrier=("loss",) if self.inline_loss else ())
            put(data, parts, value)
            roots[root] = None
        kept = [r for r in roots if not any(o != r and r[:len(o)] == o for o in roots)]
        return [*self.config.set, *(f"{'.'.join(map(str, r))}={json.dumps(get(data, r))}" for r in kept)]

    def trial_overrides(self, number: int, folder: Path, values: dict[str, Any]) -> list[str]:
        """Every ``--set`` of trial ``number``: name ``trial-NNNN`` in ``folder``, then the sampled values."""
        return [f"name={trial_name(number)}", f"output_dir={json.dumps(str(folder))}", *self.overrides(values)]

    def fingerprint(self) -> dict:
        """What a resumed sweep must share with the study it continues: all but trials and output."""
        return self.config.model_dump(mode="json", exclude_defaults=True,
                                      exclude={"trials", "output_dir", "storage", "baselines", "enqueue"})

    def to_yaml(self) -> str:
        """The sweep with its files (run config, journal, baselines) as absolute paths: ``sweep.yaml``."""
        data = self.config.model_dump(mode="json", exclude_unset=True)
        data["run"] = str(self.run_path.resolve())
        if self.config.storage is not None and self.config.storage.journal is not None:
            data["storage"] = {"journal": str(self.relative_file(self.config.storage.journal).resolve())}
        elif self.config.storage is not None:
            data["storage"] = self.storage_url()
        if isinstance(self.config.baselines, str):
            data["baselines"] = str(self.relative_file(self.config.baselines).resolve())
        return dump_yaml(data)

    def relative_file(self, name: str) -> Path:
        """A file the sweep names: absolute, or relative to the sweep file."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.file.base / path

    def storage_url(self) -> str:
        """``storage:``'s SQLAlchemy URL, a relative SQLite file made absolute against the sweep file (as
        the journal file is), so that the study is the same whatever folder the sweep is run from."""
        import sqlalchemy

        given = self.config.storage.url
        try:
            url = sqlalchemy.engine.make_url(given)
        except sqlalchemy.exc.ArgumentError:
            return given                        # storage_problems names it
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") \
                or url.database.startswith("file:") or Path(url.database).is_absolute():
            return given
        return url.set(database=str(self.relative_file(url.database).resolve())).render_as_string(
            hide_password=False)


def trial_name(number: int) -> str:
    return f"trial-{number:04d}"


def space_problems(sweep: Sweep) -> Problems:
    """Paths that cannot be set (no such parent in the run config, the sweep's own keys), objectives'
    modes, pruning with several objectives."""
    cfg, problems = sweep.config, []
    seen: dict[str, tuple] = {}
    for key, spec in cfg.space.items():
        if isinstance(spec, Choice):
            problems += choice_problems(spec, ("space", key))
        members = spec.simplex if isinstance(spec, Simplex) else [key]
        for i, path in enumerate(members):
            where = ("space", key, "simplex", i) if isinstance(spec, Simplex) else ("space", key)
            top = path.split(".")[0]
            if path in seen:
                problems.append((where, f"{path} is searched twice (also at {'.'.join(map(str, seen[path]))})"))
            elif top in SWEEP_SETS:
                problems.append((where, f"{top} is set by the sweep for every trial (trial-NNNN in the sweep "
                                        "folder); search another path"))
            elif top not in RUN_KEYS:
                problems.append((where, f"{path!r} is no run config path: {unknown_key(top, RUN_KEYS)}"))
            else:
                try:
                    locate(sweep.base, path.split("."))
                except KeyError as exc:
                    problems.append((where, exc.args[0]))
            seen[path] = where
    problems += enqueue_problems(cfg)
    if len(cfg.objectives) > 1 and "pruning" in cfg.model_fields_set and cfg.pruning.enabled:
        problems.append((("pruning",), "pruning needs one objective (Optuna prunes on one intermediate value); "
                                       "with several objectives leave pruning out or write pruning: false"))
    return problems


def mode_problems(sweep: Sweep, logged: list[str] | None = None) -> Problems:
    """Objectives whose mode ``auto`` cannot resolve; with ``logged``, only those the run logs (a key it
    does not log is a misspelling, named as such by :func:`run_problems`)."""
    return [(("objectives", key), f"mode auto cannot tell whether {key!r} is better lower or higher; write "
                                  f"{key}: min or {key}: max")
            for key in sweep.config.objectives
            if sweep.modes[key] is None and (logged is None or key in logged)]


def enqueueable(spec) -> bool:
    """Whether a space entry can be enqueued: a range or a choice (not a simplex)."""
    return not isinstance(spec, Simplex)


def enqueued_param(spec, value: Any) -> Any:
    """What Optuna records for an enqueued ``value`` of ``spec``: a choice's option by its label (an option
    given whole, or its label: ``pcgrad`` for ``{strategy: pcgrad}``); a range's value as given."""
    if not isinstance(spec, Choice):
        return value
    labels = choice_labels(spec.choice)
    return labels[spec.choice.index(value)] if value in spec.choice else value


def enqueued_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The ``enqueue`` points as Optuna's params (:func:`enqueued_param`)."""
    return [{key: enqueued_param(cfg.space[key], value) for key, value in point.items()} for point in cfg.enqueue]


def enqueue_problems(cfg: SweepConfig) -> Problems:
    """Each enqueued point names ranges or choices of the space, with values inside them."""
    problems: Problems = []
    if len(cfg.enqueue) > cfg.trials:
        problems.append((("enqueue",), f"{len(cfg.enqueue)} points to try first, but only {cfg.trials} trials"))
    for i, point in enumerate(cfg.enqueue):
        for key, value in point.items():
            spec = cfg.space.get(key)
            where = ("enqueue", i, key)
            if spec is None:
                plain = [k for k, v in cfg.space.items() if enqueueable(v)]
                problems.append((where, f"{unknown_key(key, plain, 'space key')} (ranges and choices can be "
                                        "enqueued)"))
            elif not enqueueable(spec):
                problems.append((where, f"space key {key!r} is a simplex, which cannot be enqueued (ranges and "
                                        "choices can); leave it out of the point to have it sampled, or give "
                                        "its members their own ranges"))
            elif isinstance(spec, Choice):
                labels = choice_labels(spec.choice)
                if value not in spec.choice and (value not in labels or labels == spec.choice):
                    named = "" if labels == spec.choice else f" or their names {labels}"
                    problems.append((where, f"{value!r} is not one of the choices {spec.choice}{named}"))
            else:
                low, high = getattr(spec, "log_uniform", None) or getattr(spec, "uniform", None) or spec.int
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                    problems.append((where, f"give a number in [{low}, {high}], got {value!r}"))
    return problems


def corner_values(sweep: Sweep) -> list[dict[str, Any]]:
    """Sampled values that reach every option: each choice's options in turn, the low end elsewhere."""
    n = max([len(s.choice) for s in sweep.config.space.values() if isinstance(s, Choice)] or [1])
    return [sample(FixedPick(i), sweep.config.space) for i in range(n)]


def run_problems(sweep: Sweep) -> Problems:
    """Load the run config of every corner of the space; the objectives must be keys it logs."""
    from .config import load_run_config, logged_keys

    problems: Problems = []
    run_cfg = None
    for values in corner_values(sweep):
        try:
            run_cfg = load_run_config(sweep.run_path, sweep.trial_overrides(0, sweep.folder, values))
        except SpecError as exc:
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
            return [(("space",), f"the run config {sweep.run_path} with {shown} is not valid:\n    "
                                 + str(exc).replace("\n", "\n    "))]
    valid = logged_keys(run_cfg)
    for key in sweep.objectives:
        if key not in valid:
            problems.append((("objectives", key), f"{key!r} is not a key the run logs; "
                                                  f"{did_you_mean(key, valid)}valid: {', '.join(valid)}"))
    return problems + mode_problems(sweep, valid)


def spec_hint(data: dict, path: tuple) -> str:
    """The message for a space entry that is no search spec, with a did-you-mean for a misspelt kind."""
    value = get(data, path) if len(path) == 2 and isinstance(data.get("space"), dict) else None
    if isinstance(value, dict) and value and not any(k in KINDS for k in value):
        close = did_you_mean(next(iter(value)), KINDS)
        return f"{close}{SPEC_HINT}" if close else f"unknown search spec {next(iter(value))!r}; {SPEC_HINT}"
    return SPEC_HINT


def load_sweep(source: str | os.PathLike | dict, overrides: list[str] | None = None, *,
               check_run: bool = True) -> Sweep:
    """Load and validate a sweep file; every problem is a SpecError naming its YAML path and line.

    ``check_run`` also loads the trials' run configs (importing the run layer and TensorFlow).
    """
    data, cf = read_config(source, overrides, "sweep file", SWEEP_SHORTHANDS)
    try:
        cfg, problems = validate_rest(SweepConfig, data, cf)
    except SpecError as exc:      # the schema's problems only (the rest did not validate either)
        raise SpecError([(p, line, spec_hint(data, p) if m == SPEC_HINT else m) for p, line, m in exc.problems],
                        exc.source) from None
    problems = [(p, spec_hint(data, p) if m == SPEC_HINT else m) for p, m in problems]
    run_path = Path(cfg.run).expanduser()
    run_path = run_path if run_path.is_absolute() else cf.base / run_path
    if not run_path.is_file():
        problems.append((("run",), f"the run config {run_path} does not exist; give a run config YAML "
                                   "(relative to this sweep file)"))
        raise cf.error(problems)
    base, run_file = read_config(run_path, cfg.set, "run config")
    sweep = Sweep(cfg, cf, run_path, base, run_file)
    problems += space_problems(sweep)
    if isinstance(cfg.baselines, dict):
        problems += [(("baselines", k), "a baseline of 0 makes Δm (a relative change) undefined")
                     for k, v in cfg.baselines.items() if v == 0]
        problems += [(("baselines",), f"give a baseline for each objective; missing: {', '.join(missing)}")
                     for missing in [[k for k in cfg.objectives if k not in cfg.baselines]] if missing]
    elif isinstance(cfg.baselines, str):
        problems += baselines_file_problems(sweep)
    if not check_run:
        problems += mode_problems(sweep)
    if problems:
        raise cf.error(problems)
    if check_run:
        problems += run_problems(sweep)
        if problems:
            raise cf.error(problems)
    return sweep


def baselines_file_problems(sweep: Sweep) -> Problems:
    """A ``baselines:`` file must be the baselines.json of ``multiloss baselines``, with every objective."""
    path = sweep.relative_file(sweep.config.baselines)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))["values"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not the baselines.json of `multiloss baselines`"
        return [(("baselines",), f"cannot read {path}: {why}; run `multiloss baselines RUN_CONFIG` first, or give "
                                 "{objective: value}")]
    missing = [k for k in sweep.objectives if k not in values]
    return [(("baselines",), f"{path} has no baseline for {', '.join(missing)}; it has "
                             f"{', '.join(values) or 'none'}")] if missing else []


def is_sweep_file(data: Any) -> bool:
    """Whether a YAML document is a sweep file (it names a run config and a search space)."""
    return isinstance(data, dict) and "space" in data and "run" in data


__all__ = ["PruningConfig", "SamplerConfig", "StorageConfig", "Sweep", "SweepConfig", "corner_values",
           "is_sweep_file", "load_sweep", "trial_name"]
