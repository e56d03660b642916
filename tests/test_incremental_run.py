"""`multiloss incremental` end to end on digits: artifacts vs independent numpy figures,
the methods' ordering, resuming at the step where a run stopped, errors and exit codes."""

import json
import math
import textwrap

import numpy as np
import pytest
import yaml

from multiloss.cli.commands import main
from multiloss.incremental import ExemplarMemory, IncrementalNet, run_incremental
from multiloss.incremental import learner as learner_module
from multiloss.incremental.config import load_incremental_config
from multiloss.incremental.network import cnn
from multiloss.incremental.runner import Scenario
from multiloss.spec.errors import SpecError

CONFIG = textwrap.dedent("""\
    name: digits
    seed: 0
    data: {source: digits}
    model:
      builder: cnn
      params: {filters: [16], dense: 32}
    scenario: {initial: 4, increment: 3}
    memory: {budget: 40}
    method: {name: icarl}
    optimizer: {name: sgd, params: {learning_rate: 0.05, momentum: 0.9, global_clipnorm: 1.0}}
    train: {epochs: 8, batch_size: 32}
""")
PNG = b"\x89PNG\r\n\x1a\n"


def _config(tmp_path, **extra):
    data = yaml.safe_load(CONFIG)
    data["output_dir"] = str(tmp_path / "runs")
    data.update(extra)
    path = tmp_path / "inc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _restore_net(run_dir, cfg, scenario):
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    net = IncrementalNet(cnn(scenario.info, **cfg.model.params))
    net.expand(state["num_classes"])
    with np.load(run_dir / "checkpoints" / state["weights"]) as f:
        net.set_weights([f[k] for k in sorted(f.files)])
    memory = ExemplarMemory.load(run_dir / "checkpoints" / state["memory"]) if state["memory"] else None
    return net, memory


@pytest.mark.slow
def test_digits_scenario_every_method(tmp_path):
    path = _config(tmp_path)
    results = {}
    for method in ("finetune", "joint", "lwf", "icarl", "eeil", "wa"):
        results[method] = run_incremental(path, [f"method.name={method}", f"name={method}"], quiet=True)
    runs = tmp_path / "runs"
    for method in results:
        run = runs / method
        for name in ("config.yaml", "metrics.json", "history.json", "history.csv", "checkpoints/state.json"):
            assert (run / name).is_file(), (method, name)
        assert (run / "accuracy.png").read_bytes()[:8] == PNG and (run / "confusion.png").read_bytes()[:8] == PNG
        assert not list(run.rglob(".tmp-*"))
        saved = json.loads((run / "metrics.json").read_text())
        assert saved["complete"] and saved["class_order"] == [4, 2, 7, 6, 0, 3, 5, 8, 9, 1]
        acc = saved["accuracy"]
        assert len(acc) == 3 and saved["groups"] == [4, 3, 3]
        assert saved["average_incremental_accuracy"] == pytest.approx(sum(acc) / 3)
        assert saved["last_accuracy"] == acc[-1]
        a = saved["accuracy_matrix"]  # forgetting by its definition, from the saved matrix
        f = np.mean([max(a[i][j] for i in range(j, 2)) - a[2][j] for j in range(2)])
        assert saved["forgetting"] == pytest.approx(f)
        cm = np.asarray(saved["confusion_matrix"])
        assert np.trace(cm) / cm.sum() == pytest.approx(acc[-1])
        history = json.loads((run / "history.json").read_text())
        for row in history:  # the composite's total is Σ weight·term, every stage epoch
            terms = [k[:-5] for k in row if k.endswith("_loss")]
            assert row["loss"] == pytest.approx(sum(row[f"{t}_weight"] * row[f"{t}_loss"] for t in terms), rel=1e-4)
    # The memory: 40 in total, at most ⌈40 / seen⌉ each.
    for step in results["icarl"]["steps"]:
        assert sum(step["memory"]) == 40 and max(step["memory"]) <= math.ceil(40 / step["num_classes"])
    # WA's terms are logged with λ = old / seen classes; EEIL has a balanced fine-tuning stage.
    wa = json.loads((runs / "wa" / "history.json").read_text())
    assert all(r["distillation_weight"] == pytest.approx(7 / 10) for r in wa if r["step"] == 2)
    assert all(s["gamma"] > 0 for s in results["wa"]["steps"][1:])
    eeil = json.loads((runs / "eeil" / "history.json").read_text())
    assert {(r["step"], r["stage"]) for r in eeil} == {(0, "train"), (1, "train"), (1, "balanced"),
                                                        (2, "train"), (2, "balanced")}
    # The ordering of the literature on this easy data set.
    last = {k: v["last_accuracy"] for k, v in results.items()}
    assert last["finetune"] < 0.45  # only the last step's three classes survive
    assert last["joint"] > 0.9
    assert last["lwf"] > last["finetune"]
    for method in ("icarl", "eeil", "wa"):
        assert last[method] > last["finetune"] + 0.25, last

    # Independent re-evaluation of the saved networks on the test split.
    cfg = load_incremental_config(path)
    scenario = Scenario(cfg)
    x, y = scenario.parts["test"].x, scenario.parts["test"].y
    net, _ = _restore_net(runs / "finetune", cfg, scenario)
    assert (net.logits(x).argmax(-1) == y).mean() == pytest.approx(last["finetune"])
    net, memory = _restore_net(runs / "icarl", cfg, scenario)
    feats = net.features(x)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    means = []
    for c in range(10):  # iCaRL's class means: mean of normalised exemplar features, normalised
        e = net.features(memory.exemplars(c))
        mu = (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(0)
        means.append(mu / np.linalg.norm(mu))
    nme = np.argmin(((feats[:, None] - np.asarray(means)[None]) ** 2).sum(-1), axis=1)
    assert (nme == y).mean() == pytest.approx(last["icarl"])


@pytest.mark.slow
def test_resume_continues_at_the_step_where_it_stopped(tmp_path, monkeypatch):
    path = _config(tmp_path, scenario={"initial": 2, "increment": 2, "steps": 4}, train={"epochs": 3})
    run = tmp_path / "runs" / "digits"
    original = learner_module.Learner.run_step
    ran = []

    def crash_at_step_2(self, method, step):
        ran.append(step.index)
        if step.index == 2:
            raise KeyboardInterrupt  # killed in the middle of step 2
        return original(self, method, step)

    monkeypatch.setattr(learner_module.Learner, "run_step", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_incremental(path, quiet=True)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    first = json.loads((run / "metrics.json").read_text())
    assert state["step"] == 1 and not first["complete"] and len(first["steps"]) == 2
    saved_memory = ExemplarMemory.load(run / "checkpoints" / state["memory"])
    assert saved_memory.classes == [0, 1, 2, 3]

    def record(self, method, step):
        ran.append(step.index)
        if step.index == 2:  # the resumed run starts from the saved network and memory
            assert self.memory.counts() == saved_memory.counts()
            for c in saved_memory.classes:
                np.testing.assert_array_equal(self.memory.exemplars(c), saved_memory.exemplars(c))
        return original(self, method, step)

    ran.clear()
    monkeypatch.setattr(learner_module.Learner, "run_step", record)
    with pytest.raises(SpecError, match=r"method.name: differs from the run being resumed.* \"icarl\" in the run, \"eeil\" now"):
        run_incremental(path, ["method.name=eeil"], resume=True, quiet=True)
    summary = run_incremental(path, resume=True, quiet=True)
    assert ran == [2, 3]
    assert summary["complete"] and [s["step"] for s in summary["steps"]] == [0, 1, 2, 3]
    assert summary["steps"][:2] == first["steps"]
    history = json.loads((run / "history.json").read_text())
    assert sorted({r["step"] for r in history}) == [0, 1, 2, 3]
    assert not list(run.rglob(".tmp-*"))


def test_scenario_errors_and_exit_codes(tmp_path, capsys):
    path = _config(tmp_path, scenario={"initial": 2, "increment": 3})
    with pytest.raises(SpecError, match=r"scenario.increment: the 8 classes after the first step do not split "
                                        r"into steps of 3"):
        run_incremental(path, quiet=True)
    with pytest.raises(SpecError, match=r"scenario.class_order: must be a permutation of the 10 class ids 0\.\.9; "
                                        r"it leaves out 3, 4, 5, 6, 7, 8, 9"):
        run_incremental(path, ["scenario.class_order=[0, 1, 2]", "scenario.increment=2"], quiet=True)
    with pytest.raises(SpecError, match=r"scenario.steps: 9 steps need 2 \+ 8×3 classes"):
        run_incremental(path, ["scenario.steps=9"], quiet=True)
    assert main(["incremental", str(path), "--set", "method.name=icarll"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "method.name: unknown method 'icarll'; did you mean 'icarl'" in err
    assert err.rstrip().endswith("(from --set method.name=icarll)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("budget: 40", "budget: -4"))
    assert main(["incremental", str(bad)]) == 1
    assert f"bad.yaml:{1 + CONFIG.splitlines().index('memory: {budget: 40}')}: memory.budget: must be ≥ 1" in \
        capsys.readouterr().err


def test_overwrite_that_fails_to_build_the_network_leaves_the_run_it_would_replace(tmp_path):
    import hashlib

    path = _config(tmp_path, scenario={"initial": 5, "increment": 5}, method={"name": "finetune"},
                   model={"builder": "cnn", "params": {"filters": [4], "dense": 8}},
                   train={"epochs": 1, "batch_size": 128})
    run_incremental(path, quiet=True)
    run = tmp_path / "runs" / "digits"

    def snapshot():
        return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(run.rglob("*")) if p.is_file()}

    before = snapshot()
    assert "metrics.json" in before
    with pytest.raises(ValueError, match="units"):   # Keras: a negative Dense size
        run_incremental(path, ["model.params.dense=-4"], quiet=True, overwrite=True)
    assert snapshot() == before     # the run it would replace: deleted first, before
