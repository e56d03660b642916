"""The task-incremental setting (task id known at test time, one head per task): the per-task
cross-entropy against numpy, the spec rewrite, and a short run whose metrics.json holds both settings."""

import json

import numpy as np
import pytest

from multiloss.incremental import run_incremental
from multiloss.incremental.learner import task_heads
from multiloss.incremental.losses import task_crossentropy
from multiloss.incremental.methods import LwF, Replay, classification_term


def test_task_crossentropy_against_numpy():
    rng = np.random.default_rng(0)
    z, y, groups = rng.normal(size=(5, 7)) * 2, np.array([0, 1, 2, 4, 6]), [2, 3, 2]
    task_of = np.repeat([0, 1, 2], groups)
    ref = []
    for i, c in enumerate(y):
        cols = np.flatnonzero(task_of == task_of[c])     # the sample's own head
        ref.append(-z[i, c] + np.log(np.exp(z[i, cols]).sum()))
    np.testing.assert_allclose(np.asarray(task_crossentropy(y, z.astype("float32"), groups=groups)), ref, rtol=1e-5)


def test_task_heads_rewrites_only_the_plain_cross_entropy():
    spec = {"terms": [classification_term(0.7), {"name": "d", "outputs": ["logits"], "target": "target",
                                                  "loss": {"name": "incremental_distillation"}}]}
    out = task_heads(spec, (2, 2))
    assert out["terms"][0]["loss"] == {"name": "task_crossentropy", "params": {"groups": [2, 2]}}
    assert out["terms"][0]["weight"] == 0.7 and out["terms"][1] == spec["terms"][1]
    lwf = LwF().spec(__import__("multiloss.incremental", fromlist=["Step"]).Step(1, (2, 2)))
    assert task_heads(lwf, (2, 2)) == lwf   # LwF's new-class CE is already a head of its own


@pytest.mark.slow
def test_a_task_incremental_run_reports_both_settings(tmp_path):
    cfg = {"name": "t", "data": {"source": "digits"}, "model": {"builder": "cnn", "params": {"filters": [8],
           "dense": 16}}, "scenario": {"initial": 2, "increment": 2, "steps": 3, "setting": "task"},
           "memory": {"budget": 20}, "method": {"name": "replay"},
           "optimizer": {"name": "sgd", "params": {"learning_rate": 0.05, "momentum": 0.9}},
           "train": {"epochs": 2, "batch_size": 32}, "output_dir": str(tmp_path)}
    summary = run_incremental(cfg, quiet=True)
    assert summary["setting"] == "task" and Replay.name == "replay"
    history = json.loads((tmp_path / "t" / "history.json").read_text())
    rows = history if isinstance(history, list) else history["rows"]
    assert "classification_loss" in rows[0]
    task = summary["task_incremental"]
    assert len(task["accuracy_matrix"]) == 3 and task["accuracy_matrix"][0][1] is None
    # With heads per task, the task-aware accuracy is at least the class-incremental one, task by task.
    for aware, plain in zip(task["accuracy_matrix"], summary["accuracy_matrix"]):
        assert all(a >= p for a, p in zip(aware, plain) if a is not None)
    assert summary["backward_transfer"] is not None and summary["forward_transfer"] is None
