"""The learner: network, memory and data of a scenario, and one step of training.

:meth:`Learner.run_step` is the same for every method: expand the
classifier, train the method's spec on its data, update the memory, run the
method's extra stages.  :meth:`Learner.fit` trains one stage: it builds the
targets the spec reads (``class``, and the ``target`` layout from the network
as it stands before the stage), compiles the network with the spec through
``ml.compile`` and calls ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras
import numpy as np

from ..core.compile import compile as ml_compile
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


class Learner:
    """Trains an :class:`IncrementalNet` step by step; records each stage's epochs."""

    def __init__(self, net: IncrementalNet, memory: ExemplarMemory | None, train: ClassData, *,
                 epochs: int, batch_size: int,
                 optimizer: Callable[[float, int], keras.optimizers.Optimizer], verbose: int = 0,
                 nonfinite: str = "stop"):
        self.net, self.memory, self.train = net, memory, train
        self.epochs, self.batch_size, self.verbose = epochs, batch_size, verbose
        self.nonfinite = nonfinite  # see ml.compile
        self.optimizer = optimizer  # (lr_scale, steps of the stage) -> a fresh optimizer
        self.history: list[dict] = []  # one row per stage epoch
        self.notes: dict[str, float] = {}  # figures of the current step (WA's gamma, ...)

    def note(self, key: str, value: float) -> None:
        self.notes[key] = float(value)

    def run_step(self, method: Method, step: Step) -> None:
        """Train ``method`` for ``step``: expand, train, update the memory, extra stages."""
        self.notes = {}
        self.net.expand(step.num_total)
        x, y = method.training_data(self, step)
        self.fit("train", method.spec(step), x, y, step, extra=method.targets(self, x, y, step))
        if method.replay and self.memory is not None:
            self.memory.add(*self.train.of(step.new_classes), step.new_classes, features=self.net.features)
        method.finish(self, step)

    def fit(self, stage: str, spec: dict, x: np.ndarray, labels: np.ndarray, step: Step, *,
            layout_old: int | None = None, epochs: int | None = None, lr_scale: float = 1.0,
            extra: dict | None = None, model: keras.Model | None = None) -> list[dict]:
        """Train one stage on ``(x, labels)`` with the loss ``spec``; returns its epoch rows.

        ``layout_old``: how many leading classes the ``target`` layout takes
        from the network as it is now (default: the step's old classes);
        ``extra``: more targets by name; ``model``: train this Keras model
        instead of the network's (BiC's bias-correction layer).
        """
        y = {"class": labels.astype("int32"), **(extra or {})}
        if any(t.get("target") == "target" for t in spec.get("terms", [])):
            num_old = step.num_old if layout_old is None else layout_old
            teacher = self.net.logits(x)[:, :num_old] if num_old else None
            y["target"] = incremental_targets(teacher, labels, num_old, step.num_total)
        model = self.net.model() if model is None else model
        epochs = self.epochs if epochs is None else epochs
        steps = -(-len(x) // self.batch_size) * epochs
        ml_compile(model, spec, optimizer=self.optimizer(lr_scale, steps), nonfinite=self.nonfinite)
        logs = model.fit(x, y, epochs=epochs, batch_size=self.batch_size, shuffle=True,
                         verbose=self.verbose).history
        rows = [{"step": step.index, "stage": stage, "epoch": e + 1,
                 **{k: float(v[e]) for k, v in logs.items()}} for e in range(epochs)]
        self.history += rows
        return rows


__all__ = ["Learner", "ClassData"]
