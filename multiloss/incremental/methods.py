"""Class-incremental methods: each a small object behind one interface.

A method says, for a step,

* ``spec(step)``: the loss spec of its training stage, whose terms
  (``classification``, ``distillation``) are summed, weighted and logged by
  the composite loss like any other multiloss term;
* ``training_data(learner, step)``: what it trains on (new classes, plus the
  exemplar memory when ``replay``; every seen class for ``joint``);
* ``prepare(learner, step)``: after the classifier is expanded, before training (PODNet's and LUCIR's
  imprinting of the new classes' weights and freezing of the old ones);
* ``scores(learner, x)``: per-class scores whose argmax is ``predict`` (the task-incremental evaluation
  restricts them to a task's classes);
* ``finish(learner, step)``: its extra stages, after the memory is updated
  (EEIL's balanced fine-tuning, WA's weight aligning);
* ``predict(learner, x)``: its classifier (the network's logits, or iCaRL's
  nearest mean of exemplars);
* ``build_net(build)``: its network (one backbone and a linear classifier by
  default; PODNet's local similarity classifier, DER's growing extractors);
* ``targets(learner, x, labels, step)``: extra targets its spec reads (the old
  network's features for PODNet, DER's auxiliary labels); computed once per
  stage from the network before it, or, when the batches are augmented
  (``train.augment``), for each augmented batch with ``learner.net`` a frozen
  copy of that network;
* ``inference_model(learner)``: the Keras model saved as ``model.keras``
  (``inputs -> scores`` whose argmax is ``predict``'s class).

Methods are registered by name (:func:`register_method`); a config may also
name a :class:`Method` subclass by import string ``package.module:Class``.

Targets every spec may read: ``class`` (class positions, sparse) and
``target`` (the layout ``[previous model's logits for the old classes |
one-hot over the new]``, see :mod:`multiloss.incremental.losses`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..spec.imports import import_object, is_import_string
from ..spec.registry import Registry
from .memory import normalize
from .network import DERNet, FOSTERNet, IncrementalNet, MEMONet, PenaltyNet

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
                      groups: list[int] | None = None, t_squared: bool = True) -> dict:
    """Knowledge distillation on the layout's old columns (T²·KL at ``temperature``; KL without
    ``t_squared``)."""
    params: dict[str, Any] = {"num_old": num_old, "temperature": temperature}
    if groups:
        params["groups"] = list(groups)
    if not t_squared:
        params["t_squared"] = False
    return {"name": "distillation", "outputs": ["logits"], "target": "target", "weight": weight,
            "loss": {"name": "incremental_distillation", "params": params}}


class Method:
    """The interface.  Subclasses set ``name``, ``replay`` and ``Params``."""

    name: ClassVar[str] = ""
    replay: ClassVar[bool] = False   # trains on the exemplar memory too (needs `memory:`)
    #: Parameters whose defaults changed: their old values, for a checkpoint that did not record its own.
    legacy_defaults: ClassVar[dict] = {}
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

    def build_net(self, build: Callable[[], Any]) -> Any:
        """The network: ``build()`` makes a backbone (the config's, parameters bound)."""
        return IncrementalNet(build(), nonnegative_head=self.head["nonnegative"], head_bias=self.head["bias"])

    def spec(self, step: Step) -> dict:
        raise NotImplementedError

    def targets(self, learner: Learner, x: np.ndarray, labels: np.ndarray, step: Step) -> dict:
        """Extra targets of the training stage (besides ``class`` and ``target``); none by default."""
        return {}

    def training_data(self, learner: Learner, step: Step) -> tuple[np.ndarray, np.ndarray]:
        x, y = learner.train.of(step.new_classes)
        if self.replay and learner.memory is not None and len(learner.memory):
            mx, my = learner.memory.data()
            x, y = np.concatenate([x, mx]), np.concatenate([y, my])
        return x, y

    def prepare(self, learner: Learner, step: Step) -> None:
        """After the classifier is expanded, before the training stage (PODNet's imprinting); none by default."""

    def finish(self, learner: Learner, step: Step) -> None:
        """Extra stages after training and the memory update (none by default)."""

    def predict(self, learner: Learner, x: np.ndarray) -> np.ndarray:
        return learner.net.logits(x).argmax(axis=-1)

    def scores(self, learner: Learner, x: np.ndarray) -> np.ndarray:
        """Per-class scores whose argmax is :meth:`predict` (the task-incremental evaluation restricts them
        to a task's classes); the network's logits by default."""
        return learner.net.logits(x)

    def inference_model(self, learner: Learner):
        """The Keras model ``inputs -> scores`` over the seen classes whose argmax is :meth:`predict`'s
        class (saved as ``model.keras`` after every step); by default the network's logits."""
        return learner.net.inference_model()

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
    t_squared: bool = Field(True, description="Distil with T²·KL (Hinton); false: KL, the scale of PyCIL's "
                                              "softened cross-entropy (¼ at T = 2).")


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
                                           self.params.distillation_weight, t_squared=self.params.t_squared))
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
        return self.scores(learner, x).argmax(axis=-1)

    def scores(self, learner: Learner, x: np.ndarray) -> np.ndarray:
        if self.params.classifier == "cnn":
            return super().scores(learner, x)
        means = class_means(learner, learner.net.num_classes)
        feats = normalize(learner.net.features(x))
        dist = ((feats[:, None, :] - means[None, :, :]) ** 2).sum(-1)
        return -np.nan_to_num(dist, nan=np.inf)

    def inference_model(self, learner: Learner):
        """With ``classifier: nme``, the class means of the exemplars in a layer after the backbone."""
        if self.params.classifier == "cnn":
            return super().inference_model(learner)
        return learner.net.inference_model(means=class_means(learner, learner.net.num_classes))


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
    t_squared: bool = Field(True, description="Distil with T²·KL (Hinton); false: KL, the scale of PyCIL's "
                                              "softened cross-entropy (¼ at T = 2).")


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
                                 list(groups) if p.per_step_distillation else None, t_squared=p.t_squared)

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
    t_squared: bool = Field(True, description="Distil with T²·KL (Hinton); false: KL, the scale of PyCIL's "
                                              "softened cross-entropy (¼ at T = 2).")
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
        return balanced_kd_spec(step, self.params.temperature, self.params.distillation_weight,
                                self.params.t_squared)

    def finish(self, learner: Learner, step: Step) -> None:
        if step.index and self.params.align:
            from .network import align_weights

            learner.note("gamma", align_weights(learner.net.head, step.num_old))


class Replay(Method):
    """Rehearsal only: cross-entropy over every seen class on the new data plus the exemplars
    (the plain replay baseline of PyCIL/Avalanche); no distillation."""

    name = "replay"
    replay = True

    def spec(self, step: Step) -> dict:
        return {"terms": [classification_term()]}


def balanced_kd_spec(step: Step, temperature: float, lam: float | None, t_squared: bool = True) -> dict:
    """``(1 − λ)·classification + λ·distillation``, λ = old / seen classes by default (WA, BiC)."""
    if not step.num_old:
        return {"terms": [classification_term()]}
    lam = step.num_old / step.num_total if lam is None else lam
    return {"terms": [classification_term(1.0 - lam),
                      distillation_term(step.num_old, temperature, lam, t_squared=t_squared)]}


class BiCParams(_Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature (Wu et al.: 2).")
    distillation_weight: float | None = Field(
        None, ge=0, le=1, description="λ: (1 − λ)·classification + λ·distillation; default old / seen classes.")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of each old class's exemplars held out "
                                                             "for the bias correction (the paper's 1:9 split); "
                                                             "as many samples of each new class are held out.")
    bias_epochs: int = Field(30, ge=1, description="Epochs of the bias-correction stage.")
    bias_lr_scale: float = Field(1.0, gt=0, description="Its learning rate, relative to the optimizer's.")
    t_squared: bool = Field(True, description="Distil with T²·KL (Hinton); false: KL, the scale of PyCIL's "
                                              "softened cross-entropy (¼ at T = 2).")


class BiCHead:
    """BiC's bias-correction layer on the logits: the new classes' logits ``α·z + β``, the old ones
    unchanged (α = 1, β = 0 initially); a Keras model ``logits -> {"logits": corrected}``."""

    def __init__(self, num_old: int, num_total: int):
        import keras
        from keras import layers, ops

        class Correct(layers.Layer):
            def build(self, shape):
                self.alpha = self.add_weight(shape=(), initializer="ones", name="alpha")
                self.beta = self.add_weight(shape=(), initializer="zeros", name="beta")

            def call(self, z):
                return ops.concatenate([z[:, :num_old], self.alpha * z[:, num_old:] + self.beta], axis=-1)

        inputs = keras.Input((num_total,), name="raw_logits")
        self.layer = Correct(name="logits")  # the output the spec reads
        self.model = keras.Model(inputs, {"logits": self.layer(inputs)}, name="bic_bias")

    @property
    def alpha_beta(self) -> tuple[float, float]:
        return float(np.asarray(self.layer.alpha)), float(np.asarray(self.layer.beta))


def fold_bias_correction(head, num_old: int, alpha: float, beta: float) -> None:
    """Fold ``α·z + β`` on the new classes into a linear classifier: ``W_new ← α·W_new``,
    ``b_new ← α·b_new + β`` (the same logits, without a separate layer)."""
    if not head.use_bias:
        raise ValueError("folding a bias correction needs a classifier with a bias")
    kernel, bias = (np.asarray(w).copy() for w in head.get_weights())
    kernel[:, num_old:] *= alpha
    bias[num_old:] = alpha * bias[num_old:] + beta
    head.set_weights([kernel, bias])


class BiC(Method):
    """Large Scale Incremental Learning / BiC (Wu et al. 2019).

    Stage 1 on new data plus exemplars, less a held-out split: ``classification``
    (CE over every seen class, weight 1 − λ) + ``distillation`` (KD at T on the
    old classes, weight λ = old / seen).  Stage 2 (``bias`` in the history):
    the network frozen, the two parameters α, β of the bias-correction layer
    (new classes' logits ``α·z + β``) are trained with ``classification`` on
    the held-out split, which has as many samples of each class.  The
    correction is then folded into the classifier (``W_new·α``,
    ``α·b_new + β``), which gives the same logits; the next step's teacher
    is thus the corrected network, as in the paper.
    """

    name = "bic"
    replay = True
    Params = BiCParams

    def __init__(self, **params):
        super().__init__(**params)
        self._held_out: tuple[np.ndarray, np.ndarray] | None = None

    def spec(self, step: Step) -> dict:
        return balanced_kd_spec(step, self.params.temperature, self.params.distillation_weight,
                                self.params.t_squared)

    def split(self, learner: Learner, step: Step) -> tuple[tuple, tuple]:
        """(training, held-out) split of new data + exemplars: ``val_fraction`` of each old class's
        exemplars (at least 1) and as many samples of each new class, drawn with a seeded RNG."""
        x_new, y_new = learner.train.of(step.new_classes)
        mx, my = learner.memory.data()
        rng = np.random.default_rng([learner.memory.seed, step.index])
        per_class = max(1, round(self.params.val_fraction * min(learner.memory.counts().values())))
        keep_new = np.ones(len(y_new), bool)
        keep_old = np.ones(len(my), bool)
        for y, keep in ((my, keep_old), (y_new, keep_new)):
            for c in np.unique(y):
                rows = np.flatnonzero(y == c)
                keep[rng.choice(rows, min(per_class, len(rows) - 1), replace=False)] = False
        train = (np.concatenate([x_new[keep_new], mx[keep_old]]), np.concatenate([y_new[keep_new], my[keep_old]]))
        held = (np.concatenate([x_new[~keep_new], mx[~keep_old]]), np.concatenate([y_new[~keep_new], my[~keep_old]]))
        return train, held

    def training_data(self, learner: Learner, step: Step) -> tuple[np.ndarray, np.ndarray]:
        self._held_out = None
        if not step.num_old or learner.memory is None or not len(learner.memory):
            return super().training_data(learner, step)
        train, self._held_out = self.split(learner, step)
        return train

    def finish(self, learner: Learner, step: Step) -> None:
        if self._held_out is None:
            return
        x, y = self._held_out
        bias = BiCHead(step.num_old, step.num_total)
        learner.fit("bias", {"terms": [classification_term()]}, learner.net.logits(x), y, step,
                    model=bias.model, epochs=self.params.bias_epochs, lr_scale=self.params.bias_lr_scale)
        alpha, beta = bias.alpha_beta
        fold_bias_correction(learner.net.head, step.num_old, alpha, beta)
        learner.note("bias_alpha", alpha)
        learner.note("bias_beta", beta)
        self._held_out = None


class PODNetParams(_Params):
    spatial_weight: float = Field(3.0, ge=0, description="λ_c of POD-spatial (the paper's 3; PyCIL's 5).")
    flat_weight: float = Field(1.0, ge=0, description="λ_f of POD-flat (1).")
    adaptive: bool = Field(True, description="Scale both by √(seen classes / new classes), as the paper.")
    proxies: int = Field(10, ge=1, description="Proxies per class of the local similarity classifier (10).")
    margin: float = Field(0.6, ge=0, description="The NCA loss's margin δ (0.6).")
    scale: float = Field(16.0, gt=0, description="Initial value of the classifier's scale η (the reference "
                                                 "code starts at 1 and trains ~100× longer; at 1 the few "
                                                 "epochs here leave old classes near 0 on digits).")
    learn_scale: bool = Field(True, description="Learn η (the paper); false: keep it at `scale`.")
    margin_units: Literal["logit", "similarity"] = Field(
        "logit", description="Units of δ: logit: subtracted from z_y = η·ŷ_y (δ/η in similarity units); "
                             "similarity: η(ŷ_y − δ), the paper's Eq. 7 (the reference code's margin cancels out).")
    balanced_epochs: int = Field(20, ge=0, description="Epochs of the class-balanced fine-tuning of the "
                                                       "classifier on the memory (PyCIL: 20; 0: none).")
    balanced_lr_scale: float = Field(0.1, gt=0, description="Its learning rate, relative to the optimizer's "
                                                            "(PyCIL: 0.005 / 0.1).")
    freeze_old_proxies: bool = Field(True, description="The old classes' proxies get no gradient in the main "
                                                       "stage (the reference code's `old_weights: 0.`, PyCIL); they "
                                                       "are trained in the class-balanced fine-tuning.")
    imprint: Literal["kmeans", "normal", "none"] = Field(
        "kmeans", description="New classes' proxies from their training samples' normalised features: the K "
                              "centres of a k-means (the reference code's CIFAR-100 setting), K draws from "
                              "N(mean, std) (its `normal`), or none (random, as before).")
    features: Literal["pre_relu", "post_relu"] = Field(
        "pre_relu", description="The features the classifier, POD-flat, imprinting and herding read: before the "
                                "backbone's last ReLU (the reference code: `last_relu: false`, "
                                "`classifier_no_act`), or after it.")


class PODNet(Method):
    """PODNet (Douillard et al. 2020): pooled-output distillation and a local similarity classifier.

    ``classification``: the NCA loss with margin δ on the classifier's scaled
    similarities (:func:`~multiloss.incremental.losses.nca`), weight 1;
    ``pod_flat``: 1 − cos between the old and new embeddings, weight
    λ_f·√(seen/new); ``pod_spatial``: the distance between the old and new
    width- and height-pooled intermediate feature maps (each stage's map
    L2-normalised), weight λ_c·√(seen/new).  New data plus exemplars; the
    classifier is the network's (CNN) output.  After each step the
    classifier alone is fine-tuned on the (class-balanced) memory with the
    NCA loss (``balanced`` in the history), as the paper's CBF.
    """

    name = "podnet"
    replay = True
    Params = PODNetParams
    #: The defaults before issue 19, for checkpoints saved then (see runner.method_for).
    legacy_defaults: ClassVar[dict] = {"freeze_old_proxies": False, "imprint": "none", "features": "post_relu"}

    def __init__(self, **params):
        super().__init__(**params)
        self.pod_sizes: list[int] | None = None  # widths of the pooled maps, set by build_net

    def build_net(self, build):
        net = IncrementalNet(build(), head="lsc", proxies=self.params.proxies, pod=True, scale=self.params.scale,
                             learn_scale=self.params.learn_scale, pre_relu=self.params.features == "pre_relu")
        self.pod_sizes = list(net.pod_sizes)
        return net

    def prepare(self, learner: Learner, step: Step) -> None:
        prepare_cosine_head(learner, step, self.params.imprint, self.params.freeze_old_proxies)

    def factor(self, step: Step) -> float:
        return math.sqrt(step.num_total / (step.num_total - step.num_old)) if self.params.adaptive else 1.0

    def spec(self, step: Step) -> dict:
        p = self.params
        similarity = p.margin_units == "similarity"
        terms: list[dict] = [{"name": "classification", "outputs": ["scaled" if similarity else "logits"],
                              "target": "class", "weight": 1.0,
                              "loss": {"name": "nca", "params": {"margin": p.margin, "hinge": True,
                                                                 "margin_units": p.margin_units}}}]
        if step.num_old:
            f = self.factor(step)
            terms += [
                {"name": "pod_flat", "outputs": ["features"], "target": "old_features",
                 "weight": p.flat_weight * f, "loss": {"name": "pod_flat"}},
                {"name": "pod_spatial", "outputs": ["pod"], "target": "old_pod",
                 "weight": p.spatial_weight * f,
                 "loss": {"name": "pod_spatial", "params": {"sizes": self.sizes()}}},
            ]
        return {"terms": terms}

    def sizes(self) -> list[int]:
        if not self.pod_sizes:
            raise ValueError("PODNet's spec needs the widths of the pooled feature maps: build its network "
                             "first (method.build_net) or set method.pod_sizes")
        return list(self.pod_sizes)

    def targets(self, learner: Learner, x: np.ndarray, labels: np.ndarray, step: Step) -> dict:
        if not step.num_old:
            return {}
        return {"old_features": learner.net.features(x), "old_pod": learner.net.pooled_maps(x)}

    def finish(self, learner: Learner, step: Step) -> None:
        """Class-balanced fine-tuning: the classifier alone (backbone frozen), NCA on the memory."""
        if step.index and self.params.balanced_epochs:
            learner.net.head.frozen_units = 0   # the reference code tunes every proxy here
            finetune_classifier(learner, step, {"terms": [self.spec(step)["terms"][0]]}, [learner.net.backbone],
                                self.params.balanced_epochs, self.params.balanced_lr_scale)


class DERParams(_Params):
    aux_weight: float = Field(1.0, ge=0, description="λ_a of the auxiliary loss (Yan et al.: 1).")
    balanced_epochs: int = Field(50, ge=0, description="Epochs of the paper's classifier re-training on "
                                                       "class-balanced data (the memory), extractors frozen (the "
                                                       "reference code's decouple stage: 50); 0: none.")
    balanced_lr_scale: float = Field(0.5, gt=0, description="Its learning rate, relative to the optimizer's (the "
                                                            "reference code: 0.05 / 0.1).")
    align: bool = Field(False, description="Weight aligning of the new classes' weight vectors after each step, "
                                           "as PyCIL's DER (instead of or after the re-training).")
    extractor_init: Literal["previous", "random"] = Field(
        "previous", description="Each new extractor starts as a copy of the previous one (the reference code's "
                                "and PyCIL's `load_state_dict`), or from a fresh random initialisation.")
    reset_classifier: bool = Field(True, description="Re-initialise the classifier before its re-training (the "
                                                     "reference code's `classifier.reset_parameters()`).")
    balanced_temperature: float = Field(5.0, gt=0, description="Temperature T of the re-training's cross-entropy "
                                                               "on z / T (the reference code's decouple "
                                                               "temperature: 5).")


class DER(Method):
    """DER, Dynamically Expandable Representation (Yan et al. 2021), without pruning.

    Every step adds a fresh feature extractor (the config's backbone) and
    freezes the old ones; the classifier reads all extractors' features
    concatenated.  ``classification``: CE over every seen class, weight 1;
    ``auxiliary`` (from the second step): CE of the auxiliary classifier on
    the newest extractor's features over ``new classes + 1`` ("old"), weight
    λ_a.  New data plus exemplars.  After each step the classifier alone is
    re-trained on the class-balanced memory (the paper's classifier learning
    stage; ``balanced`` in the history).  Left out: the channel-level mask
    pruning (the network grows by one whole extractor per step).
    """

    name = "der"
    replay = True
    Params = DERParams
    #: The defaults before issue 19, for checkpoints saved then (see runner.method_for).
    legacy_defaults: ClassVar[dict] = {"extractor_init": "random", "reset_classifier": False,
                                       "balanced_temperature": 1.0, "balanced_epochs": 20, "balanced_lr_scale": 0.1}

    def build_net(self, build):
        return DERNet(build, copy_previous=self.params.extractor_init == "previous")

    def spec(self, step: Step) -> dict:
        terms = [classification_term()]
        if step.num_old:
            terms.append({"name": "auxiliary", "outputs": ["aux_logits"], "target": "aux_class",
                          "weight": self.params.aux_weight,
                          "loss": {"name": "sparse_categorical_crossentropy", "params": {"from_logits": True}}})
        return {"terms": terms}

    def targets(self, learner: Learner, x: np.ndarray, labels: np.ndarray, step: Step) -> dict:
        if not step.num_old:
            return {}
        return {"aux_class": aux_labels(labels, step.num_old)}

    def balanced_spec(self) -> dict:
        """The classifier re-training's loss: cross-entropy of softmax(z / T) over every seen class."""
        t = self.params.balanced_temperature
        if t == 1:
            return {"terms": [classification_term()]}
        return {"terms": [{"name": "classification", "outputs": ["logits"], "target": "class", "weight": 1.0,
                           "loss": {"name": "tempered_crossentropy", "params": {"temperature": t}}}]}

    def finish(self, learner: Learner, step: Step) -> None:
        if not step.index:
            return
        if self.params.balanced_epochs:
            if self.params.reset_classifier:
                learner.net.reset_classifier()
            finetune_classifier(learner, step, self.balanced_spec(), learner.net.parts,
                                self.params.balanced_epochs, self.params.balanced_lr_scale)
        if self.params.align:
            from .network import align_weights

            learner.note("gamma", align_weights(learner.net.head, step.num_old))


def class_balanced_weights(counts, beta: float) -> np.ndarray:
    """FOSTER's per-class weights from the effective number of samples (Cui et al. 2019):
    ``w_k = (1 − β) / (1 − β^{n_k})``, scaled to sum to the number of classes (a class with no
    sample counts as one); β = 0 gives every class 1."""
    n = np.maximum(np.asarray(counts, "float64"), 1.0)
    w = (1.0 - beta) / (1.0 - beta ** n)
    return w / w.sum() * len(w)


class FOSTERParams(DERParams):
    aux_weight: float = Field(1.0, ge=0, description="Weight of the feature enhancement: CE of the auxiliary "
                                                     "classifier over every seen class on the new extractor's "
                                                     "features (PyCIL: 1).")
    kd_weight: float = Field(1.0, ge=0, description="λ of the boosting's KD from the old model on the old classes "
                                                    "(PyCIL's lambda_okd: 1).")
    temperature: float = Field(2.0, gt=0, description="T of the boosting's KD and of the compression's balanced KD "
                                                      "(PyCIL: 2).")
    beta_boost: float = Field(0.96, ge=0, lt=1, description="β₁ of the logits alignment's class weights (PyCIL, "
                                                            "CIFAR: 0.96); 0: every weight 1 (plain CE).")
    beta_compress: float = Field(0.97, ge=0, lt=1, description="β₂ of the balanced KD's class weights (PyCIL, "
                                                               "CIFAR: 0.97); 0: plain KD.")
    compression_epochs: int | None = Field(
        None, ge=0, description="Epochs of the compression (PyCIL, CIFAR: 130 after 170 of boosting); null: "
                                "train.epochs; 0: no compression, the network keeps every extractor (DER's growth).")
    compression_lr_scale: float = Field(1.0, gt=0, description="The compression's learning rate, relative to the "
                                                               "optimizer's (PyCIL: the same).")
    teacher_align: bool = Field(False, description="Weight aligning of the boosted classifier before the "
                                                   "compression (PyCIL's is_teacher_wa: off).")
    align: bool = Field(False, description="Weight aligning of the classifier after the compression (PyCIL's "
                                           "is_student_wa: off).")
    balanced_epochs: int = Field(0, ge=0, description="DER's classifier re-training on the memory, after the "
                                                      "compression (not part of FOSTER: 0).")


class FOSTER(DER):
    """FOSTER, feature boosting and compression (Wang et al. 2022), on DER's machinery.

    Boosting (step ≥ 1): the old extractor and classifier frozen, a new extractor started as a copy of the old
    one, a classifier over both extractors' features (:class:`~multiloss.incremental.network.FOSTERNet`).
    ``classification``: the logits alignment, CE of softmax(z_k / w_k) with the class-balanced weights
    ``w`` at β₁ (:func:`class_balanced_weights` of the step's class counts), weight 1;
    ``feature_enhancement``: CE of the auxiliary classifier over every seen class on the new features,
    weight λ_fe; ``distillation``: KL at T between the old model's and the student's old-class logits,
    weight λ_kd.  Then (``compression`` in the history) the two-branch network teaches a single extractor,
    started from the old one, with the balanced KD at β₂ on the same data (new data plus the exemplars
    as they were before the step).  Simplified (see the docs): the compression runs ``train.epochs``
    (PyCIL: 130 against 170 of boosting), a constant β₁ and λ_kd (no schedule), the new classes' exemplars
    herded on the boosted network's features (PyCIL herds after compressing).
    """

    name = "foster"
    replay = True
    Params = FOSTERParams
    legacy_defaults: ClassVar[dict] = {}

    def __init__(self, **params):
        super().__init__(**params)
        #: Training samples of each seen class in the step's data (set by training_data; the spec reads it).
        self.counts: np.ndarray | None = None
        self._stage: tuple[np.ndarray, np.ndarray] | None = None

    def build_net(self, build):
        return FOSTERNet(build, copy_previous=self.params.extractor_init == "previous",
                         compress=self.params.compression_epochs != 0)

    def training_data(self, learner: Learner, step: Step) -> tuple[np.ndarray, np.ndarray]:
        x, y = super().training_data(learner, step)
        self.counts = np.bincount(np.asarray(y, "int64"), minlength=step.num_total)[: step.num_total]
        self._stage = (x, y)
        return x, y

    def class_weights(self, step: Step, beta: float) -> list[float]:
        """The class-balanced weights of the step's classes at ``beta`` (:func:`class_balanced_weights`)."""
        if self.counts is None or len(self.counts) != step.num_total:
            raise ValueError("FOSTER's spec needs the step's class counts: call training_data first or set "
                             "method.counts (samples of each seen class)")
        return class_balanced_weights(self.counts, beta).tolist()

    def spec(self, step: Step) -> dict:
        if not step.num_old:
            return {"terms": [classification_term()]}
        p = self.params
        return {"terms": [
            {"name": "classification", "outputs": ["logits"], "target": "class", "weight": 1.0,
             "loss": {"name": "class_scaled_crossentropy",
                      "params": {"scales": self.class_weights(step, p.beta_boost)}}},
            {"name": "feature_enhancement", "outputs": ["aux_logits"], "target": "class", "weight": p.aux_weight,
             "loss": {"name": "sparse_categorical_crossentropy", "params": {"from_logits": True}}},
            {"name": "distillation", "outputs": ["logits"], "target": "old_logits", "weight": p.kd_weight,
             "loss": {"name": "incremental_distillation",
                      "params": {"num_old": step.num_old, "temperature": p.temperature, "t_squared": False}}},
        ]}

    def compression_spec(self, step: Step) -> dict:
        """The compression's loss: the balanced KD of the student's logits on the boosted network's."""
        p = self.params
        return {"terms": [{"name": "distillation", "outputs": ["logits"], "target": "teacher_logits", "weight": 1.0,
                           "loss": {"name": "balanced_distillation",
                                    "params": {"weights": self.class_weights(step, p.beta_compress),
                                               "temperature": p.temperature}}}]}

    def targets(self, learner: Learner, x: np.ndarray, labels: np.ndarray, step: Step) -> dict:
        return {"old_logits": learner.net.old_logits(x)} if step.num_old else {}

    def finish(self, learner: Learner, step: Step) -> None:
        if not step.index:
            return
        p = self.params
        if p.teacher_align:
            from .network import align_weights

            learner.note("teacher_gamma", align_weights(learner.net.head, step.num_old))
        if p.compression_epochs != 0 and self._stage is not None:
            teacher = learner.net.copy()
            learner.net.compress()
            x, y = self._stage
            learner.fit("compression", self.compression_spec(step), x, y, step,
                        epochs=p.compression_epochs, lr_scale=p.compression_lr_scale,
                        targets=lambda _learner, xb, yb: {"teacher_logits": teacher.logits(xb)})
        self._stage = None
        super().finish(learner, step)   # DER's optional re-training and weight aligning, on the student


class MEMOParams(DERParams):
    split_layer: str | None = Field(
        None, description="Name of the backbone's last shared layer (the end of the generalised blocks); null: "
                          "chosen by specialized_stages.")
    specialized_stages: int = Field(
        1, ge=1, description="How many of the backbone's last stages form the specialised block, copied at every "
                             "step (when split_layer is null): a stage is the layers at one spatial resolution "
                             "(ResNet-32: 1 = stage 3, PyCIL's CIFAR split; ResNet-18: 1 = stage 4; cnn: 1 = the "
                             "last pooling and the Dense layer, 2 = also the last conv), or one Dense layer of a "
                             "backbone without feature maps (mlp).")
    train_shared: bool = Field(False, description="Keep training the shared blocks after the first step (PyCIL's "
                                                  "train_base, true in its exps/memo.json); false: frozen.")
    align: bool = Field(True, description="Weight aligning of the new classes' weight vectors after each step "
                                          "(PyCIL's MEMO: weight_align).")
    balanced_epochs: int = Field(0, ge=0, description="DER's classifier re-training on the memory (PyCIL's MEMO has "
                                                      "none: 0).")


class MEMO(DER):
    """MEMO, memory-efficient expandable model (Zhou et al. 2023), on DER's machinery.

    The backbone is cut into shallow generalised blocks, shared by every step and frozen after the first,
    and a deep specialised block, one per step, each new one a copy of the previous
    (:class:`~multiloss.incremental.network.MEMONet`; the cut: ``split_layer`` or ``specialized_stages``).
    The loss is DER's: ``classification`` (CE over every seen class on the blocks' concatenated features)
    and ``auxiliary`` (CE over new classes + "old" on the newest block, weight λ_a); new data plus
    exemplars; after each step the new classes' weight vectors are aligned (PyCIL), DER's classifier
    re-training off by default.
    """

    name = "memo"
    replay = True
    Params = MEMOParams
    legacy_defaults: ClassVar[dict] = {}

    def build_net(self, build):
        p = self.params
        return MEMONet(build, p.split_layer, p.specialized_stages, copy_previous=p.extractor_init == "previous",
                       train_shared=p.train_shared)


class LUCIRParams(_Params):
    lambda_base: float = Field(5.0, ge=0, description="λ_base of the less-forget constraint (the paper's CIFAR "
                                                      "value 5; 10 on ImageNet).")
    adaptive: bool = Field(True, description="λ = λ_base·√(old classes / new classes) (the paper's adaptive "
                                             "weight); false: λ = λ_base.")
    ranking_weight: float = Field(1.0, ge=0, description="Weight of the margin ranking loss (the code's lw_mr: 1).")
    k: int = Field(2, ge=1, description="Hard negatives per old-class sample, K (2); at most the step's new "
                                        "classes (all of them where fewer).")
    margin: float = Field(0.5, ge=0, description="Margin m of the ranking loss, in cosine units (0.5).")
    scale: float = Field(16.0, gt=0, description="Initial σ of the cosine classifier, learned (the code starts at "
                                                 "1 and trains 160 epochs; as PODNet's `scale` here).")
    imprint: bool = Field(True, description="New classes' weights from their samples' normalised mean feature "
                                            "(the code's --imprint_weights).")
    freeze_old: bool = Field(True, description="The old classes' weights get no gradient (the code's lr 0 for fc1).")
    features: Literal["pre_relu", "post_relu"] = Field(
        "pre_relu", description="Features before the backbone's last ReLU (the paper's ResNet drops it) or after.")
    balanced_epochs: int = Field(0, ge=0, description="Class-balanced fine-tuning of the classifier on the memory "
                                                      "(the code's --cb_finetune, used on ImageNet; 0: none).")
    balanced_lr_scale: float = Field(0.1, gt=0)


class LUCIR(Method):
    """LUCIR / UCIR (Hou et al. 2019): cosine normalisation, less-forget constraint, inter-class separation.

    The classifier is ``σ·cos(θ_c, f(x))`` (a local similarity classifier with one proxy per class, σ
    learned).  ``classification``: cross-entropy on σ·cos, weight 1; ``less_forget`` (from the second
    step): ``1 − cos(f*(x), f(x))`` between the old and new normalised features (Eq. 6), weight
    ``λ = λ_base·√(|C_o| / |C_n|)`` (Eq. 7); ``margin_ranking``: for each old-class sample, the mean over
    its K hardest new classes of ``max(0, m − cos_y + cos_k)`` (Eq. 8), weight 1.  New data plus
    exemplars.  New classes' weights are imprinted and the old ones frozen in the main stage.
    """

    name = "lucir"
    replay = True
    Params = LUCIRParams

    def build_net(self, build):
        return IncrementalNet(build(), head="lsc", proxies=1, scale=self.params.scale, learn_scale=True,
                              pre_relu=self.params.features == "pre_relu")

    def prepare(self, learner: Learner, step: Step) -> None:
        prepare_cosine_head(learner, step, "kmeans" if self.params.imprint else "none", self.params.freeze_old)

    def lam(self, step: Step) -> float:
        p = self.params
        return p.lambda_base * math.sqrt(step.num_old / (step.num_total - step.num_old)) if p.adaptive \
            else p.lambda_base

    def spec(self, step: Step) -> dict:
        terms = [classification_term()]
        if step.num_old:
            p = self.params
            terms += [
                {"name": "less_forget", "outputs": ["features"], "target": "old_features", "weight": self.lam(step),
                 "loss": {"name": "pod_flat"}},
                {"name": "margin_ranking", "outputs": ["scaled"], "target": "class", "weight": p.ranking_weight,
                 # K hard negatives among the step's new classes, at most as many as there are (increment 1)
                 "loss": {"name": "margin_ranking", "params": {"num_old": step.num_old,
                                                               "k": min(p.k, len(step.new_classes)),
                                                               "margin": p.margin}}},
            ]
        return {"terms": terms}

    def targets(self, learner: Learner, x: np.ndarray, labels: np.ndarray, step: Step) -> dict:
        return {"old_features": learner.net.features(x)} if step.num_old else {}

    def finish(self, learner: Learner, step: Step) -> None:
        if step.index and self.params.balanced_epochs:
            learner.net.head.frozen_units = 0
            finetune_classifier(learner, step, {"terms": [classification_term()]}, [learner.net.backbone],
                                self.params.balanced_epochs, self.params.balanced_lr_scale)


class EWCParams(_Params):
    strength: float = Field(5000.0, ge=0, description="λ: the penalty is (λ/2)·Σ_i F_i (θ_i − θ*_i)² (FACIL's "
                                                      "default 5000).")
    variant: Literal["online", "per_task"] = Field(
        "online", description="online: one Fisher F ← γ·F + F_t and one anchor θ* (the latest), Schwarz et al. "
                              "2018; per_task: one penalty per earlier task with its own F_t and θ*_t, "
                              "Kirkpatrick et al. 2017.")
    gamma: float = Field(1.0, ge=0, le=1, description="The online variant's decay γ of the earlier Fisher.")
    fisher_labels: Literal["predicted", "true"] = Field(
        "predicted", description="Labels of the log-likelihood whose squared gradients estimate F: the network's "
                                 "argmax (FACIL's max_pred) or the true classes (the empirical Fisher).")


class EWC(Method):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017) on the backbone, class-incremental.

    ``classification``: cross-entropy over every seen class on the new data (no exemplars), weight 1;
    ``ewc`` (from the second step): the quadratic penalty ``Σ_t Σ_i F_{t,i} (θ_i − θ*_{t,i})²``, weight
    λ/2.  After each step the diagonal Fisher of the backbone's weights is estimated on that step's
    training data, as FACIL does: per batch of size b the squared gradient of the mean negative
    log-likelihood, times b, summed and divided by N.  The penalty's statistics (Σ F, Σ F·θ*,
    Σ F·θ*²) are weights of the network, so checkpoints hold them.
    """

    name = "ewc"
    Params = EWCParams

    def build_net(self, build):
        return PenaltyNet(build())

    def spec(self, step: Step) -> dict:
        terms = [classification_term()]
        if step.num_old:
            terms.append({"name": "ewc", "outputs": ["penalty"], "target": "class",
                          "weight": self.params.strength / 2, "loss": {"name": "penalty"}})
        return {"terms": terms}

    def finish(self, learner: Learner, step: Step) -> None:
        x, y = learner.train.of(step.new_classes)
        fisher = diagonal_fisher(learner.net, x, y, learner.batch_size, self.params.fisher_labels)
        learner.net.penalty.consolidate(fisher, online=self.params.variant == "online", gamma=self.params.gamma)


def diagonal_fisher(net: Any, x: np.ndarray, labels: np.ndarray, batch_size: int,
                    labels_from: str = "predicted") -> list[np.ndarray]:
    """FACIL's diagonal Fisher of ``net.backbone``'s trainable weights: Σ_batches b·(∇ mean NLL)² / N."""
    import tensorflow as tf

    from .inputs import is_records

    variables = net.backbone.trainable_variables
    total = [np.zeros(v.shape, "float64") for v in variables]
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        xb = net.reader(xb) if is_records(xb) else xb
        with tf.GradientTape() as tape:
            logits = net.head(net.backbone(xb, training=False))
            yb = tf.argmax(logits, -1) if labels_from == "predicted" else labels[i:i + batch_size]
            nll = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
        for acc, g in zip(total, tape.gradient(nll, variables)):
            if g is not None:
                acc += len(xb) * np.asarray(g, "float64") ** 2
    return [t / len(x) for t in total]


def prepare_cosine_head(learner: Learner, step: Step, imprint: str, freeze_old: bool) -> None:
    """Before a step of a method with a local similarity (cosine) classifier: imprint the new classes'
    proxies from the current backbone's features of their training samples (from the second step; at the
    first the backbone is untrained, as the reference code's random start), and freeze the old ones."""
    from .network import imprint_proxies

    head = learner.net.head
    head.frozen_units = step.num_old if freeze_old else 0
    if step.num_old and imprint != "none":
        x, y = learner.train.of(step.new_classes)
        imprint_proxies(head, learner.net.features(x), y, step.new_classes, imprint,
                        seed=int(np.random.default_rng([learner.seed, step.index]).integers(2 ** 31)))


def finetune_classifier(learner: Learner, step: Step, spec: dict, frozen: list, epochs: int,
                        lr_scale: float) -> None:
    """Class-balanced fine-tuning (``balanced`` in the history): the classifier alone, the
    ``frozen`` extractors fixed, on the memory (as many exemplars of each class)."""
    if learner.memory is None or not len(learner.memory):
        return
    x, y = learner.memory.data()
    flags = [m.trainable for m in frozen]
    for m in frozen:
        m.trainable = False
    try:
        learner.fit("balanced", spec, x, y, step, epochs=epochs, lr_scale=lr_scale)
    finally:
        for m, flag in zip(frozen, flags):
            m.trainable = flag


def aux_labels(labels: np.ndarray, num_old: int) -> np.ndarray:
    """DER's auxiliary labels: 0 for an old class, ``1 + (position − num_old)`` for a new one."""
    labels = np.asarray(labels)
    return np.where(labels >= num_old, labels - num_old + 1, 0).astype("int32")


# --- the registry -------------------------------------------------------------------

def _method_problem(obj: Any) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        return f"{obj!r} is not a subclass of multiloss.incremental.Method"
    if obj.spec is Method.spec:
        return f"{obj.__name__} does not define spec(step)"
    return None


#: Method name -> Method subclass.
METHODS: Registry[type[Method]] = Registry(
    "method", check=_method_problem,
    hint="valid: {valid}; or an import string 'package.module:Class' naming a Method subclass")


def register_method(method: type[Method] | str | None = None, *, name: str | None = None):
    """Register a :class:`Method` subclass under ``name`` (default: its ``name``).

    ``register_method(MyMethod)``, ``@register_method``, ``@register_method("mine")``
    or ``register_method("package.module:MyMethod")`` (imported, then registered).
    A name already taken by another class is refused (the conflict policy of
    :class:`~multiloss.spec.registry.Registry`).
    """
    if isinstance(method, str) and not is_import_string(method):
        return register_method(name=method)

    def add(cls):
        if isinstance(cls, str):
            cls = import_object(cls)
        key = name or getattr(cls, "name", None)
        if not key and isinstance(cls, type) and issubclass(cls, Method):
            raise ValueError(f"{cls.__name__} has no `name`; give register_method(..., name='...')")
        return METHODS.register(key, cls)

    return add if method is None else add(method)


for _m in (FineTune, Joint, LwF, ICaRL, EEIL, WA, Replay, BiC, PODNet, DER, LUCIR, EWC, FOSTER, MEMO):
    register_method(_m)


def get_method(name: str) -> type[Method]:
    """A registered method by name, or a Method subclass by import string ``package.module:Class``."""
    return METHODS.get(name)


__all__ = ["Step", "Method", "METHODS", "get_method", "register_method", "FineTune", "Joint", "LwF", "ICaRL",
           "EEIL", "WA", "Replay", "BiC", "PODNet", "DER", "LUCIR", "EWC", "FOSTER", "MEMO", "classification_term",
           "class_balanced_weights",
           "diagonal_fisher", "prepare_cosine_head", "distillation_term",
           "class_means", "balanced_kd_spec", "finetune_classifier", "fold_bias_correction", "aux_labels", "BiCHead"]
