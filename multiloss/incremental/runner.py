"""``multiloss incremental CONFIG``: a whole class-incremental scenario from a config.

Artifacts in ``output_dir/<name>``, each written atomically:

* ``config.yaml``: the resolved config;
* ``metrics.json``: accuracy on all seen classes after each step, each
  task's accuracy (the accuracy matrix), average incremental accuracy, last
  accuracy, forgetting (Chaudhry et al. 2018), the same on the validation
  split, the last step's confusion matrix, minutes;
* ``history.json`` / ``history.csv``: every stage's epochs with each loss
  term and weight;
* ``accuracy.png`` and ``confusion.png``;
* ``model.keras`` and ``classes.json``: after every step, the network as it classifies then (the
  method's classifier: iCaRL's nearest mean of exemplars included), ``inputs -> scores`` over the
  classes seen so far, and the name and data id of each score's class; it loads in a fresh process
  with ``import multiloss``;
* ``checkpoints/``: the network's weights and the exemplar memory after the
  last completed step, then ``state.json`` (written last).  ``--resume``
  continues at the step after it.

The folder is a :class:`~multiloss.run.rundir.RunDir`, as for ``multiloss train``:
an existing run is continued only with ``--resume`` and replaced only with
``--overwrite``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import numpy as np

from ..run.augment import augmenter_for
from ..run.config import load_data
from ..run.console import table
from ..run.data import digest_arrays, read_errors_named
from ..run.kinds import RunKind, register_kind
from ..run.models import build_with
from ..run.optim import build_optimizer
from ..run.precision import dtype_policy
from ..run.rundir import RunDir
from ..spec.errors import RunError, SpecError
from ..spec.loss_spec import load_spec
from ..spec.validation import did_you_mean
from .config import IncrementalConfig, load_incremental_config
from .inputs import MissingTarget, split_data, target_names
from .learner import ClassData, Learner, StageSpecError
from .memory import ExemplarMemory
from .methods import Method, Step, get_method
from .metrics import (
    average_incremental_accuracy,
    backward_transfer,
    class_order,
    confusion_matrix,
    forgetting,
    forward_transfer,
    task_accuracies,
    task_aware_accuracies,
)
from .network import BackboneError, MethodParamError, backbone_problem, get_backbone, saved_backbone
from .plots import plot_accuracy, plot_confusion

# --- the scenario -------------------------------------------------------------

class Scenario:
    """Data of a config as class positions, the class order and the steps' group sizes.

    Any source with a target of class ids (``data.target``, default ``class``): arrays, an ``image_folder`` (its file paths kept, the images
    read when the network sees them) or a ``tf.data`` source (read into arrays); see
    :mod:`multiloss.incremental.inputs`.  ``reader`` reads records into inputs (None for arrays).
    """

    def __init__(self, cfg: IncrementalConfig):
        splits = load_data(cfg)
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        if splits.test is None:
            raise cfg.error([(("data", "source"), "an incremental run needs a test split")])
        data, self.reader = {}, None
        for split, part in parts.items():
            if part is None:
                continue
            try:
                x, labels, reader = split_data(part, split, cfg.data.target)
            except MissingTarget as exc:
                given = "target" in cfg.data.model_fields_set
                raise cfg.error([(("data", "target" if given else "source"), str(exc))]) from None
            except ValueError as exc:
                raise cfg.error([(("data", "source"), f"{exc} (data source {cfg.data.source!r})")]) from None
            if not len(labels):
                raise cfg.error([(("data", "source"), f"the {split} split has no examples")])
            self.reader = self.reader or reader
            data[split] = (x, labels)
        #: Each split's digest (its arrays, or an image folder's file records): what ``--resume`` compares.
        #: A user's own dataset (no ``identity`` from its source) is not compared: its order may change.
        self.digests = {s: digest_arrays({"x": x, "y": y}) if not parts[s].is_dataset or parts[s].identity
                        else None for s, (x, y) in data.items()}
        labels = np.concatenate([y for _, y in data.values()])
        named = (splits.info.get("classes") or {}).get(cfg.data.target)     # a table's, per target
        # Otherwise the info's num_classes and class_names are the `class` target's (or the only one's).
        info = splits.info if cfg.data.target == "class" or len(target_names(splits.train) or []) == 1 else {}
        num_classes = len(named) if named else int(info.get("num_classes") or labels.max() + 1)
        if labels.max() >= num_classes:
            raise cfg.error([(("data", "source"), f"class id {int(labels.max())} in the data, but its info gives "
                                                  f"num_classes {num_classes}")])
        sc = cfg.scenario
        names = named or info.get("class_names") or [str(i) for i in range(num_classes)]
        order = class_ids_of(cfg, sc.class_order, names) if sc.class_order is not None else \
            class_order(num_classes, sc.order_seed)
        if sorted(order) != list(range(num_classes)):
            missing = [f"{c} ({names[c]})" if c < len(names) and names[c] != str(c) else str(c)
                       for c in range(num_classes) if c not in order]
            left = f"; it leaves out {', '.join(missing)}" if missing else ""
            raise cfg.error([(("scenario", "class_order"), f"must be a permutation of the {num_classes} "
                                                           f"class ids 0..{num_classes - 1}{left}")])
        if sc.initial > num_classes:
            raise cfg.error([(("scenario", "initial"), f"{sc.initial} initial classes, but the data has "
                                                       f"{num_classes}")])
        if sc.steps is None:
            if (num_classes - sc.initial) % sc.increment:
                raise cfg.error([(("scenario", "increment"), f"the {num_classes - sc.initial} classes after "
                                  f"the first step do not split into steps of {sc.increment}; change "
                                  "`increment` or set `steps`")])
            n_steps = 1 + (num_classes - sc.initial) // sc.increment
        else:
            n_steps = sc.steps
            if sc.initial + (n_steps - 1) * sc.increment > num_classes:
                raise cfg.error([(("scenario", "steps"), f"{n_steps} steps need {sc.initial} + "
                                  f"{n_steps - 1}×{sc.increment} classes; the data has {num_classes}")])
        self.order = order
        self.groups = [sc.initial] + [sc.increment] * (n_steps - 1)
        memory, seen = cfg.memory, sum(self.groups)
        if memory is not None and memory.budget is not None and memory.budget < seen and get_method(cfg.method.name).replay:
            raise cfg.error([(("memory", "budget"), f"{memory.budget} exemplars cannot keep one of each of the "
                              f"{seen} classes the steps learn: classes would be left with none (never "
                              f"replayed, and no class mean for a nearest-mean classifier); give budget ≥ "
                              f"{seen} or per_class")])
        check_trained(cfg, data, order[: sum(self.groups)], names)
        check_evaluated(cfg, data, order[: self.groups[0]], names)
        self.class_names = [str(names[c]) for c in order]
        self.info = dict(splits.info)
        if "input_shape" not in self.info:
            self.info["input_shape"] = tuple(int(d) for d in (self.reader.input_shape if self.reader is not None
                                                               else data["train"][0].shape[1:]))
        position = np.empty(num_classes, "int64")
        position[np.asarray(order)] = np.arange(num_classes)
        self.parts = {k: None if k not in data else ClassData(data[k][0], position[data[k][1]].astype("int32"))
                      for k in parts}
        #: The source's parts, to name a record that fails to read mid-step (:func:`read_errors_named`).
        self.sources = list(parts.values())

    def step(self, index: int) -> Step:
        return Step(index, tuple(self.groups[: index + 1]))


def class_ids_of(cfg: IncrementalConfig, order: list, names: list) -> list[int]:
    """``scenario.class_order`` as class ids: each entry an id, or one of the data's class names."""
    by_name = {str(n): i for i, n in enumerate(names)}
    out, problems = [], []
    for i, c in enumerate(order):
        if isinstance(c, str) and c not in by_name:
            ids = ", ".join(f"{n}={j}" for n, j in by_name.items())
            problems.append((("scenario", "class_order", i), f"the data has no class named {c!r}; "
                             f"{did_you_mean(c, list(by_name))}its classes (name=id): {ids}"))
        out.append(by_name.get(c, -1) if isinstance(c, str) else int(c))
    if problems:
        raise cfg.error(problems)
    return out


def check_trained(cfg: IncrementalConfig, data: dict[str, tuple], classes: list[int], names: list) -> None:
    """Refuse a class of the scenario's steps (``classes``: data ids) without training examples, named
    by its name and id: it could be neither learned nor kept in the exemplar memory."""
    train = data["train"][1]
    for c in classes:
        if (train == c).any():
            continue
        elsewhere = ", ".join(f"{int((y == c).sum())} in the {s} split" for s, (_, y) in data.items() if s != "train")
        raise cfg.error([(("data", "source"), f"class {str(names[c])!r} (id {c}) has no training examples"
                                              f"{f' ({elsewhere})' if elsewhere else ''}; each class of the "
                                              "scenario's steps needs some: give it training examples, or put it "
                                              "last in scenario.class_order and end scenario.steps before it")])


def check_evaluated(cfg: IncrementalConfig, data: dict[str, tuple], first: list[int], names: list) -> None:
    """Refuse a test or validation split without an example of the first step's classes ``first``
    (data ids): the first step's accuracy on it would be undefined (a small image folder's drawn split)."""
    for split in ("test", "val"):
        if split in data and not np.isin(data[split][1], first).any():
            shown = ", ".join(repr(str(names[c])) for c in first)
            raise cfg.error([(("data", "source"), f"the {split} split has no example of the first step's "
                                                  f"classes ({shown}), so their accuracy after it is undefined; "
                                                  f"give the {split} split more examples (e.g. a larger "
                                                  f"{split}_fraction, or a {split}/ folder) or put a class it "
                                                  "has first in scenario.class_order")])


def backbone_builder(cfg: IncrementalConfig, info: dict):
    """``() -> keras.Model``: the config's backbone (a builder, or the saved model cut at ``features``)."""
    if cfg.model.path is not None:
        path = cfg.model_path()

        def build():
            try:
                return saved_backbone(path, cfg.model.features, info)
            except BackboneError as exc:
                raise cfg.error([(("model", exc.key), str(exc))]) from None

        return build
    builder = get_backbone(cfg.model.builder)

    def build():
        model = build_with(builder, cfg.model.builder, info, cfg.model.params, cfg.error, "backbone")
        problem = backbone_problem(model, info.get("input_shape"))
        if problem:
            raise cfg.error([(("model", "builder"), f"backbone builder {cfg.model.builder!r}: {problem}")])
        return model

    return build


def build_net(cfg: IncrementalConfig, info: dict, method: Method, reader=None):
    """The method's network over the config's backbone (built by ``method.build_net``); ``reader`` reads
    records (an image folder's file paths) into inputs.  A backbone the method cannot use (PODNet's
    feature maps on a dense one) is named at ``method.name``, or at the ``method.params`` key that asks for it."""
    try:
        net = method.build_net(backbone_builder(cfg, info))
    except SpecError:
        raise
    except MethodParamError as exc:
        raise cfg.error([(("method", "params", exc.param), exc.message)]) from None
    except ValueError as exc:
        raise cfg.error([(("method", "name"), f"method {cfg.method.name!r} cannot build its network on this "
                                              f"backbone: {exc}")]) from None
    net.reader = reader
    return net


def evaluate(method: Method, learner: Learner, data: ClassData, step: Step) -> dict:
    """Accuracy on every seen class, per task, and the predictions (class positions)."""
    x, y = data.of(range(step.num_total))
    pred = method.predict(learner, x)
    out = {"accuracy": float((pred == y).mean()), "task_accuracy": task_accuracies(y, pred, step.groups),
           "task_aware_accuracy": task_aware_accuracies(y, method.scores(learner, x), step.groups),
           "y": y, "pred": pred}
    if method.classifier != "cnn":
        out["accuracy_cnn"] = float((learner.net.logits(x).argmax(-1) == y).mean())
    return out


# --- checkpoints ----------------------------------------------------------------

def method_for(cfg: IncrementalConfig, state: dict | None) -> Method:
    """The config's method, as the checkpoint ``state`` was trained with: its saved resolved parameters;
    for a checkpoint saved before they were recorded (issue 19), the method's ``legacy_defaults`` under
    the config's own parameters (PODNet and DER changed defaults then)."""
    method = cfg.make_method()
    if state is None:
        return method
    saved = state.get("method_params")
    if saved is None:
        legacy = getattr(method, "legacy_defaults", {})
        return type(method)(**{**legacy, **cfg.method.params}) if legacy else method
    return type(method)(**saved)


def save_checkpoint(run: RunDir, step: int, learner: Learner, state: dict) -> None:
    """The network's weights and the memory after ``step``, then ``state.json``."""
    weights = f"step-{step:04d}-weights.npz"
    arrays = {f"w{i:03d}": w for i, w in enumerate(learner.net.get_weights())}
    files = {weights: lambda tmp: np.savez(tmp, **arrays)}
    memory = None
    if learner.memory is not None:
        memory = f"step-{step:04d}-memory.npz"
        files[memory] = learner.memory.save
    run.save_checkpoint(step, files, {**state, "weights": weights, "memory": memory})


def load_checkpoint(run: RunDir, state: dict, learner: Learner, scenario: Scenario) -> None:
    for t in range(state["step"] + 1):  # the network grows as it did (DER adds an extractor per step)
        learner.net.expand(scenario.step(t).num_total)
    def weights(path):
        with np.load(path, allow_pickle=False) as f:
            return [f[k] for k in sorted(f.files)]

    learner.net.set_weights(run.read_archive(run.checkpoints / state["weights"], weights))
    if state.get("memory"):
        learner.memory = run.read_archive(run.checkpoints / state["memory"], ExemplarMemory.load)


# --- the summary ----------------------------------------------------------------

def summarize(cfg: IncrementalConfig, scenario: Scenario, method: Method, steps: list[dict],
              confusion: np.ndarray | None) -> dict:
    n = len(scenario.groups)
    matrix = np.full((len(steps), n), np.nan)
    for t, s in enumerate(steps):
        matrix[t, : len(s["task_accuracy"])] = s["task_accuracy"]
    acc = [s["accuracy"] for s in steps]
    aware = np.full((len(steps), n), np.nan)   # task-incremental: the task id known at test time
    for t, s in enumerate(steps):
        if "task_aware_accuracy" in s:   # absent in a step recorded before it existed
            aware[t, : len(s["task_aware_accuracy"])] = s["task_aware_accuracy"]
    out = {
        "name": cfg.name, "method": method.name, "method_params": method.params.model_dump(),
        "setting": cfg.scenario.setting,
        "class_order": scenario.order, "class_names": scenario.class_names, "groups": scenario.groups,
        "complete": len(steps) == n, "steps": steps, "accuracy": acc,
        "average_incremental_accuracy": average_incremental_accuracy(acc) if acc else None,
        "last_accuracy": acc[-1] if acc else None,
        "forgetting": forgetting(matrix) if len(steps) else None,
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in matrix],
        "backward_transfer": backward_transfer(matrix) if len(steps) else None,
        "forward_transfer": forward_transfer(matrix, None) if len(steps) else None,
        "forward_transfer_note": "not defined here: the network has no outputs for the classes of a task before "
                                 "learning it, so R[i-1, i] (Lopez-Paz & Ranzato 2017) cannot be measured",
        "task_incremental": {
            "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in aware],
            "accuracy": [float(np.nanmean(row[: t + 1])) if not np.isnan(row[: t + 1]).all() else None
                         for t, row in enumerate(aware)],
            "backward_transfer": backward_transfer(aware)     # None where a step recorded before it existed
            if steps and all("task_aware_accuracy" in s for s in steps) else None},
        "minutes": round(sum(s["seconds"] for s in steps) / 60, 3),
    }
    if steps and "val_accuracy" in steps[0]:
        val = [s["val_accuracy"] for s in steps]
        out["val"] = {"accuracy": val, "average_incremental_accuracy": average_incremental_accuracy(val),
                      "last_accuracy": val[-1]}
    if confusion is not None:
        out["confusion_matrix"] = confusion.tolist()
    return out


def write_artifacts(run: RunDir, summary: dict, history: list[dict]) -> None:
    run.write_json("metrics.json", summary)
    if history:
        run.write_history(history)
    write_plots(run.path, summary)


def write_plots(run_dir: Path, summary: dict) -> list[Path]:
    """``accuracy.png`` and ``confusion.png`` from a run's summary (``metrics.json``)."""
    files = []
    if summary["steps"]:
        who = summary["name"] if summary["name"] == summary["method"] else f"{summary['name']} ({summary['method']})"
        plot_accuracy(summary["steps"], run_dir / "accuracy.png", f"{who}: accuracy after each step")
        files.append(run_dir / "accuracy.png")
    if "confusion_matrix" in summary:
        k = len(summary["confusion_matrix"])
        plot_confusion(np.asarray(summary["confusion_matrix"]), summary["class_names"][:k],
                       run_dir / "confusion.png",
                       f"{summary['method']}: confusion after step {len(summary['steps']) - 1} (test)")
        files.append(run_dir / "confusion.png")
    return files


def task_figures(accuracies) -> str:
    """Per-task accuracies as printed: ``n/a`` for a task the test split does not measure."""
    return " ".join("n/a" if a is None or not np.isfinite(a) else f"{a:.3f}" for a in accuracies)


def format_summary(summary: dict) -> str:
    rows = []
    for s in summary["steps"]:
        tasks = task_figures(s["task_accuracy"])
        rows.append([str(s["step"]), str(s["num_classes"]), f"{s['accuracy']:.4f}", tasks,
                     f"{s['seconds']:.1f}"])
    text = table(rows, ["step", "classes", "accuracy", "per task", "seconds"])
    f = summary["forgetting"]
    task = (summary.get("task_incremental") or {}).get("accuracy") or [None]
    aware = "" if task[-1] is None else f"; task id known: last accuracy {task[-1]:.4f}"
    return (f"{text}\naverage incremental accuracy {summary['average_incremental_accuracy']:.4f}, "
            f"last accuracy {summary['last_accuracy']:.4f}, forgetting "
            f"{'n/a' if f is None else f'{f:.4f}'}, {summary['minutes']:.2f} min{aware}")


# --- the run ----------------------------------------------------------------------

def augmenter(cfg: IncrementalConfig, scenario: Scenario):
    """``seed -> augmenter`` of ``train.augment`` for the data's inputs (None without layers); layers that
    do not fit the inputs are a SpecError at ``train.augment`` now, before any training."""
    shape = tuple(scenario.info["input_shape"])
    if augmenter_for(cfg, cfg.train.augment, cfg.seed, shape) is None:
        return None
    return lambda seed: augmenter_for(cfg, cfg.train.augment, seed, shape)


def make_learner(cfg: IncrementalConfig, scenario: Scenario, method: Method) -> Learner:
    """The network, memory and training settings of a run (weights as initialised)."""
    net = build_net(cfg, scenario.info, method, scenario.reader)
    memory = None
    if method.replay and cfg.memory is not None:
        memory = ExemplarMemory(cfg.memory.budget, cfg.memory.selection, cfg.memory.per_class, seed=cfg.seed)
    return Learner(net, memory, scenario.parts["train"], epochs=cfg.train.epochs,
                   batch_size=cfg.train.batch_size, verbose=cfg.train.verbose, nonfinite=cfg.train.nonfinite,
                   optimizer=lambda scale, steps: build_optimizer(
                       cfg.optimizer, scale, steps if cfg.train.lr_schedule == "cosine" else None),
                   augment=augmenter(cfg, scenario), seed=cfg.seed, setting=cfg.scenario.setting)


def save_model(run: RunDir, method: Method, learner: Learner, scenario: Scenario, step: Step) -> None:
    """``model.keras`` (inputs -> scores over the seen classes; argmax: the predicted class) and
    ``classes.json`` (the name and data id of each score's class), the current step's, atomically."""
    model = method.inference_model(learner)
    run.write_with("model.keras", model.save)
    run.write_json("classes.json", {
        "step": step.index, "num_classes": step.num_total, "class_names": scenario.class_names[: step.num_total],
        "class_ids": [int(c) for c in scenario.order[: step.num_total]],
        "input_shape": [int(d) for d in scenario.info["input_shape"]], "classifier": method.classifier,
        "scores": "model.keras outputs one score per class, in this order; the argmax is the predicted class"})


def run_incremental(config: str | os.PathLike | dict | IncrementalConfig, overrides: list[str] | None = None,
                    resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Run a class-incremental scenario end to end; returns the summary (``metrics.json``).

    An existing run folder is continued only with ``resume`` and replaced only with ``overwrite``.
    """
    cfg = config if isinstance(config, IncrementalConfig) else load_incremental_config(config, overrides)
    if cfg.seeds:
        return run_seeds(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    with dtype_policy(cfg.train.precision):
        return _run_one(cfg, resume, quiet, overwrite)


def _run_one(cfg: IncrementalConfig, resume: bool, quiet: bool, overwrite: bool) -> dict:
    """One seed's scenario (:func:`run_incremental`)."""
    say = speaker(quiet)
    method = cfg.make_method()
    scenario = Scenario(cfg)  # loads the data and checks the scenario against it
    check_method_specs(cfg, scenario, method)
    if overwrite:             # and builds the network: a run is replaced only by one that gets that far
        make_learner(cfg, scenario, method)
    run = KIND.folder(cfg, resume=resume, overwrite=overwrite)
    with run:                 # the folder is locked from open() to the run's end
        state = KIND.start(run, cfg, say, scenario.digests)
        method = method_for(cfg, state)   # a resumed run goes on with the parameters it was trained with
        learner = make_learner(cfg, scenario, method)
        steps: list[dict] = []
        confusion = None
        if state is not None:
            load_checkpoint(run, state, learner, scenario)
            steps, learner.history = list(state["steps"]), list(state["history"])
            confusion = np.asarray(state["confusion"]) if state.get("confusion") else None
            say(f"resuming {cfg.name} after step {state['step']}")
        names = f" ({', '.join(scenario.class_names)})" if len(scenario.class_names) <= 20 else ""
        say(f"{cfg.name}: {method!r}, class order {scenario.order}{names}, steps of {scenario.groups} classes")
        if cfg.memory is not None and not method.replay:
            say(f"note: {method.name} keeps no exemplars; `memory` is not used")

        for t in range(len(steps), len(scenario.groups)):
            with read_errors_named(scenario.sources):
                record, confusion = learn_step(cfg, scenario, method, learner, t)
            steps.append(record)
            save_model(run, method, learner, scenario, scenario.step(t))   # before state.json names the step done
            save_checkpoint(run, t, learner, {
                "step": t, "num_classes": record["num_classes"], "steps": steps, "history": learner.history,
                "confusion": confusion.tolist(), "fingerprint": cfg.fingerprint(), "data": scenario.digests,
                "method_params": method.params.model_dump(mode="json")})
            write_artifacts(run, summarize(cfg, scenario, method, steps, confusion), learner.history)
            new = f" (new: {', '.join(record['classes'])})" if len(record["classes"]) <= 10 else ""
            say(f"step {t}: {record['num_classes']} classes{new}, accuracy {record['accuracy']:.4f} "
                f"(tasks {task_figures(record['task_accuracy'])}), {record['seconds']:.1f} s")

        summary = summarize(cfg, scenario, method, steps, confusion)
        write_artifacts(run, summary, learner.history)
        say(format_summary(summary))
        say(f"artifacts: {run.path}")
        return summary


def speaker(quiet: bool):
    """``print`` (flushed), or nothing with ``quiet``."""
    return (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))


def method_spec_error(cfg: IncrementalConfig, method: Method, exc: StageSpecError) -> SpecError:
    return cfg.error([(("method", "name"), f"method {method.name!r}: {exc}")])


def check_method_specs(cfg: IncrementalConfig, scenario: Scenario, method: Method) -> None:
    """Each step's loss spec that the method gives before training; one that needs what training
    makes (FOSTER's class counts, PODNet's feature maps) is checked when its step runs."""
    for t in range(len(scenario.groups)):
        step = scenario.step(t)
        try:
            spec = method.spec(step)
        except Exception:  # noqa: BLE001 - it needs the network or the data of its step
            continue
        try:
            load_spec(spec)
        except SpecError as exc:
            raise method_spec_error(cfg, method, StageSpecError(exc, "train", step)) from None


def learn_step(cfg: IncrementalConfig, scenario: Scenario, method: Method, learner: Learner,
               t: int) -> tuple[dict, np.ndarray]:
    """Step ``t``: train, then evaluate on the test (and validation) split; its record and test confusion."""
    step = scenario.step(t)
    start = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed * 7919 + t)  # each step alike, resumed or not
    try:
        learner.run_step(method, step)
    except StageSpecError as exc:
        raise method_spec_error(cfg, method, exc) from None
    test = evaluate(method, learner, scenario.parts["test"], step)
    record = {"step": t, "num_classes": step.num_total,
              "classes": scenario.class_names[step.num_old: step.num_total],
              "accuracy": test["accuracy"], "task_accuracy": test["task_accuracy"],
              "task_aware_accuracy": test["task_aware_accuracy"]}
    if "accuracy_cnn" in test:
        record["accuracy_cnn"] = test["accuracy_cnn"]
    if scenario.parts["val"] is not None:
        val = evaluate(method, learner, scenario.parts["val"], step)
        record.update(val_accuracy=val["accuracy"], val_task_accuracy=val["task_accuracy"])
    if learner.memory is not None:
        record["memory"] = list(learner.memory.counts().values())
    record.update(learner.notes)
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record, confusion_matrix(test["y"], test["pred"], step.num_total)


# --- several seeds -----------------------------------------------------------------

SEED_FIGURES = ("average_incremental_accuracy", "last_accuracy", "forgetting")


def seed_config(cfg: IncrementalConfig, seed: int) -> IncrementalConfig:
    """The run of one entry of ``seeds``: ``seed`` and ``scenario.order_seed`` set to it (an explicit
    ``class_order`` is kept, so only the initialisation and shuffling change), in ``<run>/seed-<s>``."""
    return cfg.model_copy(update={"seeds": None, "seed": int(seed), "name": f"seed-{seed}",   # keeps the file
                                  "output_dir": str(cfg.run_dir),                            # for errors
                                  "scenario": cfg.scenario.model_copy(update={"order_seed": int(seed)})})


def mean_std(values: list[float | None]) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the values that exist."""
    v = np.asarray([x for x in values if x is not None], "float64")
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def aggregate_seeds(cfg: IncrementalConfig, runs: dict[int, dict]) -> dict:
    """The summary of a ``seeds`` run: each run's figures, and their mean ± std."""
    first = next(iter(runs.values()))
    steps = min(len(r["accuracy"]) for r in runs.values())
    per_step = np.asarray([r["accuracy"][:steps] for r in runs.values()], "float64")
    return {
        "name": cfg.name, "method": first["method"], "method_params": first["method_params"],
        "seeds": list(runs), "groups": first["groups"], "complete": all(r["complete"] for r in runs.values()),
        "runs": {str(s): {"class_order": r["class_order"], "class_names": r["class_names"],
                          "accuracy": r["accuracy"], "minutes": r["minutes"], **{k: r[k] for k in SEED_FIGURES}}
                 for s, r in runs.items()},
        **{k: mean_std([r[k] for r in runs.values()]) for k in SEED_FIGURES},
        "accuracy_mean": per_step.mean(0).tolist(),
        "accuracy_std": (per_step.std(0, ddof=1) if len(runs) > 1 else np.zeros(steps)).tolist(),
        "num_classes": [sum(first["groups"][: i + 1]) for i in range(steps)],
        "minutes": round(sum(r["minutes"] for r in runs.values()), 3),
    }


def format_seeds(summary: dict) -> str:
    rows = [[str(s), f"{r['average_incremental_accuracy']:.4f}", f"{r['last_accuracy']:.4f}",
             "n/a" if r["forgetting"] is None else f"{r['forgetting']:.4f}", str(r["class_order"])]
            for s, r in summary["runs"].items()]
    text = table(rows, ["seed", "avg inc acc", "last acc", "forgetting", "class order"])

    def ms(k):
        m = summary[k]
        return "n/a" if m["mean"] is None else f"{m['mean']:.4f} ± {m['std']:.4f}"

    return (f"{text}\nover {len(summary['runs'])} seeds (mean ± sample std): average incremental accuracy "
            f"{ms('average_incremental_accuracy')}, last accuracy {ms('last_accuracy')}, forgetting "
            f"{ms('forgetting')}; {summary['minutes']:.2f} min")


def run_seeds(cfg: IncrementalConfig, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Repeat the scenario for every entry of ``cfg.seeds`` (class order and initialisation), each a
    full run in ``<run>/seed-<s>``; ``metrics.json`` of the parent holds each run's figures and their
    mean ± std."""
    say = speaker(quiet)
    run = KIND.folder(cfg, resume=resume, overwrite=overwrite)
    with run:
        KIND.start(run, cfg, say=lambda *a: None)   # no checkpoint of its own: each seed's run has one
        runs: dict[int, dict] = {}
        for seed in cfg.seeds:
            say(f"--- seed {seed} ---")
            runs[seed] = run_incremental(seed_config(cfg, seed), resume=resume, quiet=quiet)
            summary = aggregate_seeds(cfg, runs)
            run.write_json("metrics.json", summary)
        say(format_seeds(summary))
        say(f"artifacts: {run.path}")
        return summary


class IncrementalKind(RunKind):
    """``multiloss incremental``: a class-incremental scenario, step after step (:func:`run_incremental`)."""

    name = "incremental"
    config_kind = "incremental"
    may_change = "train.verbose and train.nonfinite"
    resumes_from = "after the last completed step"

    def load_config(self, source, overrides=None) -> IncrementalConfig:
        if source is None:
            raise RunError(f"`{self.usage}` needs a config; see configs/incremental_*.yaml")
        return load_incremental_config(source, overrides)

    def run(self, config, overrides=None, *, resume=False, overwrite=False) -> dict:
        return run_incremental(config, overrides, resume=resume, overwrite=overwrite)

    def check(self, config: str | os.PathLike | dict, overrides: list[str] | None = None) -> str:
        """Everything ``multiloss incremental`` checks before training (config, data, scenario, network)."""
        cfg = load_incremental_config(config, overrides)
        method = cfg.make_method()
        scenario = Scenario(cfg)
        backbone_builder(cfg, scenario.info)()   # a saved model cut at its layer (DER builds at its first step)
        make_learner(cfg, scenario, method)       # the network and train.augment on the data's inputs
        check_method_specs(cfg, scenario, method)
        return (f"incremental config {cfg.name!r}: method {method.name!r}, {len(scenario.groups)} steps of "
                f"{scenario.groups} classes, class order {scenario.order}")

    def evaluate(self, run_dir: str | os.PathLike) -> dict:
        """Re-evaluate a run's last completed step on its test split (``evaluation.json``); for a
        ``seeds`` run, each seed's run (``{seed: evaluation}``)."""
        run = RunDir(run_dir, resume=True)
        cfg = load_incremental_config(run.file("config.yaml"))
        if cfg.seeds:
            return {str(s): self.evaluate(run.path / f"seed-{s}") for s in cfg.seeds}
        state = run.read_state()
        if state is None:
            raise cfg.error([((), f"{run.path} holds no completed step to evaluate")])
        method = method_for(cfg, state)
        scenario = Scenario(cfg)
        learner = make_learner(cfg, scenario, method)
        load_checkpoint(run, state, learner, scenario)
        step = scenario.step(state["step"])
        with read_errors_named(scenario.sources):
            test = evaluate(method, learner, scenario.parts["test"], step)
        out = {"step": state["step"], "num_classes": step.num_total, "accuracy": test["accuracy"],
               "task_accuracy": test["task_accuracy"]}
        print(f"{cfg.name}: after step {state['step']} ({step.num_total} classes): test accuracy "
              f"{out['accuracy']:.4f} (tasks {task_figures(out['task_accuracy'])})")
        run.write_json("evaluation.json", out)      # after the figures are shown, as train's evaluate
        return out

    def plot(self, run_dir: str | os.PathLike) -> list[Path]:
        """Redraw a run's figures from its ``metrics.json`` (for a ``seeds`` run, each seed's)."""
        run = RunDir(run_dir, resume=True)
        summary = run.read_json("metrics.json")
        if "seeds" in summary:
            return [f for s in summary["seeds"] for f in self.plot(run.path / f"seed-{s}")]
        files = write_plots(run.path, summary)
        for f in files:
            print(f)
        return files


KIND = register_kind(IncrementalKind())
check_incremental, evaluate_incremental, plot_incremental = KIND.check, KIND.evaluate, KIND.plot

__all__ = ["run_incremental", "check_incremental", "evaluate_incremental", "plot_incremental", "Scenario",
           "evaluate", "summarize", "format_summary", "run_seeds", "seed_config", "aggregate_seeds", "mean_std",
           "format_seeds", "IncrementalKind", "KIND"]
