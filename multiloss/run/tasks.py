"""One dataset per task, interleaved by a sampler (``tasks:`` and ``sampler:`` of a run config).

    tasks:
      depth: {data: {source: npz, params: {path: depth.npz, inputs: [image]}}}
      seg:   {data: {source: image_folder, params: {path: seg/}}, labels: [seg]}
    sampler: {weighted: {depth: 2, seg: 1}}     # or round_robin (the default), proportional

**Labels.**  A task carries the labels of ``labels`` (default: the task's own name): each entry is a
target of the loss spec (a head, or a cross-output term's target) or a term (its target).  Every
target the loss spec reads must be carried by some task.  Terms that read no target are in every batch.

**Batches.**  Each training step draws *one* task and takes the next batch of that task's own data
(TF Model Garden's task sampler, LibMTL's ``multi_input`` mode).  The batch carries that task's
targets; every other target is there as zeros with a sample weight of 0 (``sample_weight`` keyed by
target, the one way multiloss expresses a missing label), so those terms are absent: they add exactly
0 to the loss and the gradient, the weighting strategies leave them out (``present`` = 0), their
logged ``<term>_loss`` and ``<term>_weight`` are means over the batches that carried them (0 in an
epoch where none did), and their heads' metrics skip the batch.  A task's own ``sample_weight`` (a dataset's third element) applies to its targets.

**Samplers.**  The task of step ``s`` of epoch ``e`` (0-based, ``S`` steps an epoch, ``T`` tasks in
config order):

- ``round_robin``: ``(e·S + s) mod T``;
- ``proportional``: drawn with probability ∝ the task's number of training examples;
- ``weighted: {task: w}``: drawn with probability ∝ ``w`` (every task named, ``w`` > 0);

the draws of epoch ``e`` are ``numpy.random.default_rng([seed, e]).choice(T, S, p=p)``, so they
are the same for the same seed.  Each task's data is repeated, pass after pass, so a small task
cycles and every training batch is full; pass p of task i is shuffled by
:func:`~multiloss.run.data.epoch_seed` ``(seed + i, p)``.  So a resumed run draws the tasks the
uninterrupted run would have and continues each task's data where it was (a task whose dataset
does not know its length starts its passes again).

**Epoch length** ``S``: ``train.steps_per_epoch``, else Σ_tasks ⌈examples / batch_size⌉ (as many
batches as one pass over every task).

**Validation and evaluation.**  Each task's ``val`` (``test``, ``train``) split is evaluated on its
own labels only, the tasks one after another, the other targets absent as in training: so
``val_<term>_loss`` and ``val_<head>_<metric>`` are the task's own validation values (pooled over
the tasks that carry the same label), with the keys of every run (:func:`~multiloss.run.config.logged_keys`);
``val_loss`` is the mean total over all the validation batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..spec.validation import Problems, did_you_mean
from .data import Part, Splits, input_shapes, weight_key_problem

SAMPLERS = ("round_robin", "proportional", "weighted")
SPLITS = ("train", "val", "test")


# --- the config --------------------------------------------------------------------------------


def sampler_kind(sampler: Any) -> tuple[str, dict | None]:
    """``(kind, weights)`` of a ``sampler:`` value (``weights`` only for ``weighted``); ValueError if neither form."""
    if isinstance(sampler, str) and sampler in ("round_robin", "proportional"):
        return sampler, None
    if isinstance(sampler, dict) and list(sampler) == ["weighted"] and isinstance(sampler["weighted"], dict):
        return "weighted", dict(sampler["weighted"])
    given = "null" if sampler is None else repr(sampler)
    close = did_you_mean(sampler, ("round_robin", "proportional")) if isinstance(sampler, str) else ""
    raise ValueError(f"{given} is not a sampler; {close}valid: round_robin, proportional, or "
                     "{weighted: {<task>: <weight>, ...}}")


def sampler_problems(sampler: Any, tasks: list[str]) -> Problems:
    """Problems of ``sampler:`` for the tasks ``tasks``."""
    try:
        kind, weights = sampler_kind(sampler)
    except ValueError as exc:
        return [(("sampler",), str(exc))]
    if kind != "weighted":
        return []
    problems: Problems = []
    for name, w in weights.items():
        if name not in tasks:
            problems.append((("sampler", "weighted", name), f"{name!r} is not a task; {did_you_mean(name, tasks)}"
                                                            f"tasks: {', '.join(tasks)}"))
        elif isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            problems.append((("sampler", "weighted", name), f"a weight must be a number > 0, got {w!r}"))
    missing = [t for t in tasks if t not in weights]
    if missing:
        problems.append((("sampler", "weighted"), f"give every task a weight; missing: {', '.join(missing)}"))
    return problems


def label_targets(cfg) -> tuple[dict[str, list[str]], Problems]:
    """``{task: [target keys]}`` of ``tasks.<task>.labels`` (targets or terms), and the problems."""
    terms = {t.name: t.target for t in cfg.spec.resolve()}
    valid = target_keys(cfg)
    out, problems = {}, []
    for task, tc in cfg.tasks.items():
        given = tc.labels if tc.labels is not None else [task]
        keys = []
        for i, label in enumerate(given):
            path = ("tasks", task, "labels", i) if tc.labels is not None else ("tasks", task)
            key = label if label in valid else terms.get(label)
            if key is None:
                what = f"term {label!r} reads no target" if label in terms else f"{label!r} is no target or term"
                hint = "" if tc.labels is not None else "; name what this task's data labels with `labels: [...]`"
                problems.append((path, f"{what} of the loss spec; {did_you_mean(label, valid + list(terms))}"
                                       f"targets: {', '.join(valid)}{hint}"))
            elif key not in keys:
                keys.append(key)
        out[task] = keys
    carried = {k for keys in out.values() for k in keys}
    lost = [k for k in valid if k not in carried]
    if lost and not problems:
        problems.append((("tasks",), f"no task carries the target(s) {', '.join(lost)}; add them to a task's "
                                     "`labels: [...]` (or a task named after them)"))
    return out, problems


def target_keys(cfg) -> list[str]:
    """Every key of y the loss spec and metrics read: term targets and head names."""
    keys = [t.target for t in cfg.spec.resolve() if t.target is not None]
    keys += [h for h in cfg.spec.head_metrics()]
    return list(dict.fromkeys(keys))


# --- the data ----------------------------------------------------------------------------------


def task_order(kind: str, probabilities: np.ndarray | None, steps: int, seed: int, epoch: int) -> np.ndarray:
    """The task index of each of the ``steps`` steps of ``epoch`` (the rule of the module docstring)."""
    n = len(probabilities)
    if kind == "round_robin":
        return (epoch * steps + np.arange(steps)) % n
    return np.random.default_rng([seed, epoch]).choice(n, steps, p=probabilities)


def probabilities(kind: str, weights: dict | None, sizes: dict[str, int]) -> np.ndarray:
    """Each task's probability of being drawn (round_robin: its share of the steps)."""
    raw = {"round_robin": {t: 1.0 for t in sizes}, "proportional": sizes, "weighted": weights}[kind]
    p = np.array([float(raw[t]) for t in sizes])
    return p / p.sum()


class TaskError(ValueError):
    """A problem of the per-task data, with its YAML path."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def as_dataset(part: Part, keys: dict[str, str]) -> tuple[Part, dict[str, str]]:
    """A dataset part (arrays become ``from_tensor_slices`` of the inputs and the ``keys`` targets only),
    with the ``targets`` mapping :meth:`Part.batches` then takes."""
    if part.is_dataset:
        return part, keys
    import tensorflow as tf

    arrays = part.renamed(keys)
    return Part(tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y))), {k: k for k in keys}


def part_targets(part: Part) -> list[str]:
    y = part.element_spec()[1] if part.is_dataset else part.y
    return sorted(y) if isinstance(y, dict) else []


@dataclass
class TaskData:
    """The splits of every task, and how they are batched and interleaved."""

    names: list[str]
    splits: dict[str, Splits]
    labels: dict[str, list[str]]        # task -> the target keys it carries
    keys: list[str]                     # every target key, in the order of the loss spec
    source_keys: dict[str, str]         # target key -> data target (cfg.targets)
    kind: str
    probabilities: np.ndarray
    steps: int
    batch_size: int
    seed: int
    shuffle: bool
    info: dict
    specs: dict[str, Any]               # target key -> (shape, dtype) of one example

    def parts(self) -> list[Part]:
        """Every task's parts (as :meth:`Splits.parts`)."""
        return [p for splits in self.splits.values() for p in splits.parts()]

    def task_batches(self, i: int, split: str, train: bool, start: int = 0, count: int | None = None):
        """Task ``i``'s batches of ``split`` as ``(x, y, sample_weight)`` over every target key; in
        training its passes without end, each reshuffled, or with ``count`` the ``count`` batches from
        example ``start`` on of its passes (:meth:`Part.stream`; without end when its length is unknown)."""
        import tensorflow as tf

        task = self.names[i]
        part = getattr(self.splits[task], split)
        own = {k: self.source_keys.get(k, k) for k in self.labels[task]}
        part, mapping = as_dataset(part, own)
        ds = None if not train or count is None else \
            part.stream(self.batch_size, self.shuffle, self.seed + i, start, count, mapping)
        if ds is None:
            ds = part.batches(self.batch_size, shuffle=train and self.shuffle, seed=self.seed + i,
                              targets=mapping, repeat=train)
        keys, specs = self.keys, self.specs

        def complete(x, y, *sw):
            first = next(iter(x.values())) if isinstance(x, dict) else x
            n = tf.shape(first)[0]
            given = sw[0] if sw else None
            y_out, w_out = {}, {}
            for k in keys:
                if k in y:
                    y_out[k] = y[k]
                    w = given.get(k) if isinstance(given, dict) else given
                    w_out[k] = tf.ones([n], "float32") if w is None else tf.cast(w, "float32")
                else:
                    shape, dtype = specs[k]
                    y_out[k] = tf.zeros(tf.concat([[n], tf.constant(shape, "int32")], 0), dtype)
                    w_out[k] = tf.zeros([n], "float32")
            return x, y_out, w_out

        return ds.map(complete)

    def train_dataset(self, initial_epoch: int, epochs: int):
        """The interleaved training batches of epochs ``initial_epoch`` .. ``epochs - 1`` (``steps`` each)."""
        import tensorflow as tf

        def draws(epochs: range) -> np.ndarray:
            return np.concatenate([task_order(self.kind, self.probabilities, self.steps, self.seed, e)
                                   for e in epochs] or [np.zeros(0, "int64")]).astype("int64")

        order, done = draws(range(initial_epoch, max(epochs, initial_epoch + 1))), draws(range(initial_epoch))
        count, before = (np.bincount(a, minlength=len(self.names)) for a in (order, done))
        choice = tf.data.Dataset.from_tensor_slices(order)
        tasks = [self.task_batches(i, "train", True, int(before[i]) * self.batch_size, int(count[i]))
                 for i in range(len(self.names))]
        return tf.data.Dataset.choose_from_datasets(tasks, choice).prefetch(tf.data.AUTOTUNE)

    def evaluation(self, split: str):
        """Every task's ``split`` (once, unshuffled), the tasks one after another; None when no task has one."""
        import tensorflow as tf

        parts = [self.task_batches(i, split, False) for i, t in enumerate(self.names)
                 if getattr(self.splits[t], split) is not None]
        if not parts:
            return None
        ds = parts[0]
        for more in parts[1:]:
            ds = ds.concatenate(more)
        return ds.prefetch(tf.data.AUTOTUNE)


def merged_info(infos: dict[str, dict]) -> dict:
    """One ``info`` for the model builder: what the tasks agree on (keys that differ are left out), and
    ``tasks``: each task's own."""
    merged: dict = {}
    clash: set = set()
    for info in infos.values():
        for k, v in info.items():
            if k in merged and merged[k] != v:
                clash.add(k)
            merged.setdefault(k, v)
    return {**{k: v for k, v in merged.items() if k not in clash}, "tasks": dict(infos)}


def task_data(cfg, splits: dict[str, Splits], labels: dict[str, list[str]]) -> TaskData:
    """Check the tasks' splits against each other and the labels they must carry; TaskError naming the path."""
    names = list(cfg.tasks)
    keys = target_keys(cfg)
    shapes = {}
    specs: dict[str, Any] = {}
    for task in names:
        where = ("tasks", task, "data")
        for split in SPLITS:
            part = getattr(splits[task], split)
            if part is None:
                if split == "train":
                    raise TaskError(where, f"task {task!r}'s data source gives no train split")
                continue
            have = part_targets(part)
            problem = weight_key_problem(part, split, labels[task])
            if problem:
                raise TaskError(where, f"task {task!r}: {problem}")
            for k in labels[task]:
                src = cfg.targets.get(k, k)
                if src not in have:
                    raise TaskError(where, f"the {split} data of task {task!r} has no target {src!r} for {k!r}; "
                                           f"its targets: {', '.join(have) or 'none'}; map it with "
                                           f"`targets: {{{k}: <data target>}}`, or change tasks.{task}.labels")
            shape = input_shapes(part)
            if split == "train":
                shapes[task] = shape
            if shape != shapes[names[0]]:
                other = names[0] if task != names[0] else "its train split"
                raise TaskError(where, f"task {task!r}'s {split} inputs are {shape}, but task {other!r}'s are "
                                       f"{shapes[names[0]]}; every task's data must give the model's inputs "
                                       "(the same names and shapes)")
        part, mapping = as_dataset(splits[task].train, {k: cfg.targets.get(k, k) for k in labels[task]})
        y_spec = part.element_spec()[1]
        for k in labels[task]:
            spec = y_spec[mapping[k]]
            if k not in specs:
                if None in tuple(spec.shape):
                    raise TaskError(where, f"task {task!r}'s target {k!r} is shaped {tuple(spec.shape)}: an "
                                           "absent target is filled with zeros, so its shape must be fully known")
                specs[k] = (list(spec.shape), spec.dtype)
    sizes = {t: splits[t].train.size for t in names}
    steps = cfg.train.steps_per_epoch
    kind, weights = sampler_kind(cfg.sampler)
    unknown = [t for t, n in sizes.items() if n is None]
    if unknown and (steps is None or kind == "proportional"):
        need = "sampler: proportional needs" if kind == "proportional" else "the epoch length needs"
        raise TaskError(("tasks", unknown[0], "data"),
                        f"{need} the number of training examples, and task {unknown[0]!r}'s dataset does not know "
                        "it (cardinality unknown); give train.steps_per_epoch" +
                        (" and another sampler" if kind == "proportional" else "")
                        + ", or a dataset of known size")
    if steps is None:
        steps = sum(-(-sizes[t] // cfg.train.batch_size) for t in names)
    info = merged_info({t: splits[t].info for t in names})
    return TaskData(names, splits, labels, keys, dict(cfg.targets), kind,
                    probabilities(kind, weights, {t: sizes[t] or 1 for t in names}), steps, cfg.train.batch_size,
                    cfg.seed, cfg.train.shuffle, info, specs)


__all__ = ["SAMPLERS", "TaskData", "TaskError", "label_targets", "merged_info", "probabilities", "sampler_kind",
           "sampler_problems", "target_keys", "task_data", "task_order"]
