"""The learner: network, memory and data of a scenario, and one step of training.

:meth:`Learner.run_step` is the same for every method: expand the
classifier, train the method's spec on its data, update the memory, run the
method's extra stages.  :meth:`Learner.fit` trains one stage: it builds the
targets the spec reads (``class``, and the ``target`` layout from the network
as it stands before the stage), compiles the network with the spec through
``ml.compile`` and calls ``fit``.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras
import numpy as np

from ..core.compile import compile as ml_compile
from ..run.data import Part
from ..spec.errors import SpecError
from .inputs import is_records, stage_batches
from .losses import incremental_targets
from .memory import ExemplarMemory
from .methods import Method, Step
from .network import IncrementalNet


@dataclass
class ClassData:
    """Inputs and class *positions* (indices in the class order) of one split."""

    x: np.ndarray
    y: np.ndarray

    def of(self, positions: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(np.isin(self.y, np.fromiter(positions, "int64")))
        return self.x[rows], self.y[rows]


class StageSpecError(SpecError):
    """A method's loss spec for one stage of a step that does not validate (or fit the network)."""

    def __init__(self, exc: SpecError, stage: str, step: Step) -> None:
        super().__init__(exc.problems, f"its loss spec for step {step.index} ({stage} stage)")
        self.stage, self.step = stage, step


class Learner:
    """Trains an :class:`IncrementalNet` step by step; records each stage's epochs.

    ``augment``: ``seed -> augmenter`` (a function of a batch of inputs), applied to the training
    batches of every stage that trains the network (the memory's exemplars included), never to what
    the network is only asked about (teacher targets without augmentation, herding features,
    evaluation).  ``seed``: the run's seed, from which each stage's shuffling and augmentation draw.
    """

    def __init__(self, net: IncrementalNet, memory: ExemplarMemory | None, train: ClassData, *,
                 epochs: int, batch_size: int,
                 optimizer: Callable[[float, int], keras.optimizers.Optimizer], verbose: int = 0,
                 nonfinite: str = "stop", augment: Callable[[int], Callable] | None = None, seed: int = 0,
                 setting: str = "class"):
        self.net, self.memory, self.train = net, memory, train
        self.epochs, self.batch_size, self.verbose = epochs, batch_size, verbose
        self.nonfinite = nonfinite  # see ml.compile
        self.optimizer = optimizer  # (lr_scale, steps of the stage) -> a fresh optimizer
        self.augment, self.seed = augment, int(seed)
        self.setting = setting  # "task": the plain cross-entropy terms become one softmax per task (task_heads)
        self.history: list[dict] = []  # one row per stage epoch
        self.notes: dict[str, float] = {}  # figures of the current step (WA's gamma, ...)

    def note(self, key: str, value: float) -> None:
        self.notes[key] = float(value)

    def run_step(self, method: Method, step: Step) -> None:
        """Train ``method`` for ``step``: expand, train, update the memory, extra stages."""
        self.notes = {}
        self.net.expand(step.num_total)
        method.prepare(self, step)
        x, y = method.training_data(self, step)
        self.fit("train", method.spec(step), x, y, step,
                 targets=lambda learner, xb, yb: method.targets(learner, xb, yb, step))
        if method.replay and self.memory is not None:
            self.memory.add(*self.train.of(step.new_classes), step.new_classes, features=self.net.features)
        method.finish(self, step)

    def teacher(self) -> Learner:
        """This learner with a frozen copy of the network: what per-batch targets are computed from."""
        twin = copy.copy(self)
        twin.net = self.net.copy()
        return twin

    def stage_seed(self, step: Step, stage: str) -> int:
        """The seed of one stage's shuffling and augmentation: the same for a step, resumed or not."""
        return int(np.random.default_rng([self.seed, step.index, zlib.crc32(stage.encode())]).integers(2 ** 31))

    def fit(self, stage: str, spec: dict, x: np.ndarray, labels: np.ndarray, step: Step, *,
            layout_old: int | None = None, epochs: int | None = None, lr_scale: float = 1.0,
            extra: dict | None = None, targets: Callable | None = None,
            model: keras.Model | None = None) -> list[dict]:
        """Train one stage on ``(x, labels)`` with the loss ``spec``; returns its epoch rows.

        ``layout_old``: how many leading classes the ``target`` layout takes
        from the network as it is now (default: the step's old classes);
        ``extra``: more targets by name; ``targets``: ``(learner, x, labels)
        -> {name: target}``, targets computed from the inputs by the network as
        it is before the stage (a method's :meth:`~Method.targets`); ``model``:
        train this Keras model on plain arrays instead of the network's (BiC's
        bias-correction layer; nothing is read or augmented).

        Without augmentation the teacher's targets are computed once, on the
        stage's inputs; with it, on each augmented batch, by a frozen copy of
        the network (:meth:`teacher`), as a live teacher would see it.
        """
        labels = labels.astype("int32")
        if self.setting == "task" and model is None:
            spec = task_heads(spec, step.groups)
        y = {"class": labels, **(extra or {})}
        num_old = step.num_old if layout_old is None else layout_old
        layout = any(t.get("target") == "target" for t in spec.get("terms", []))
        own = model is None
        augment = self.augment(self.stage_seed(step, stage)) if own and self.augment is not None else None
        live = None
        if augment is not None and targets is not None and not targets(self, x[:1], labels[:1]):
            targets = None   # the method adds no targets at this stage: no teacher needed for them
        if augment is None:
            if layout:
                teacher = self.net.logits(x)[:, :num_old] if num_old else None
                y["target"] = incremental_targets(teacher, labels, num_old, step.num_total)
            if targets is not None:
                y.update(targets(self, x, labels))
        elif (layout and num_old) or targets is not None:
            frozen = self.teacher()

            def live(xb: np.ndarray, rows: np.ndarray) -> dict:
                out = targets(frozen, xb, labels[rows]) if targets is not None else {}
                if layout:
                    old = frozen.net.logits(xb)[:, :num_old] if num_old else None
                    out["target"] = incremental_targets(old, labels[rows], num_old, step.num_total)
                return out
        elif layout:
            y["target"] = incremental_targets(None, labels, 0, step.num_total)
        model = self.net.model() if own else model
        epochs = self.epochs if epochs is None else epochs
        steps = -(-len(x) // self.batch_size) * epochs
        try:
            ml_compile(model, spec, optimizer=self.optimizer(lr_scale, steps), nonfinite=self.nonfinite)
        except SpecError as exc:
            raise StageSpecError(exc, stage, step) from None
        if own and (augment is not None or is_records(x)):
            data = stage_batches(x, y, self.batch_size, self.stage_seed(step, stage), self.net.reader, augment, live)
            logs = model.fit(data, epochs=epochs, shuffle=False, verbose=self.verbose).history
        else:   # each epoch in its own order (Keras's shuffle repeats one order under a global seed)
            part = Part(x, y)
            data = part.epochs(self.batch_size, range(epochs), True, self.stage_seed(step, stage))
            logs = model.fit(data, epochs=epochs, steps_per_epoch=part.steps(self.batch_size), shuffle=False,
                             verbose=self.verbose).history
        rows = [{"step": step.index, "stage": stage, "epoch": e + 1,
                 **{k: float(v[e]) for k, v in logs.items()}} for e in range(epochs)]
        self.history += rows
        return rows


def task_heads(spec: dict, groups) -> dict:
    """The task-incremental form of a stage's spec: each term with the plain cross-entropy on the class
    positions (``sparse_categorical_crossentropy`` from logits on ``class``) becomes ``task_crossentropy``,
    the softmax over the sample's own task; every other term is kept as it is."""
    terms = []
    for term in spec.get("terms", []):
        loss = term.get("loss", {})
        if term.get("target") == "class" and loss.get("name") == "sparse_categorical_crossentropy" \
                and loss.get("params", {}).get("from_logits"):
            term = {**term, "loss": {"name": "task_crossentropy", "params": {"groups": [int(g) for g in groups]}}}
        terms.append(term)
    return {**spec, "terms": terms}


__all__ = ["Learner", "ClassData", "task_heads"]
