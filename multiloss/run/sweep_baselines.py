"""``multiloss baselines RUN_CONFIG``: one single-task run per task, the reference of Δm%.

A task is a head of the loss spec (its terms: the terms on that output alone) or a term over
several outputs (a contrastive term on two embeddings).  Task T's run is the run config with every
other task's weight set to 0 and static weighting (no strategy, no schedules), so the shared layers
learn from T alone and every key is still logged.  The runs go to
``output_dir/<name>-baselines/<task>/`` (ordinary run folders), and ``baselines.json`` beside them
holds, for each task, the final model's values of the task's own keys (``<term>_loss`` and
``<head>_<metric>``, train and ``val_``): what ``baselines:`` of a sweep (or early stopping's
``baselines``) reads.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from . import atomic
from .config import RunConfig, load_run_config
from .rundir import compact_floats


def tasks(cfg: RunConfig) -> dict[str, list[str]]:
    """Task name -> its term names: the single output a term is on, or the term's own name."""
    out: dict[str, list[str]] = {}
    for term in cfg.spec.resolve():
        out.setdefault(term.outputs[0] if len(term.outputs) == 1 else term.name, []).append(term.name)
    return out


def single_task_loss(cfg: RunConfig, task: str) -> dict:
    """The run's loss spec (canonical) with every term that is not ``task``'s weighted 0, statically."""
    loss = copy.deepcopy(cfg.spec.to_dict())
    loss.pop("weighting", None)
    loss.pop("schedules", None)
    own = set(tasks(cfg)[task])
    for head, spec in loss.get("outputs", {}).items():
        if head != task:
            spec["weight"] = 0.0
    for term in loss.get("terms", []):
        if term["name"] not in own:
            term["weight"] = 0.0
    return loss


def task_keys(cfg: RunConfig, task: str) -> list[str]:
    """The logged keys (train split names) that belong to ``task``."""
    keys = [f"{t}_loss" for t in tasks(cfg)[task]]
    return keys + [f"{task}_{m}" for m in cfg.spec.head_metrics().get(task, [])]


def run_baselines(config: str | os.PathLike, overrides: list[str] | None = None, *, resume: bool = False,
                  overwrite: bool = False, say=print) -> Path:
    """Train every task's single-task run; write ``baselines.json``; return its path."""
    from .train import train

    cfg = load_run_config(config, overrides)
    folder = Path(cfg.output_dir) / f"{cfg.name}-baselines"
    values: dict[str, float] = {}
    runs = {}
    for task in tasks(cfg):
        say(f"baseline {task}: only {', '.join(tasks(cfg)[task])} weighted")
        metrics = train(config, [*(overrides or []), f"name={task}", f"output_dir={json.dumps(str(folder))}",
                                 f"loss={json.dumps(single_task_loss(cfg, task))}"], resume=resume, overwrite=overwrite)
        for key in task_keys(cfg, task):
            for split, prefix in (("train", ""), ("val", "val_"), ("test", "test_")):
                if key in metrics.get(split, {}):
                    values[prefix + key] = float(metrics[split][key])
        runs[task] = str(folder / task)
    path = folder / "baselines.json"
    atomic.write_text(path, json.dumps(compact_floats({"run": str(Path(config)), "runs": runs, "values": values}),
                                       indent=1) + "\n")
    say(f"wrote {path}: {len(values)} single-task values; give it to a sweep as `baselines: {path}`")
    return path


__all__ = ["run_baselines", "single_task_loss", "task_keys", "tasks"]
