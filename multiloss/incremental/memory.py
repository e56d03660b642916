"""The exemplar memory: a few training samples of every class seen so far.

Two regimes:

* a fixed total budget K shared by the classes seen so far: with n classes,
  class i (in arrival order) keeps ``⌈(K − i) / n⌉`` exemplars, i.e.
  ``⌊K/n⌋`` or ``⌈K/n⌉``, the earliest classes taking the remainder, so the
  total is exactly K (when every class has that many samples) and no class
  holds more than ``⌈K/n⌉``.  Each class's share only shrinks as classes
  arrive: it is trimmed, never refilled;
* a fixed number ``per_class`` of exemplars per class (the memory grows).

Exemplars are kept in selection order, so trimming keeps a prefix: with
``herding`` (Rebuffi et al. 2017) the samples whose running mean best
approximates the class mean, with ``random`` a seeded random draw.

What is kept is the rows of the training data as the run holds them: the
inputs, or for an ``image_folder`` the records ``(path, label)`` (a numpy
structured array; see :mod:`multiloss.incremental.inputs`), which the
network's feature function reads, so herding sees the images' features
while the memory and its ``.npz`` hold file paths.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from ..run import atomic

Selection = Literal["herding", "random"]
SELECTIONS = ("herding", "random")


def herding_order(features: np.ndarray, m: int) -> np.ndarray:
    """Indices of ``m`` rows chosen by herding, in the order chosen.

    Step k picks, among the rows not chosen yet, the one whose addition makes
    the mean of the k chosen rows closest (Euclidean) to the mean of all rows
    (iCaRL, Algorithm 4).  The features are used as given; iCaRL normalises
    them first (see :func:`normalize`).  Ties go to the lowest index.
    """
    f = np.asarray(features, "float64")
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {f.shape}")
    m = min(int(m), len(f))
    mu = f.mean(axis=0)
    chosen: list[int] = []
    running = np.zeros_like(mu)
    free = np.ones(len(f), bool)
    for k in range(1, m + 1):
        dist = np.linalg.norm(mu - (running + f) / k, axis=1)
        dist[~free] = np.inf
        i = int(np.argmin(dist))
        chosen.append(i)
        free[i] = False
        running += f[i]
    return np.asarray(chosen, "int64")


def normalize(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    f = np.asarray(features, "float32")
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), eps)


def budget_quotas(budget: int, num_classes: int) -> list[int]:
    """The per-class shares of a total ``budget`` among ``num_classes`` (arrival order)."""
    return [math.ceil((budget - i) / num_classes) if budget > i else 0 for i in range(num_classes)]


class ExemplarMemory:
    """Exemplars of every class seen so far, under a total budget or a per-class count.

    ``ExemplarMemory(200)``: 200 exemplars shared by the classes seen so far;
    ``ExemplarMemory(per_class=20)``: 20 per class.  ``selection`` is
    ``"herding"`` (needs a feature function at :meth:`add`) or ``"random"``.
    """

    def __init__(self, budget: int | None = None, selection: Selection = "herding",
                 per_class: int | None = None, seed: int = 0):
        if (budget is None) == (per_class is None):
            raise ValueError("give either a total `budget` or `per_class`, not both and not neither")
        for name, value in (("budget", budget), ("per_class", per_class)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.budget, self.per_class, self.selection, self.seed = budget, per_class, selection, int(seed)
        self._x: dict[int, np.ndarray] = {}  # class -> exemplars in selection order

    # --- what is kept -----------------------------------------------------------

    @property
    def classes(self) -> list[int]:
        """Classes in arrival order."""
        return list(self._x)

    def counts(self) -> dict[int, int]:
        return {c: len(v) for c, v in self._x.items()}

    def __len__(self) -> int:
        return sum(len(v) for v in self._x.values())

    def quotas(self, num_classes: int) -> list[int]:
        """How many exemplars each of ``num_classes`` classes (arrival order) may keep."""
        if self.per_class is not None:
            return [self.per_class] * num_classes
        return budget_quotas(self.budget, num_classes)

    def exemplars(self, cls: int) -> np.ndarray:
        return self._x[cls]

    def data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(x, class ids)`` of every exemplar, or None when empty."""
        if not len(self):
            return None
        xs = [v for v in self._x.values() if len(v)]
        ys = [np.full(len(v), c, "int32") for c, v in self._x.items() if len(v)]
        return np.concatenate(xs), np.concatenate(ys)

    # --- changing it ------------------------------------------------------------

    def add(self, x: np.ndarray, labels: np.ndarray, classes: list[int],
            features: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Trim the old classes to their new share, then select exemplars of ``classes``.

        ``x``, ``labels``: the training samples (at least those of
        ``classes``); ``features``: a function ``x -> [N, D]`` (herding uses
        the L2-normalised features, as iCaRL).
        """
        labels = np.asarray(labels)
        classes = [int(c) for c in classes]
        known = [c for c in classes if c in self._x]
        if known:
            raise ValueError(f"classes {known} are in the memory already")
        if len(set(classes)) != len(classes):
            raise ValueError(f"duplicate classes in {classes}")
        if self.selection == "herding" and features is None:
            raise ValueError("herding selection needs a feature function")
        quotas = self.quotas(len(self._x) + len(classes))
        for quota, c in zip(quotas, list(self._x)):
            self._x[c] = self._x[c][:quota]
        for quota, c in zip(quotas[len(self._x):], classes):
            rows = np.flatnonzero(labels == c)
            if not len(rows):
                raise ValueError(f"no training samples of class {c}")
            if self.selection == "herding":
                order = herding_order(normalize(features(x[rows])), quota)
            else:
                order = np.random.default_rng([self.seed, c]).permutation(len(rows))[:quota]
            self._x[c] = np.ascontiguousarray(x[rows[order]])

    # --- saving -------------------------------------------------------------------

    def config(self) -> dict:
        return {"budget": self.budget, "per_class": self.per_class, "selection": self.selection,
                "seed": self.seed}

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory to ``path`` (``.npz``) atomically."""
        arrays = {f"class_{c}": v for c, v in self._x.items()}
        meta = json.dumps({**self.config(), "classes": self.classes})
        atomic.write_with(Path(path), lambda tmp: np.savez(tmp, meta=np.array(meta), **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExemplarMemory:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            memory = cls(meta["budget"], meta["selection"], meta["per_class"], meta["seed"])
            for c in meta["classes"]:
                memory._x[int(c)] = f[f"class_{c}"]
        return memory

    def __repr__(self) -> str:
        regime = f"budget={self.budget}" if self.budget is not None else f"per_class={self.per_class}"
        return f"ExemplarMemory({regime}, selection={self.selection!r}, {len(self)} exemplars, " \
               f"{len(self._x)} classes)"


__all__ = ["ExemplarMemory", "herding_order", "normalize", "budget_quotas"]
