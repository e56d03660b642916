"""The loss spec: pydantic models, loading, and resolution into terms.

Two forms mean the same thing: the canonical one (``outputs:`` per head,
``terms:`` across heads) and the Keras compile form (``loss:``,
``loss_weights:``, ``metrics:``), so a ``model.compile(...)`` call can be
pasted.  Every problem becomes a :class:`SpecError` naming path and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from . import loss_table as losses
from .configfile import validate_without
from .errors import SpecError
from .imports import import_object, is_import_string
from .reductions import Reduction
from .registry import Registry
from .schedules import ScheduleSpec
from .validation import bind_problem, did_you_mean, nonfinite_paths, pydantic_problems, shorthand
from .yamlio import Lines, line_of, load_yaml, read_source

#: Checks of spec sections that an upper layer defines, each ``(spec, terms, term names) -> problems``:
#: the weighting strategies check ``weighting:`` and ``schedules:`` (registered by their provider, so
#: that this layer needs no import of theirs).
SECTION_CHECKS: Registry = Registry("spec section check", providers=("multiloss.weighting.registry",))

Weight = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False, description="A finite number ≥ 0.")]
MetricList = list[str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LossCall(_Model):
    """A loss with parameters: ``{name: categorical_crossentropy, params: {from_logits: true}}``."""

    name: str = Field(description="A registered loss name or an import string 'package.module:attr'.")
    params: dict[str, Any] = Field(default_factory=dict)


def _ref_tag(v: Any) -> str | None:
    if isinstance(v, str):
        return "loss-name"
    if isinstance(v, (dict, LossCall)):
        return "loss-call"
    return None


_REF_ERROR = dict(
    custom_error_type="loss_ref",
    custom_error_message="expected a loss name (string) or a mapping {name: ..., params: {...}}",
)
LossRef = Annotated[
    Union[Annotated[str, Tag("loss-name")], Annotated[LossCall, Tag("loss-call")]],
    Discriminator(_ref_tag, **_REF_ERROR),
]


class TermItem(_Model):
    """One of several terms on a head: ``{loss: dice, weight: 0.5, name: seg_dice}``."""

    loss: LossRef
    weight: Weight = 1.0
    name: str | None = Field(None, description="The term's name; default '<head>_<loss>'.")


def _item_tag(v: Any) -> str | None:
    if isinstance(v, TermItem) or (isinstance(v, dict) and "loss" in v):
        return "loss-term"
    return _ref_tag(v)


def _head_loss_tag(v: Any) -> str | None:
    return "loss-list" if isinstance(v, list) else _ref_tag(v)


LossItem = Annotated[
    Union[
        Annotated[str, Tag("loss-name")],
        Annotated[LossCall, Tag("loss-call")],
        Annotated[TermItem, Tag("loss-term")],
    ],
    Discriminator(
        _item_tag,
        custom_error_type="loss_item",
        custom_error_message="expected a loss name, {name, params}, or {loss, weight, name}",
    ),
]
HeadLoss = Annotated[
    Union[
        Annotated[str, Tag("loss-name")],
        Annotated[LossCall, Tag("loss-call")],
        Annotated[list[LossItem], Tag("loss-list")],
    ],
    Discriminator(
        _head_loss_tag,
        custom_error_type="head_loss",
        custom_error_message="expected a loss name, {name, params}, or a list of terms",
    ),
]
_TAGS = {"loss-name", "loss-call", "loss-term", "loss-list"}


class HeadSpec(_Model):
    """The losses, weight and metrics of one named model output."""

    loss: HeadLoss | None = None
    weight: Weight = Field(1.0, description="Multiplies every term of this head.")
    metrics: MetricList = Field(default_factory=list)
    class_weight: dict[int, Weight] | None = Field(
        None, description="Class id -> weight; e.g. {3: 5.0}. Unlisted classes weigh 1."
    )
    mask_value: float | None = Field(
        None, description="Targets equal to this value (NaN targets for `.nan`) are missing and get weight 0: "
                          "per label for an elementwise loss (BCE, MSE, MAE, Huber, ...), per position otherwise.")
    reduction: Reduction = "sum_over_batch_size"


class TermSpec(_Model):
    """A loss over one or several outputs, e.g. contrastive over two embeddings."""

    name: str
    outputs: list[str] = Field(min_length=1)
    target: str | None = Field(None, description="Key of y_true passed as the term's target.")
    loss: LossRef
    weight: Weight = 1.0
    reduction: Reduction = "sum_over_batch_size"


class WeightingSpec(_Model):
    """Dynamic or learned weighting: ``{strategy: gradnorm, params: {alpha: 1.5, lr: 0.025}}``."""

    strategy: str = Field("static", description="A registered strategy (`multiloss.weighting.STRATEGIES`; "
                                                "docs/weighting.md lists the built-in ones) or 'package.module:Class'.")
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's parameters.")
    shared: list[str] | None = Field(
        None, description="Gradient strategies: the layers whose variables are the shared parameters "
                          "(default: inferred from the model).")
    vectorize: bool = Field(
        False, description="Gradient strategies: per-task gradients in one vectorized jacobian instead of "
                           "one backward pass per term.")
    gradients: str = Field(
        "parameters", description="Gradient strategies: per-task gradients of the shared `parameters`, or of "
                                  "the shared `representation` (MGDA-UB: one backward pass through the trunk).")
    representation: list[str] | None = Field(
        None, description="gradients: representation — the layers whose outputs the heads read "
                          "(default: inferred from the layer graph).")
    preference: dict[str, float] | None = Field(
        None, description="{term: value > 0}: the point on the trade-off, for the strategies that take one "
                          "(stch, config, dual_proj); a term not named gets 1.")


class LossSpec(_Model):
    """A multi-output loss spec (canonical form, or Keras compile form)."""

    outputs: dict[str, HeadSpec] = Field(default_factory=dict)
    terms: list[TermSpec] = Field(default_factory=list)
    metrics: Union[MetricList, dict[str, MetricList]] = Field(
        default_factory=list, description="Metrics for every head, or {head: [...]} (compile form)."
    )
    loss: dict[str, LossRef] | None = Field(None, description="Compile form: {output: loss}.")
    loss_weights: dict[str, Weight] | None = Field(None, description="Compile form: {output: weight}.")
    weighting: Annotated[WeightingSpec | None, shorthand("weighting")] = Field(
        None, description="Dynamic or learned weighting strategy: {strategy: NAME, params: {...}}, or just NAME.")
    schedules: dict[str, ScheduleSpec] = Field(
        default_factory=dict, description="Term -> schedule of a factor multiplying its weight.")

    _lines: Lines = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr("<spec>")
    _prefix: tuple = PrivateAttr(())  # where the spec sits in a larger file (a run config's `loss:`)
    _file: Any = PrivateAttr(None)    # that file (a ConfigFile): its problems name the --set they came from
    _paths: dict[str, tuple] = PrivateAttr(default_factory=dict)
    _terms: list[Term] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _compile_form_to_outputs(self):
        """Fold the Keras compile form into ``outputs``; remember source paths."""
        if self.loss is None and self.loss_weights is None and not isinstance(self.metrics, dict):
            return self
        if self.outputs:
            raise ValueError("use either `outputs:` or the compile form (`loss:`), not both")
        names = list(self.loss or {})
        for key in self.loss_weights or {}:
            if key not in names:
                raise ValueError(
                    f"loss_weights names {key!r}, which has no loss; outputs with a loss: {names}"
                )
        per_head = self.metrics if isinstance(self.metrics, dict) else {}
        for key in per_head:
            if key not in names:
                names.append(key)
        for name in names:
            self.outputs[name] = HeadSpec(
                loss=(self.loss or {}).get(name),
                weight=(self.loss_weights or {}).get(name, 1.0),
                metrics=per_head.get(name, []),
            )
            self._paths[name] = ("loss", name)
        if isinstance(self.metrics, dict):
            self.metrics = []
        return self

    # --- resolved view -------------------------------------------------------

    def head_path(self, head: str, field: str) -> tuple:
        """The YAML path of a head's ``field`` (``key``: the head itself), in either form."""
        base = self._paths.get(head)
        if base is None:
            return ("outputs", head) if field == "key" else ("outputs", head, field)
        return {"loss": base, "weight": ("loss_weights", head), "metrics": ("metrics", head)}.get(
            field, base
        )

    def line(self, path: tuple) -> int | None:
        """The source line of ``path``, or of its nearest ancestor that has one."""
        return line_of(self._lines, path)

    def locate(self, path: tuple) -> tuple[str, tuple]:
        """``("file:line", full YAML path)`` of ``path`` (the path within a run config, if embedded)."""
        line = self.line(path)
        return (f"{self._source}:{line}" if line else self._source), self._prefix + tuple(path)

    def error(self, problems) -> SpecError:
        """Make a SpecError for ``[(path, message), ...]`` with source lines (in a run config: or the
        ``--set`` a value came from)."""
        if self._file is not None:
            return self._file.error([(self._prefix + tuple(p), m) for p, m in problems])
        return SpecError([(self._prefix + tuple(p), self.line(p), m) for p, m in problems], self._source)

    @property
    def source(self) -> str:
        return self._source

    def head_metrics(self) -> dict[str, list[str]]:
        """Per-head metric names, top-level metrics applied to every head."""
        top = list(self.metrics) if isinstance(self.metrics, list) else []
        out = {}
        for head, h in self.outputs.items():
            ms = top + [m for m in h.metrics if m not in top]
            if ms:
                out[head] = ms
        return out

    def resolve(self) -> list[Term]:
        """Resolve every term (loss names, params); raise SpecError on any problem."""
        if self._terms is None:
            self._terms = _resolve(self)
        return self._terms

    def to_dict(self) -> dict:
        """The spec in canonical form, as plain data (for configs and saving)."""
        data = self.model_dump(mode="json", exclude_defaults=True, exclude={"loss", "loss_weights"})
        if not data.get("metrics"):
            data.pop("metrics", None)
        return data


@dataclass(frozen=True)
class Term:
    """One resolved term: loss math plus how to feed, weight and reduce it."""

    name: str
    outputs: tuple[str, ...]
    target: str | None
    loss: losses.LossFn
    loss_label: str
    weight: float
    reduction: str
    class_weight: dict[int, float] | None
    mask_value: float | None
    path: tuple

    @property
    def is_head(self) -> bool:
        return self.target is not None and self.outputs == (self.target,)


_METRIC_EXTRAS = {"acc", "crossentropy", "ce"}
#: The metric names Keras's ``compile(metrics=[...])`` resolves (tests/test_keras_parity.py
#: compares them with Keras's own table), so that a spec is checked without importing Keras.
KERAS_METRICS = frozenset("""
AUC Accuracy BCE BinaryAccuracy BinaryCrossentropy BinaryIoU CategoricalAccuracy
CategoricalCrossentropy CategoricalHinge ConcordanceCorrelation CosineSimilarity F1Score FBetaScore
FalseNegatives FalsePositives Hinge IoU KLDivergence LogCoshError MAE MAPE MSE MSLE Mean
MeanAbsoluteError MeanAbsolutePercentageError MeanIoU MeanMetricWrapper MeanSquaredError
MeanSquaredLogarithmicError Metric OneHotIoU OneHotMeanIoU PearsonCorrelation Poisson Precision
PrecisionAtRecall R2Score Recall RecallAtPrecision RootMeanSquaredError SensitivityAtSpecificity
SparseCategoricalAccuracy SparseCategoricalCrossentropy SparseTopKCategoricalAccuracy
SpecificityAtSensitivity SquaredHinge Sum TopKCategoricalAccuracy TrueNegatives TruePositives
accuracy auc bce binary_accuracy binary_crossentropy binary_io_u categorical_accuracy
categorical_crossentropy categorical_hinge concordance_correlation cosine_similarity f1_score
f_beta_score false_negatives false_positives hinge io_u kl_divergence log_cosh_error mae mape mean
mean_absolute_error mean_absolute_percentage_error mean_io_u mean_metric_wrapper mean_squared_error
mean_squared_logarithmic_error metric mse msle one_hot_io_u one_hot_mean_io_u pearson_correlation
poisson precision precision_at_recall r2_score recall recall_at_precision root_mean_squared_error
sensitivity_at_specificity sparse_categorical_accuracy sparse_categorical_crossentropy
sparse_top_k_categorical_accuracy specificity_at_sensitivity squared_hinge sum
top_k_categorical_accuracy true_negatives true_positives
""".split())


def _known_metrics() -> list[str]:
    return sorted(KERAS_METRICS | _METRIC_EXTRAS)


def metric_log_name(metric: str) -> str:
    """The name Keras logs a head's metric under (after ``<head>_``): an import string's function name."""
    return _loss_label(metric) if is_import_string(metric) else metric


def _loss_label(ref: str | LossCall) -> str:
    name = ref if isinstance(ref, str) else ref.name
    return name.rpartition(":")[2].rpartition(".")[2]


def _resolve(spec: LossSpec) -> list[Term]:
    problems: list[tuple[tuple, str]] = []
    terms: list[Term] = []
    seen: dict[str, tuple] = {}
    loggers = [("loss", "the total loss", None, ())]   # (log key, what logs it, what to rename, path)

    def make(ref, path) -> losses.LossFn | None:
        name, params = (ref, {}) if isinstance(ref, str) else (ref.name, ref.params)
        name_path = path if isinstance(ref, str) else path + ("name",)
        bad = nonfinite_paths(params)
        if bad:
            problems.extend((path + ("params",) + p, "must be a finite number") for p in bad)
            return None
        try:
            fn = losses.get(name, **params)
        except LookupError as exc:
            problems.append((name_path, str(exc)))
        except TypeError as exc:
            problems.append((path + ("params",), str(exc)))
        else:
            problem = _call_problem(name, losses.LOSSES.get(name), params)
            if problem is None:
                return fn
            problems.append((name_path, problem))
        return None

    def add(name, outputs, target, ref, weight, reduction, cw, mask, path):
        fn = make(ref, path)
        counts = losses.contract(fn.name).outputs if fn is not None else None
        if counts and len(outputs) not in counts:
            head = path[0] != "terms"
            problems.append((path if head else path[:-1] + ("outputs",),
                             f"loss {fn.name!r} takes {' or '.join(map(str, counts))} model outputs, "
                             f"{'a head is one' if head else f'got {len(outputs)}'}"
                             + ("; give it as a term, `terms: [{name: ..., outputs: [...], loss: ...}]`"
                                if head else "")))
            fn = None
        if name in seen:
            problems.append((path, f"duplicate term name {name!r} (first defined at "
                                   f"{'.'.join(map(str, seen[name]))}); give each term a unique name"))
        else:
            head = outputs[0] if target is not None and list(outputs) == [target] else None
            what = (f"output {name!r}" if head == name else
                    f"term {name!r} of output {head!r}" if head is not None else f"term {name!r}")
            loggers.extend([(f"{name}_loss", what, what, path), (f"{name}_weight", what, what, path)])
        seen[name] = path
        if fn is not None:
            terms.append(Term(name, tuple(outputs), target, fn, _loss_label(ref), float(weight),
                              reduction, cw, mask, path))

    head_metrics = spec.head_metrics()
    for head, h in spec.outputs.items():
        if h.loss is None:
            # A misspelt output (``--set loss.outputs.knd.weight=2`` for ``kind``) makes a new head.
            close = did_you_mean(head, [o for o in spec.outputs if o != head]).strip()
            close = f"; {close}" if close else ""
            if not head_metrics.get(head):
                problems.append((spec.head_path(head, "key"),
                                 f"head {head!r} has neither `loss` nor `metrics`: add a loss (or metrics "
                                 f"to watch it), or remove the head{close}"))
            elif "weight" in h.model_fields_set and head not in spec._paths:
                problems.append((spec.head_path(head, "weight"),
                                 f"head {head!r} has a weight but no loss, so the weight has no effect: "
                                 f"add `loss:` or remove `weight:`{close}"))
            continue
        lpath = spec.head_path(head, "loss")
        common = dict(outputs=[head], target=head, reduction=h.reduction, cw=h.class_weight,
                      mask=h.mask_value)
        if isinstance(h.loss, list):
            for i, item in enumerate(h.loss):
                ipath = lpath + (i,)
                if isinstance(item, TermItem):
                    ref, w, name, rpath = item.loss, item.weight, item.name, ipath + ("loss",)
                else:
                    ref, w, name, rpath = item, 1.0, None, ipath
                add(name or f"{head}_{_loss_label(ref)}", ref=ref, weight=h.weight * w,
                    path=rpath, **common)
        else:
            add(head, ref=h.loss, weight=h.weight, path=lpath, **common)

    for i, t in enumerate(spec.terms):
        add(t.name, t.outputs, t.target, t.loss, t.weight, t.reduction, None, None,
            ("terms", i, "loss"))

    known = _known_metrics()
    top = spec.metrics if isinstance(spec.metrics, list) else []
    metric_paths = [(("metrics", i), m) for i, m in enumerate(top)]
    for head, h in spec.outputs.items():
        metric_paths += [(spec.head_path(head, "metrics") + (i,), m) for i, m in enumerate(h.metrics)]
    for path, m in metric_paths:
        if is_import_string(m):
            try:
                import_object(m)
            except LookupError as exc:
                problems.append((path, str(exc)))
            continue
        if m in known:
            continue
        problems.append((path, f"unknown metric {m!r}; {did_you_mean(m, known)}use a Keras metric name "
                               "(e.g. accuracy, mae, auc) or an import string 'package.module:attr'"))
    for head, ms in head_metrics.items():    # Keras logs an import-string metric by its function's name
        loggers += [(f"{head}_{metric_log_name(m)}", f"metric {m!r} of output {head!r}",
                     f"output {head!r}", spec.head_path(head, "key")) for m in ms]
    problems += _log_key_problems(loggers)
    if not spec.outputs and not spec.terms:
        problems.append(((), "the spec defines no loss: add `outputs:` (or the compile form `loss:`)"))
    if spec.weighting is not None:
        problems += [(("weighting", "params") + p, "must be a finite number")
                     for p in nonfinite_paths(spec.weighting.params)]
    for key, sched in spec.schedules.items():
        problems += [(("schedules", key) + p, "must be a finite number")
                     for p in nonfinite_paths(sched.model_dump())]
    for check in SECTION_CHECKS.values():
        problems += check(spec, terms, list(seen))
    if problems:
        raise spec.error(list(dict.fromkeys(problems)))     # a value two checks refuse: said once
    return terms


def _is_keras_loss_class(cls: type) -> bool:
    """Whether ``cls`` subclasses Keras's ``Loss`` (told by its bases: this layer imports no Keras)."""
    return any(k.__name__ == "Loss" and k.__module__.startswith("keras") for k in cls.__mro__)


def _own(cls: type, attr: str) -> Any:
    """``attr`` as the class (not its metaclass) defines it, or None."""
    return next((vars(k)[attr] for k in cls.__mro__ if attr in vars(k) and k is not object), None)


def _call_problem(name: str, obj: Any, params: dict) -> str | None:
    """Why the loss ``obj`` cannot be called as the terms call it, else None.

    A function (or callable object) is called ``f(y_true, y_pred, **params)``; a class is made with
    ``cls(**params)`` and then called ``(y_true, y_pred)`` (a Keras ``Loss``: its ``call``).  Not
    checked: a Keras loss not imported yet (a name), an object whose signature cannot be read, and
    multiloss's own losses (tested; the class-incremental ones get their required params, ``num_old``,
    from the method that writes their spec).
    """
    if isinstance(obj, str) or str(getattr(obj, "__module__", "")).startswith("multiloss."):
        return None
    kw = "".join(f", {k}=..." for k in params)
    needs = "a loss is a function f(y_true, y_pred, **params), or a class made with its params and called " \
            "(y_true, y_pred)"
    if not isinstance(obj, type):
        if not callable(obj):
            return f"loss {name!r} is {type(obj).__name__} {obj!r:.40}, not a function or class; {needs}"
        why = bind_problem(obj, "y_true", "y_pred", **params)
        if why is not None and why.startswith("missing a required argument"):
            why += " (give it in the loss's `params:`, or a default)"
        return None if why is None else \
            f"loss {name!r} cannot be called as f(y_true, y_pred{kw}): {why}; {needs}"
    why = bind_problem(obj, **params)
    if why is not None:
        return f"loss {name!r} cannot be made as {obj.__name__}({kw.lstrip(', ')}): {why}; {needs}"
    method = "call" if _is_keras_loss_class(obj) else "__call__"
    raw = _own(obj, method)
    if raw is None:
        return f"loss {name!r}: class {obj.__name__} has no `{method}` method, so it cannot be called; {needs}"
    args = ("y_true", "y_pred") if isinstance(raw, (staticmethod, classmethod)) else ("self", "y_true", "y_pred")
    why = bind_problem(getattr(obj, method), *args)
    return None if why is None else \
        f"loss {name!r}: {obj.__name__}.{method} cannot be called as (y_true, y_pred): {why}; {needs}"


def _log_key_problems(loggers: list[tuple[str, str, str | None, tuple]]) -> list[tuple[tuple, str]]:
    """Log keys (``loss``, ``<term>_loss``, ``<term>_weight``, ``<head>_<metric>``) that clash.

    A key logged twice keeps one value in the history; Keras logs the validation values under
    ``val_`` + the training key, which replaces a training key of that name (an output ``val``'s
    ``val_loss`` is the validation total's).  ``loggers`` holds ``(key, what logs it, what to rename
    (None: nothing, the total), its path)``; one problem for each pair that clashes.
    """
    first: dict[str, tuple] = {}
    clashes: dict[tuple, list[str]] = {}    # (owner, other owner, validation?) -> keys
    for key, what, rename, path in loggers:
        owner = (what, rename, path)
        if key in first and first[key][0] != what:
            clashes.setdefault((owner, first[key], False), []).append(key)
        first.setdefault(key, owner)
    for key, owner in first.items():
        base = key.removeprefix("val_")
        if base != key and base in first:
            clashes.setdefault((owner, first[base], True), []).append(key)
    problems = []
    for ((what, rename, path), (other, other_rename, _), validation), keys in clashes.items():
        logs = ", ".join(map(repr, keys))
        if validation:
            plural = "s" if len(keys) > 1 else ""
            clash = (f"{what} logs {logs}, the key{plural} of the validation value{plural} of {other} "
                     "(Keras logs validation values as 'val_' + the training key)")
        else:
            clash = f"{what} logs {logs}, as {other} does"
        names = " or ".join(r for r in (rename, other_rename) if r)
        problems.append((path, f"{clash}, so one hides the other in the history; rename {names}"))
    return problems

def _pydantic_problems(exc: ValidationError) -> list[tuple[tuple, str]]:
    return pydantic_problems(exc, LossSpec, _TAGS)


def _problems_beside(data: dict, structural: list[tuple[tuple, str]]) -> list[tuple[tuple, str]]:
    """What resolving finds (unknown losses, metrics, params) besides ``structural`` problems, so that
    one pass reports them all: the spec validated with the values at fault left out, then resolved;
    its problems within or above a left-out value (a head whose loss was left out has none) are not
    reported."""
    spec, dropped = validate_without(LossSpec, data, structural, _pydantic_problems)
    if spec is None:
        return []
    try:
        spec.resolve()
    except SpecError as err:
        return [(p, m) for p, _line, m in err.problems
                if not any(p[: len(d)] == d or d[: len(p)] == p for d in dropped)]
    return []


def load_spec(source: str | os.PathLike | dict | LossSpec, *, name: str | None = None) -> LossSpec:
    """Load and validate a spec from a path, YAML text, a dict or a LossSpec.

    Raises :class:`SpecError` (a ``ValueError``) naming path and line.
    """
    if isinstance(source, LossSpec):
        return source
    lines: Lines = {}
    if isinstance(source, dict):
        data, src = source, name or "<dict>"
    else:
        text, src = read_source(source)
        data, lines = load_yaml(text, src)
        src = name or src
    if not isinstance(data, dict):
        raise SpecError([((), 1, "a spec must be a mapping with `outputs:` (or `loss:`)")], src)
    return spec_from_data(data, lines, src)


def spec_from_data(data: dict, lines: Lines, source: str, prefix: tuple = (), file: Any = None) -> LossSpec:
    """Validate plain data into a LossSpec; ``prefix`` locates it in a larger file (``file``: that file's
    ConfigFile, whose ``error`` names the ``--set`` of a value)."""
    shifted = {k[len(prefix):]: v for k, v in lines.items() if k[: len(prefix)] == prefix}
    try:
        spec = LossSpec.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc)
        problems += _problems_beside(data, problems)
        raise SpecError([(prefix + p, line_of(shifted, p), m) for p, m in problems], source) from None
    spec._lines, spec._source, spec._prefix, spec._file = shifted, source, tuple(prefix), file
    spec.resolve()
    return spec
