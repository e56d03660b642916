"""Class-incremental methods: each a small object behind one interface.

A method says, for a step,

* ``spec(step)``: the loss spec of its training stage, whose terms
  (``classification``, ``distillation``) are summed, weighted and logged by
  the composite loss like any other multiloss term;
* ``training_data(learner, step)``: what it trains on (new classes, plus the
  exemplar memory when ``replay``; every seen class for ``joint``);
* ``finish(learner, step)``: its extra stages, after the memory is updated
  (EEIL's balanced fine-tuning, WA's weight aligning);
* ``predict(learner, x)``: its classifier (the network's logits, or iCaRL's
  nearest mean of exemplars).

Targets every spec may read: ``class`` (class positions, sparse) and
``target`` (the layout ``[previous model's logits for the old classes |
one-hot over the new]``, see :mod:`multiloss.incremental.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .memory import normalize

if TYPE_CHECKING:
    from .learner import Learner


@dataclass(frozen=True)
class Step:
    """Step ``index`` of a scenario whose steps add ``groups[i]`` classes each (up to this one)."""

    index: int
    groups: tuple[int, ...]

    @property
    def num_old(self) -> int:
        return sum(self.groups[:-1])

    @property
    def num_total(self) -> int:
        return sum(self.groups)

    @property
    def new_classes(self) -> list[int]:
        return list(range(self.num_old, self.num_total))


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def classification_term(weight: float = 1.0) -> dict:
    """Softmax cross-entropy over every seen class, on the true class."""
    return {"name": "classification", "outputs": ["logits"], "target": "class", "weight": weight,
            "loss": {"name": "sparse_categorical_crossentropy", "params": {"from_logits": True}}}


def distillation_term(num_old: int, temperature: float, weight: float = 1.0,
                      groups: list[int] | None = None) -> dict:
    """Knowledge distillation on the layout's old columns (T²·KL at ``temperature``)."""
    params: dict[str, Any] = {"num_old": num_old, "temperature": temperature}
    if groups:
        params["groups"] = list(groups)
    return {"name": "distillation", "outputs": ["logits"], "target": "target", "weight": weight,
            "loss": {"name": "incremental_distillation", "params": params}}


class Method:
    """The interface.  Subclasses set ``name``, ``replay`` and ``Params``."""

    name: ClassVar[str] = ""
    replay: ClassVar[bool] = False   # trains on the exemplar memory too (needs `memory:`)
    Params: ClassVar[type[BaseModel]] = _Params

    def __init__(self, **params):
        self.params = self.Params(**params)

    @property
    def head(self) -> dict:
        """The classifier's form: ``nonnegative`` kernel (clipped at 0), ``bias`` or not."""
        return {"nonnegative": False, "bias": True}

    @property
    def classifier(self) -> str:
        """``cnn`` (argmax of the logits) or ``nme`` (nearest mean of exemplars)."""
        return "cnn"

    def spec(self, step: Step) -> dict:
        raise NotImplementedError

    def training_data(self, learner: Learner, step: Step) -> tuple[np.ndarray, np.ndarray]:
        x, y = learner.train.of(step.new_classes)
        if self.replay and learner.memory is not None and len(learner.memory):
            mx, my = learner.memory.data()
            x, y = np.concatenate([x, mx]), np.concatenate([y, my])
        return x, y

    def finish(self, learner: Learner, step: Step) -> None:
        """Extra stages after training and the memory update (none by default)."""

    def predict(self, learner: Learner, x: np.ndarray) -> np.ndarray:
        return learner.net.logits(x).argmax(axis=-1)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({params})"


class FineTune(Method):
    """The lower bound: cross-entropy on the new classes' data only; no memory, no distillation."""

    name = "finetune"

    def spec(self, step: Step) -> dict:
        return {"terms": [classification_term()]}


class Joint(Method):
    """The upper bound: cross-entropy on every seen class's data at each step."""

    name = "joint"

    def spec(self, step: Step) -> dict:
        return {"terms": [classification_term()]}

    def training_data(self, learner: Learner, step: Step) -> tuple[np.ndarray, np.ndarray]:
        return learner.train.of(range(step.num_total))


class LwFParams(_Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature T (Li & Hoiem: 2).")
    distillation_weight: float = Field(1.0, ge=0, description="λ_o, the distillation term's weight.")


class LwF(Method):
    """Learning without Forgetting (Li & Hoiem 2016), single-head class-incremental form.

    ``classification``: cross-entropy over the new classes (their own softmax),
    weight 1; ``distillation``: KD at T on the old classes' logits, weight λ_o.
    New data only: no memory.
    """

    name = "lwf"
    Params = LwFParams

    def spec(self, step: Step) -> dict:
        terms = [{"name": "classification", "outputs": ["logits"], "target": "target", "weight": 1.0,
                  "loss": {"name": "incremental_classification", "params": {"num_old": step.num_old}}}]
        if step.num_old:
            terms.append(distillation_term(step.num_old, self.params.temperature,
                                           self.params.distillation_weight))
        return {"terms": terms}


class ICaRLParams(_Params):
    classifier: Literal["nme", "cnn"] = Field("nme", description="nme: nearest mean of exemplars (iCaRL); "
                                                                  "cnn: the network's logits.")


class ICaRL(Method):
    """iCaRL (Rebuffi et al. 2017): sigmoid BCE on the target layout, herding, nearest mean of exemplars.

    The BCE over all classes splits into ``classification`` (new-class
    columns, one-hot targets) and ``distillation`` (old-class columns,
    targets sigmoid of the previous model's logits), both weight 1: their sum
    is iCaRL's loss.  Trains on new data plus exemplars.
    """

    name = "icarl"
    replay = True
    Params = ICaRLParams

    @property
    def classifier(self) -> str:
        return self.params.classifier

    def spec(self, step: Step) -> dict:
        def bce(name, columns):
            return {"name": name, "outputs": ["logits"], "target": "target", "weight": 1.0,
                    "loss": {"name": "icarl_bce", "params": {"num_old": step.num_old, "columns": columns}}}

        terms = [bce("classification", "new")]
        if step.num_old:
            terms.append(bce("distillation", "old"))
        return {"terms": terms}

    def predict(self, learner: Learner, x: np.ndarray) -> np.ndarray:
        if self.params.classifier == "cnn":
            return super().predict(learner, x)
        means = class_means(learner, learner.net.num_classes)
        feats = normalize(learner.net.features(x))
        dist = ((feats[:, None, :] - means[None, :, :]) ** 2).sum(-1)
        return np.nan_to_num(dist, nan=np.inf).argmin(axis=-1)


def class_means(learner: Learner, num_classes: int) -> np.ndarray:
    """iCaRL's class means: the normalised mean of each class's normalised exemplar features
    (NaN for a class without exemplars)."""
    if learner.memory is None:
        raise ValueError("the nearest-mean-of-exemplars classifier needs an exemplar memory")
    means = np.full((num_classes, learner.net.feature_dim), np.nan, "float32")
    data = learner.memory.data()
    if data is None:
        return means
    feats = normalize(learner.net.features(data[0]))  # one pass over every exemplar
    for c in np.unique(data[1]):
        if c < num_classes:
            means[c] = normalize(feats[data[1] == c].mean(0))
    return means


class EEILParams(_Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature (Castro et al.: 2).")
    distillation_weight: float = Field(1.0, ge=0)
    per_step_distillation: bool = Field(
        True, description="Distil each earlier step's classes with their own softmax (the paper's "
                          "one distillation per old classification layer); false: one softmax over all.")
    balanced_epochs: int = Field(30, ge=0, description="Epochs of balanced fine-tuning (the paper's 30; "
                                                       "0: none).")
    balanced_lr_scale: float = Field(0.1, gt=0, description="Learning rate of the fine-tuning, "
                                                             "relative to the optimizer's.")


class EEIL(Method):
    """End-to-End Incremental Learning (Castro et al. 2018).

    Stage 1 on new data plus exemplars: ``classification`` (cross-entropy over
    every seen class) + ``distillation`` (KD on the old classes, per earlier
    step), weights 1 and λ.  Then balanced fine-tuning: the memory, now with
    as many exemplars of each new class as of each old one, at a smaller
    learning rate, with the stage-1 network as the teacher of every class
    (the paper's temporary distillation on the new classes included).
    """

    name = "eeil"
    replay = True
    Params = EEILParams

    def _distillation(self, num_old: int, groups: tuple[int, ...]) -> dict:
        p = self.params
        return distillation_term(num_old, p.temperature, p.distillation_weight,
                                 list(groups) if p.per_step_distillation else None)

    def spec(self, step: Step) -> dict:
        terms = [classification_term()]
        if step.num_old:
            terms.append(self._distillation(step.num_old, step.groups[:-1]))
        return {"terms": terms}

    def balanced_spec(self, step: Step) -> dict:
        return {"terms": [classification_term(), self._distillation(step.num_total, step.groups)]}

    def finish(self, learner: Learner, step: Step) -> None:
        epochs = self.params.balanced_epochs
        if step.index == 0 or epochs == 0:
            return
        x, y = learner.memory.data()
        learner.fit("balanced", self.balanced_spec(step), x, y, step, layout_old=step.num_total,
                    epochs=epochs, lr_scale=self.params.balanced_lr_scale)


class WAParams(_Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature (Zhao et al.: 2).")
    distillation_weight: float | None = Field(
        None, ge=0, le=1, description="λ: the loss is (1 − λ)·classification + λ·distillation; "
                                      "default: old classes / seen classes, as in the paper.")
    align: bool = Field(True, description="Scale the new classes' weight vectors after each step.")
    clip_weights: bool = Field(True, description="Keep the classifier's kernel non-negative (the "
                                                 "paper's weight clipping).")
    bias: bool = Field(False, description="Give the classifier a bias.  Off by default: the paper writes "
                                          "the logits as Wᵀφ(x), and aligning the weight vectors cannot "
                                          "correct a bias that favours the new classes.")


class WA(Method):
    """Weight Aligning (Zhao et al. 2020).

    ``classification`` (cross-entropy over every seen class), weight 1 − λ, and
    ``distillation`` (KD on the old classes), weight λ = old / seen classes;
    new data plus exemplars.  Afterwards the new classes' weight vectors are
    scaled by γ = mean ‖w_old‖ / mean ‖w_new‖.  The kernel is kept
    non-negative after every optimiser step (weight clipping), and the
    classifier has no bias (logits Wᵀφ(x)).
    """

    name = "wa"
    replay = True
    Params = WAParams

    @property
    def head(self) -> dict:
        return {"nonnegative": self.params.clip_weights, "bias": self.params.bias}

    def spec(self, step: Step) -> dict:
        if not step.num_old:
            return {"terms": [classification_term()]}
        lam = self.params.distillation_weight
        lam = step.num_old / step.num_total if lam is None else lam
        return {"terms": [classification_term(1.0 - lam),
                          distillation_term(step.num_old, self.params.temperature, lam)]}

    def finish(self, learner: Learner, step: Step) -> None:
        if step.index and self.params.align:
            from .network import align_weights

            learner.note("gamma", align_weights(learner.net.head, step.num_old))


METHODS: dict[str, type[Method]] = {m.name: m for m in (FineTune, Joint, LwF, ICaRL, EEIL, WA)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, METHODS, n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise LookupError(f"unknown method {name!r}; {hint}methods: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["Step", "Method", "METHODS", "get_method", "FineTune", "Joint", "LwF", "ICaRL", "EEIL", "WA",
           "classification_term", "distillation_term", "class_means"]
