"""What a new user met on the run layer: evaluate without a test split, `schema | head`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import multiloss as ml
from multiloss.run.train import KIND, train

ROOT = Path(__file__).resolve().parents[1]


def _npz_config(tmp_path, name: str, splits: tuple[str, ...], epochs: int = 1) -> dict:
    """A regression run on a small npz of the given splits."""
    rng = np.random.default_rng(0)
    arrays = {f"{split}/{k}": v for split in splits
              for k, v in {"x": rng.normal(size=(16, 3)), "y": rng.normal(size=(16, 1))}.items()}
    np.savez(tmp_path / "d.npz", **{k: v.astype("float32") for k, v in arrays.items()})
    return {"name": name, "data": {"source": "npz", "params": {"path": str(tmp_path / "d.npz"), "inputs": ["x"]}},
            "model": {"builder": "mlp", "params": {"heads": {"y": {"kind": "regression", "units": 1}}, "hidden": [4]}},
            "loss": {"outputs": {"y": {"loss": "mse"}}}, "train": {"epochs": epochs, "verbose": 0},
            "output_dir": str(tmp_path / "runs")}


def test_evaluate_on_a_run_without_a_test_split_says_so(tmp_path):
    metrics = train(_npz_config(tmp_path, "notest", ("train", "val")))
    assert "test" not in metrics and set(metrics) == {"train", "val"}
    with pytest.raises(ml.SpecError, match=r"data: the data source 'npz' gives no test split, so there is nothing "
                                           r"to evaluate"):
        KIND.evaluate(tmp_path / "runs" / "notest")


def test_evaluate_on_a_run_that_stopped_before_model_keras_says_to_resume(tmp_path):
    """A run stopped by a NaN holds its checkpoints but no model.keras; evaluate said "put back an intact
    copy, or train the run again (--overwrite)", which deletes the good checkpoint."""
    train(_npz_config(tmp_path, "nan", ("train", "test"), epochs=2))
    run = tmp_path / "runs" / "nan"
    (run / "model.keras").unlink()            # as a run that stopped after its first checkpoint leaves it
    with pytest.raises(ml.RunError, match=r"model\.keras is missing: the run stopped before writing it and holds "
                                          r"a checkpoint: finish it with `multiloss train CONFIG --resume`"):
        KIND.evaluate(run)


def test_schema_into_a_closed_pipe_ends_quietly():
    """``| true`` has exited (and closed the pipe) long before the command writes: every write fails."""
    out = subprocess.run(f"{sys.executable} -m multiloss schema | true; echo \"status ${{PIPESTATUS[0]}}\"",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.stdout.strip() == "status 141"
    ours = [line for line in out.stderr.splitlines()       # TensorFlow's own start-up lines aside
            if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages"))]
    assert not any("Broken pipe" in line or "Traceback" in line or "error" in line for line in ours), ours


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_its_fixed_rerun(tmp_path):
    from multiloss.run.train import default_config_path

    base = [f"output_dir={tmp_path}", "train.epochs=1", "train.verbose=0", "data.params.pairs_per_image=0.25"]
    with pytest.raises(ml.SpecError, match=r"model\.params: model builder 'siamese_cnn' failed: .*"
                                           r"\(from --set model\.params\.embedding=-4\)"):
        train(default_config_path(), [*base, "model.params.embedding=-4"])
    run = tmp_path / "siamese_digits"
    assert (run / "config.yaml").is_file() and not (run / "checkpoints" / "state.json").exists()
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.failed").write_text("a failed first epoch's events")
    train(default_config_path(), base)                     # no --overwrite needed: there was nothing to lose
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "state.json").is_file()
    assert not (run / "tensorboard" / "events.failed").exists()
    events = sorted(p.name for p in (run / "tensorboard").rglob("*") if p.is_file())
    with pytest.raises(ml.RunError, match="already holds a run"):   # now there is
        train(default_config_path(), base)
    train(default_config_path(), [*base, "train.epochs=2"], resume=True)
    assert set(events) <= {p.name for p in (run / "tensorboard").rglob("*") if p.is_file()}   # kept on resume


BAD_RUN = """\
name: bad
data: {source: digitz}
model: {builder: mlpp}
loss:
  outputs:
    a: {loss: msee}
optimizer: {name: adamm}
train: {epochs: 0}
"""


def test_validate_reports_every_problem_of_a_file_in_one_pass(tmp_path):
    from multiloss.incremental.config import load_incremental_config
    from multiloss.run.config import load_run_config

    (tmp_path / "bad.yaml").write_text(BAD_RUN)
    with pytest.raises(ml.SpecError) as err:
        load_run_config(tmp_path / "bad.yaml")
    found = {(p, line) for p, line, _ in err.value.problems}
    assert found == {(("train", "epochs"), 8), (("data", "source"), 2), (("model", "builder"), 3),
                     (("optimizer", "name"), 7), (("loss", "outputs", "a", "loss"), 6)}
    assert str(err.value).startswith("5 problems:")
    (tmp_path / "inc.yaml").write_text("name: inc\ndata: {source: digitz}\nmodel: {builder: cnn}\n"
                                       "scenario: {initial: 2, increment: 2}\nmethod: {name: icarll}\n"
                                       "train: {epochs: 0}\n")
    with pytest.raises(ml.SpecError) as err:
        load_incremental_config(tmp_path / "inc.yaml")
    assert {p for p, _, _ in err.value.problems} == {("train", "epochs"), ("data", "source"), ("method", "name")}


def test_a_spec_with_a_wrong_type_reports_its_unknown_losses_metrics_and_params_in_the_same_pass(tmp_path):
    """A value of the wrong type (pydantic's) hid every loss, metric and param problem until it was fixed;
    what stands on the value at fault (head b's loss is a number: it has no loss) is not reported."""
    (tmp_path / "s.yaml").write_text("outputs:\n  a: {loss: mse, weight: big}\n  b: {loss: 3, metrics: [mae]}\n"
                                     "  c: {loss: mea, metrics: [acuracy]}\n"
                                     "  d: {loss: {name: huber, params: {delt: 1.0}}}\n")
    with pytest.raises(ml.SpecError) as err:
        ml.load_spec(tmp_path / "s.yaml")
    found = {(p, line) for p, line, _ in err.value.problems}
    assert found == {(("outputs", "a", "weight"), 2), (("outputs", "b", "loss"), 3), (("outputs", "c", "loss"), 4),
                     (("outputs", "c", "metrics", 0), 4), (("outputs", "d", "loss", "params"), 5)}, err.value
    assert "did you mean 'mse' or 'mae'" in str(err.value) and "did you mean 'accuracy'" in str(err.value)


def test_an_empty_yaml_value_where_a_mapping_goes_names_the_keys_and_a_bad_sampler_its_forms(tmp_path):
    """`train:` left empty (its keys commented out) is YAML null: the error says a mapping goes there
    and lists its keys, not pydantic's class name; a sampler that is neither form says which are valid."""
    from multiloss.run.config import load_run_config

    (tmp_path / "run.yaml").write_text(
        "name: empty\ntasks:\n  digit: {data: {source: digits}}\n  parity: {data: {source: digits}}\n"
        "sampler: roundrobin\nmodel: {builder: mlp}\nloss:\n  outputs:\n    digit:\n"
        "    parity: {loss: mse}\ntrain:\n#  epochs: 3\n")
    with pytest.raises(ml.SpecError) as err:
        load_run_config(tmp_path / "run.yaml")
    found = {p: (line, msg) for p, line, msg in err.value.problems}
    assert found[("train",)][0] == 11 and found[("train",)][1].startswith(
        "expected a mapping (keys: epochs, batch_size,") and "got null (an empty YAML value)" in found[("train",)][1]
    assert found[("loss", "outputs", "digit")][0] == 9
    assert "expected a mapping (keys: loss, weight, metrics," in found[("loss", "outputs", "digit")][1]
    assert found[("sampler",)] == (5, "'roundrobin' is not a sampler; did you mean 'round_robin'? valid: "
                                      "round_robin, proportional, or {weighted: {<task>: <weight>, ...}}")
    assert not any("Config" in msg or "Spec" in msg for _, _, msg in err.value.problems)
    with pytest.raises(ml.SpecError, match=r"sampler: null is not a sampler; valid: round_robin"):
        load_run_config(tmp_path / "run.yaml", ["sampler=null", "train={}", "loss.outputs.digit={loss: mse}"])


def test_a_run_saved_before_augment_existed_still_resumes():
    """The fingerprint a resume compares leaves out an empty `train.augment`, which older runs lack."""
    from multiloss.run.config import load_run_config
    from multiloss.run.train import default_config_path

    assert "augment" not in load_run_config(default_config_path()).fingerprint()["train"]
    flipped = load_run_config(default_config_path(), ["train.augment=[{random_flip: {mode: horizontal}}]"])
    assert flipped.fingerprint()["train"]["augment"] == [{"random_flip": {"mode": "horizontal"}}]


@pytest.mark.parametrize("command", ["validate", "incremental"])
def test_an_incremental_backbone_param_keras_refuses_is_one_line_at_its_builder(tmp_path, command, capsys):
    """Keras's own ValueError for ``dense: 0`` was a traceback from inside its Dense layer."""
    from pathlib import Path

    import yaml

    from multiloss.cli.commands import main

    data = yaml.safe_load((Path(__file__).parents[1] / "configs" / "incremental_digits.yaml").read_text())
    data.update(output_dir=str(tmp_path / "runs"), train={"epochs": 1, "batch_size": 32})
    (tmp_path / "inc.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert main([command, str(tmp_path / "inc.yaml"), "--set", "model.params.dense=0"]) == 1
    err = capsys.readouterr().err
    assert "inc.yaml:" in err and "model.params: backbone builder 'cnn' failed: Received an invalid value for " \
                                  "`units`, expected a positive integer. Received: units=0 (params: " in err, err
    assert "(from --set model.params.dense=0)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("tf_config, why", [
    (None, "it is not set"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}', "it is not JSON"),
    ('{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}', "its cluster must map"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "wroker", "index": 0}}', "its task must be"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "is not in its cluster"),
])
def test_a_malformed_tf_config_is_one_line_at_distribute(tmp_path, monkeypatch, capsys, tf_config, why):
    """A TF_CONFIG that is no JSON was a JSONDecodeError traceback, before anything else was checked."""
    from multiloss.cli.commands import main
    from multiloss.run.train import default_config_path

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(["train", str(default_config_path()), "--set", f"output_dir={tmp_path}",
                 "--set", "distribute=multi_worker"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "distribute: multi_worker needs the TF_CONFIG environment variable, " \
                                         "and " in err and why in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())


def test_a_stale_tf_config_does_not_silence_a_run_that_is_not_multi_worker(tmp_path, monkeypatch):
    """TF_CONFIG of a worker that is not the chief, left in the shell: a plain run wrote nothing."""
    from multiloss.run.train import default_config_path

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
    train(default_config_path(), [f"output_dir={tmp_path}", "train.epochs=1", "train.verbose=0",
                                  "data.params.pairs_per_image=0.25"])
    assert (tmp_path / "siamese_digits" / "model.keras").is_file()


def test_set_reaches_a_list_item_by_index_or_by_name():
    """--set loss.terms.0.weight=... was refused ("is list [...], not a mapping"), though the sweep space
    could set it."""
    from multiloss.run.config import load_run_config
    from multiloss.run.train import default_config_path

    base = load_run_config(default_config_path())
    (term,) = base.spec.terms
    assert term.name == "contrastive" and term.weight != 0.25
    for key in ("loss.terms.0", "loss.terms.contrastive", "loss.terms.-1"):
        cfg = load_run_config(default_config_path(), [f"{key}.weight=0.25"])
        assert cfg.spec.terms[0].weight == 0.25 and cfg.spec.terms[0].name == "contrastive", key
    with pytest.raises(ml.SpecError, match=r"loss\.terms: no item 'contrastiv' in this list; did you mean "
                                           r"'contrastive'\? give an index \(0 to 0\) or an item's name"):
        load_run_config(default_config_path(), ["loss.terms.contrastiv.weight=0.25"])
    with pytest.raises(ml.SpecError, match=r"loss\.terms\.0\.weight: .*\(from --set loss\.terms\.0\.weight=-1\)"):
        load_run_config(default_config_path(), ["loss.terms.0.weight=-1"])
    # A config without terms: "Input should be a valid list" alone did not say what to give.
    with pytest.raises(ml.SpecError, match=r"loss\.terms: Input should be a valid list; --set cannot add an item "
                                           r"to a list the config does not have: give the whole list, --set "
                                           r"'loss\.terms=\[\.\.\.\]' \(from --set loss\.terms\.3\.weight=2\)"):
        load_run_config(ROOT / "configs" / "digits_two_sets.yaml", ["loss.terms.3.weight=2"])
    # A mapping with int keys is still made by --set (class_weight), with no such advice.
    cfg = load_run_config(ROOT / "configs" / "digits_two_sets.yaml", ["loss.outputs.digit.class_weight.3=5"])
    assert cfg.spec.outputs["digit"].class_weight == {3: 5.0}


def test_a_finished_run_checkpoints_its_last_epoch_whatever_every_says(tmp_path):
    """`checkpoint.every: 2` and 3 epochs: the last checkpoint was epoch 2, so a resume of the finished
    run trained epoch 3 again and rewrote its model."""
    config = _npz_config(tmp_path, "every", ("train", "test"), epochs=3)
    config["train"]["callbacks"] = {"checkpoint": {"every": 2, "keep": 1}}
    first = train(config)
    run = tmp_path / "runs" / "every"
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 3
    history, timing = (run / "history.json").read_text(), json.loads((run / "metrics.json").read_text())
    again = train(config, resume=True)
    assert again == first and (run / "history.json").read_text() == history
    after = json.loads((run / "metrics.json").read_text())      # it was train_seconds 0.0, resumed_from_epoch 3
    assert (after["train_seconds"], after["resumed_from_epoch"]) == (timing["train_seconds"], None)


def test_evaluate_shows_its_figures_where_the_folder_cannot_take_evaluation_json(tmp_path, capsys):
    """A read-only run folder: the figures were computed, then lost to the write error unprinted.
    (A folder named evaluation.json stands for a folder that refuses the file: the tests run as root.)"""
    train(_npz_config(tmp_path, "ro", ("train", "test")))
    run = tmp_path / "runs" / "ro"
    (run / "evaluation.json").mkdir()
    capsys.readouterr()
    with pytest.raises(ml.RunError, match=r"cannot write .*evaluation\.json"):
        KIND.evaluate(run)
    assert "test" in capsys.readouterr().out
