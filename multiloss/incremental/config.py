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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..core.guard import MODES
from ..run.augment import AugmentList
from ..run.config import DataConfig, component_problems
from ..run.optim import OptimizerConfig
from ..run.precision import Precision
from ..spec.configfile import ConfigFile, read_config, validate_rest
from ..spec.errors import SpecError
from ..spec.validation import Integer, pydantic_problems, unknown_key
from ..spec.yamlio import dump_yaml
from .methods import Method, get_method
from .network import get_backbone, saved_backbone


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioConfig(_Model):
    """Which classes arrive when."""

    order_seed: Integer = Field(1993, description="Class order: np.random.seed(order_seed); "
                                              "np.random.permutation(num_classes).")
    class_order: list[Integer | str] | None = Field(
        None, description="An explicit class order (overrides order_seed): class ids, or the data's class names "
                          "(an image folder's folder names).")
    initial: Integer = Field(ge=1, description="Classes of the first step.")
    increment: Integer = Field(ge=1, description="Classes added by each later step.")
    steps: Integer | None = Field(None, ge=1, description="Stop after this many steps (default: all classes).")
    setting: Literal["class", "task"] = Field(
        "class", description="class: one classifier over every seen class (class-incremental); task: the task id "
                             "is known, each step's classes form a head: the plain cross-entropy terms become a "
                             "softmax over the sample's own task (task-incremental). Both settings' test figures "
                             "are in metrics.json.")


class MemoryConfig(_Model):
    """The exemplar memory: a total ``budget`` shared by the seen classes, or ``per_class``."""

    budget: Integer | None = Field(None, ge=1, description="Exemplars in total, shared by the seen classes.")
    per_class: Integer | None = Field(None, ge=1, description="Exemplars of every class.")
    selection: Literal["herding", "random"] = "herding"

    @model_validator(mode="after")
    def _one_regime(self):
        if (self.budget is None) == (self.per_class is None):
            raise ValueError("give either `budget` (exemplars in total) or `per_class`, not both "
                             "and not neither")
        return self


class MethodConfig(_Model):
    name: str = Field(description="finetune | joint | replay | lwf | ewc | icarl | eeil | wa | bic | podnet | der | lucir, "
                                  "a name given to register_method, or package.module:MethodClass")
    params: dict[str, Any] = Field(default_factory=dict)


class BackboneConfig(_Model):
    """The feature extractor: a backbone builder (``cnn``, ``mlp``, ``resnet18``, ...,
    ``package.module:function``), or a saved Keras model cut at a layer (``path`` and ``features``)."""

    builder: str | None = Field(None, description="cnn (the default), mlp, resnet18, resnet32, resnet50, "
                                                  "resnet50v2, mobilenet_v2, mobilenet_v3_small or "
                                                  "package.module:function.")
    params: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, description="A saved Keras model (.keras) whose layers up to `features` are "
                                               "the backbone, with their saved weights (fine-tuned).")
    features: str | None = Field(None, description="The layer of the saved model whose output is the feature "
                                                   "vector [B, D].")

    @model_validator(mode="after")
    def _default_builder(self):
        if self.builder is None and self.path is None:
            self.builder = "cnn"
        return self


def backbone_problems(model: BackboneConfig, cf: ConfigFile) -> list[tuple[tuple, str]]:
    """A saved model as the backbone: ``path`` (an existing file) with ``features``, and no builder."""
    if model.path is None:
        if model.features is not None:
            return [(("model", "features"), "features names the layer of a saved model to cut at; give the model "
                                            "as model.path (or leave features out)")]
        return []
    problems = []
    if model.builder is not None:
        problems.append((("model", "builder"), "give model.builder or model.path (a saved model), not both"))
    if model.params:
        problems.append((("model", "params"), "params are a builder's; a saved model (model.path) takes none"))
    if not cf.resolve_path(model.path).is_file():
        problems.append((("model", "path"), f"{model.path} is not a file; give a model saved with "
                                            "model.save('my.keras') (relative to the working folder or this config)"))
    if not model.features:
        problems.append((("model", "features"), "name the layer of the saved model whose output is the feature "
                                                "vector (e.g. the layer before its classifier)"))
    return problems


class StepTrainConfig(_Model):
    epochs: Integer = Field(5, ge=1, description="Epochs of each step's training.")
    batch_size: Integer = Field(128, ge=1)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the learning rate decays to 0 over each training stage "
                                "(a fresh schedule per stage, as the fresh optimizer).")
    precision: Precision = Field("float32", description="Keras's dtype policy for the run (as train.precision "
                                                         "of `multiloss train`).")
    verbose: Literal[0, 1, 2] = 0
    nonfinite: Literal[MODES] = Field(
        "stop", description="A NaN/Inf in a term, the total or a gradient: stop (exit status 3, last "
                            "completed step intact) or skip that batch (counted and reported).")
    augment: AugmentList = Field(
        default_factory=list, description="Keras random preprocessing layers applied to every training batch "
                                          "(new data and exemplars), e.g. [{random_flip: {mode: horizontal}}]; "
                                          "see multiloss.run.augment.")


class IncrementalData(DataConfig):
    """The data source, as ``multiloss train``'s ``data:``, and the target that holds the class ids."""

    target: str = Field("class", description="The target of the source that holds the class ids (a csv "
                                             "column, a tfrecord feature, a key of a dataset's y).")


class IncrementalConfig(_Model):
    """One class-incremental scenario, run by ``multiloss incremental CONFIG``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: Integer = Field(0, description="Data split, initialisation and shuffling.")
    seeds: list[Integer] | None = Field(
        None, min_length=1, description="Repeat the run for each seed s (seed = scenario.order_seed = s; an "
                                        "explicit class_order is kept) in <run>/seed-<s>, and report mean ± std.")
    data: IncrementalData
    model: BackboneConfig = Field(default_factory=BackboneConfig,
                                  description="The feature extractor: {builder: cnn | mlp | ... | "
                                              "package.module:function, params: {...}}, or a saved model "
                                              "{path: my.keras, features: <layer name>}.")
    scenario: ScenarioConfig
    memory: MemoryConfig | None = None
    method: MethodConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: StepTrainConfig = Field(default_factory=StepTrainConfig)
    output_dir: str = "runs"

    _file: ConfigFile = PrivateAttr(default_factory=ConfigFile)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def make_method(self) -> Method:
        return get_method(self.method.name)(**self.method.params)

    def error(self, problems: list[tuple[tuple, str]]) -> SpecError:
        """A SpecError for ``[(path, message)]`` with source lines (or the ``--set`` they came from)."""
        return self._file.error(problems)

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json"))

    def fingerprint(self) -> dict:
        """What a resumed run must share with the run it continues (keys at their defaults left out
        where they are new: a run saved before them resumes)."""
        out = self.model_dump(mode="json", include={"seed", "data", "model", "scenario", "memory", "method",
                                                    "optimizer", "train"},
                              exclude={"train": {"verbose", "nonfinite"}})
        for key in ("path", "features"):
            if out["model"][key] is None:
                del out["model"][key]
        if not out["train"]["augment"]:
            del out["train"]["augment"]
        if out["scenario"]["setting"] == "class":   # the key is newer than some saved runs
            del out["scenario"]["setting"]
        if out["data"]["target"] == "class":        # so is this one
            del out["data"]["target"]
        return out

    def model_path(self) -> str | None:
        """``model.path`` resolved (relative to the working folder, else to the config's folder)."""
        return None if self.model.path is None else str(self._file.resolve_path(self.model.path))


def _repeated(items: list) -> str:
    """The first item given twice, with its positions: ``3 (at positions 0, 2)``."""
    twice = next(x for i, x in enumerate(items) if x in items[:i])
    return f"{twice!r} (at positions {', '.join(str(i) for i, x in enumerate(items) if x == twice)})"


def load_incremental_config(source: str | os.PathLike | dict,
                            overrides: list[str] | None = None) -> IncrementalConfig:
    """Load, override and validate an incremental config; raise SpecError naming path and line."""
    data, cf = read_config(source, overrides, "incremental config")
    cfg, problems = validate_rest(IncrementalConfig, data, cf)
    cfg._file = cf
    problems += component_problems(cfg, lambda name: get_backbone(name) if name is not None else saved_backbone)
    problems += backbone_problems(cfg.model, cf)
    try:
        method_cls = get_method(cfg.method.name)
    except LookupError as exc:
        problems.append((("method", "name"), str(exc)))
    else:
        try:
            method_cls.Params(**cfg.method.params)
        except ValidationError as exc:
            problems += [(("method", "params") + p, m) for p, m in pydantic_problems(exc, method_cls.Params)]
        fields = getattr(method_cls.Params, "model_fields", None)
        # A user's Params that ignores extra keys (pydantic's default) would drop a misspelt one.
        if fields is not None and method_cls.Params.model_config.get("extra") in (None, "ignore"):
            names = [*fields, *(f.alias for f in fields.values() if f.alias)]
            problems += [(("method", "params", k), unknown_key(k, list(fields)))
                         for k in cfg.method.params if k not in names]
        named = any(path[:1] == ("memory",) for path, _ in problems)     # a bad memory: named there
        if method_cls.replay and cfg.memory is None and not named:
            problems.append((("method", "name"), f"method {method_cls.name!r} keeps exemplars: add "
                                                 "`memory: {budget: K}` or `memory: {per_class: m}`"))
    if cfg.train.lr_schedule != "constant" and cfg.optimizer.schedule is not None:
        problems.append((("train", "lr_schedule"), f"lr_schedule {cfg.train.lr_schedule!r} replaces "
                                                   "optimizer.schedule: give one of them"))
    order = cfg.scenario.class_order
    if order is not None and len(set(order)) != len(order):
        problems.append((("scenario", "class_order"), f"class_order repeats class {_repeated(order)}"))
    if cfg.seeds is not None and len(set(cfg.seeds)) != len(cfg.seeds):
        problems.append((("seeds",), f"seeds repeats seed {_repeated(cfg.seeds)}"))
    if problems:
        raise cfg.error(problems)
    return cfg


__all__ = ["IncrementalConfig", "BackboneConfig", "ScenarioConfig", "MemoryConfig", "MethodConfig", "StepTrainConfig",
           "load_incremental_config"]
