"""`multiloss train` runs: artifacts, overrides, evaluate/plot, resume after SIGKILL, multi-worker."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import yaml

from multiloss.cli.commands import main
from multiloss.run import train as runner
from multiloss.run.config import load_run_config
from multiloss.spec.errors import SpecError

CONFIG = textwrap.dedent("""
    name: digits_mt
    seed: 0
    data: {source: digits}
    model:
      builder: mlp
      params:
        hidden: [32]
        heads: {class: {kind: classification}, parity: {kind: binary}, image: {kind: reconstruction, hidden: 16}}
    loss:
      metrics: [accuracy]
      outputs:
        class: {loss: sparse_categorical_crossentropy}
        parity: {loss: binary_crossentropy, weight: 0.5}
        image: {loss: mse, weight: 2.0, metrics: [mae]}
    optimizer: {name: adam, params: {learning_rate: 3e-3}}
    train: {epochs: 3, batch_size: 64, verbose: 0}
""")


def _config(tmp_path, text=CONFIG, **extra):
    data = yaml.safe_load(text)
    data["output_dir"] = str(tmp_path / "runs")
    data.update(extra)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_train_writes_every_artifact_and_figures_are_right(tmp_path):
    cfg_path = _config(tmp_path)
    metrics = runner.train(cfg_path)
    run = tmp_path / "runs" / "digits_mt"
    for name in ("config.yaml", "history.csv", "history.json", "metrics.json", "model.keras",
                 "checkpoints/state.json", "plots/terms.png", "plots/metrics.png", "plots/total.png"):
        assert (run / name).is_file(), name
    import tensorflow as tf

    tags = set()
    for events in (run / "tensorboard" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags |= {v.tag for v in event.summary.value}
    assert {"epoch_class_loss", "epoch_class_weight", "epoch_image_weight", "epoch_loss"} <= tags
    assert not list(run.rglob(".tmp-*"))
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    for key in ("loss", "class_loss", "class_weight", "parity_weight", "image_loss", "image_mae",
                "class_accuracy", "val_loss", "val_class_loss", "val_image_weight"):
        assert key in header, key
    for row in history:
        total = row["class_loss"] + 0.5 * row["parity_loss"] + 2.0 * row["image_loss"]
        assert row["loss"] == pytest.approx(total, rel=1e-5)
    assert (run / "plots/terms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The saved test figures against an independent numpy computation on the test split.
    model = keras.saving.load_model(run / "model.keras")
    cfg = load_run_config(run / "config.yaml")
    test = runner.load_splits(cfg).test
    pred = model.predict(test.x, verbose=0)
    acc = (pred["class"].argmax(-1) == test.y["class"]).mean()
    mae = np.abs(pred["image"] - test.x).mean()
    saved = json.loads((run / "metrics.json").read_text())["splits"]
    assert saved["test"]["class_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert saved["test"]["image_mae"] == pytest.approx(mae, rel=1e-4)
    assert metrics["test"]["class_accuracy"] == pytest.approx(saved["test"]["class_accuracy"], rel=1e-6)
    assert saved["test"]["class_accuracy"] > 0.5
    # evaluate and plot re-derive the same figures and files.
    again = runner.evaluate_run(run)
    assert again["test"]["loss"] == pytest.approx(saved["test"]["loss"], rel=1e-6)
    (run / "plots/terms.png").unlink()
    runner.plot_run(run)
    assert (run / "plots/terms.png").exists()


def test_overrides_and_config_errors(tmp_path):
    path = _config(tmp_path)
    cfg = load_run_config(path, ["train.epochs=7", "optimizer.params.learning_rate=1e-2", "name=other"])
    assert (cfg.train.epochs, cfg.optimizer.params["learning_rate"], cfg.name) == (7, 0.01, "other")
    with pytest.raises(SpecError, match=r"train\.batch_size: .*got 'big' \(from --set train.batch_size=big\)"):
        load_run_config(path, ["train.batch_size=big"])
    text = CONFIG.replace("3e-3", "0.003")           # (PyYAML reads 3e-3 as a string)
    raw = yaml.safe_load(text)                       # a dict config: the overrides leave the caller's dict alone
    assert load_run_config(raw, ["train.epochs=2", "loss.outputs.class.weight=3"]).train.epochs == 2
    assert raw == yaml.safe_load(text) and load_run_config(raw).train.epochs == 3
    bad = CONFIG.replace("source: digits", "source: digitz").replace("weight: 0.5", "weight: -0.5")
    bad_path = _config(tmp_path, bad)
    lines = bad_path.read_text().splitlines()
    source_line = 1 + next(i for i, t in enumerate(lines) if "digitz" in t)
    weight_line = 1 + next(i for i, t in enumerate(lines) if "-0.5" in t)
    with pytest.raises(SpecError) as info:
        load_run_config(bad_path)
    msg = str(info.value)
    assert f":{source_line}: data.source: unknown data source 'digitz'; did you mean 'digits'" in msg
    assert f":{weight_line}: loss.outputs.parity.weight: must be ≥ 0" in msg
    with pytest.raises(SpecError, match=r"optimizer\.name: unknown optimizer 'adamm'"):
        load_run_config(path, ["optimizer.name=adamm"])
    with pytest.raises(SpecError, match=r"model\.params\.hiden: unknown parameter 'hiden'; did you mean 'hidden'\? "
                                         r"valid: heads, hidden \(from --set model.params.hiden=3\)"):
        load_run_config(path, ["model.params.hiden=3"])


def test_missing_data_target_is_named(tmp_path):
    cfg = load_run_config(_config(tmp_path), ["loss.outputs.class.loss=mse"])
    text = CONFIG.replace("class: {loss: sparse", "klass: {loss: sparse")
    cfg = load_run_config(_config(tmp_path, text))
    with pytest.raises(SpecError, match=r"run\.yaml:\d+: loss\.outputs\.klass: the train data has no target 'klass' "
                                        r"for 'klass'; did you mean 'class'\? data targets: \['class', 'image'"):
        runner.prepare(runner.load_splits(cfg).train, cfg, "train")


def _cli(*args, env=None, **kw):
    return [sys.executable, "-m", "multiloss.cli.commands", *args]


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_gives_unbroken_history(tmp_path):
    path = _config(tmp_path, CONFIG.replace("epochs: 3, batch_size: 64", "epochs: 4, batch_size: 8"))
    run = tmp_path / "runs" / "digits_mt"
    state = run / "checkpoints" / "state.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(_cli("train", str(path)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert 2 <= killed_at < 4, "the run should have been killed mid-run"
    assert not (run / "metrics.json").exists()
    out = subprocess.run(_cli("train", str(path), "--resume"), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    csv_rows = (run / "history.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 5
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["resumed_from_epoch"] == killed_at and summary["epochs"] == 4
    keras.saving.load_model(run / "model.keras")
    assert not list(run.rglob(".tmp-*"))


ONE_EPOCH = CONFIG.replace("epochs: 3", "epochs: 1").replace("verbose: 0", "verbose: 0, shuffle: false")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The config of one unshuffled epoch, and the folder of its plain (``distribute: none``) run:
    the reference the multi-worker and mirrored runs are compared with, trained once, in this
    process (it needs no strategy of its own)."""
    tmp = tmp_path_factory.mktemp("one_epoch")
    path = _config(tmp, ONE_EPOCH)
    assert main(["train", str(path), "--set", "name=plain", "--set", "distribute=none"]) == 0
    return path, tmp / "runs" / "plain"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_match_one_process_first_epoch(plain_run):
    """Two local workers (MultiWorkerMirroredStrategy over 127.0.0.1) see the same global
    batches (no shuffling) as one process; first-epoch losses agree to a relative 1e-5."""
    path, plain = plain_run
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        args = _cli("train", str(path), "--set", "distribute=multi_worker", "--set", f"name=worker{i}")
        procs.append(subprocess.Popen(args, env=dict(env, TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    runs = plain.parent
    assert not (runs / "worker1" / "history.json").exists()  # only the chief writes
    single = json.loads((plain / "history.json").read_text())[0]
    multi = json.loads((runs / "worker0" / "history.json").read_text())[0]
    assert single.keys() == multi.keys()
    for key in single:
        assert multi[key] == pytest.approx(single[key], rel=1e-5), key


@pytest.mark.slow
def test_mirrored_run_matches_plain_run(plain_run):
    """`distribute: mirrored` (MirroredStrategy over the visible devices) trains like `none`.

    The mirrored run is its own process, as `multiloss train` is.  Per-step exactness is tested in
    test_distributed.py (1e-5); over a whole Adam epoch the replicas' different summation
    order compounds, hence 1e-3 here."""
    path, plain = plain_run
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(_cli("train", str(path), "--set", "name=mirrored", "--set", "distribute=mirrored"),
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    results = {name: json.loads((run / "metrics.json").read_text())["splits"]["test"]
               for name, run in (("plain", plain), ("mirrored", plain.parent / "mirrored"))}
    for key, value in results["plain"].items():
        assert results["mirrored"][key] == pytest.approx(value, rel=1e-3), key


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_fashion_mnist_siamese_config_runs_on_real_pairs(tmp_path):
    cfg = load_run_config("configs/fashion_mnist_siamese.yaml", [
        f"output_dir={tmp_path}", "train.epochs=2", "train.verbose=0", "optimizer.params.learning_rate=3e-3",
        "data.params.train_limit=4000", "data.params.test_limit=1000"])
    metrics = runner.train(cfg)
    assert {"ctg_out_1_accuracy", "bin_out_accuracy", "contrastive_loss"} <= set(metrics["test"])
    assert metrics["test"]["ctg_out_1_accuracy"] > 0.3  # far above chance (0.1) after two epochs
    splits = runner.load_splits(cfg)
    y = splits.test.y
    np.testing.assert_array_equal(y["same"], (y["class_a"] == y["class_b"]).astype(int))


@pytest.mark.slow
def test_two_mirrored_runs_in_one_process(tmp_path):
    """`train` twice in one process (a notebook, a script over configs) with `distribute: mirrored`
    and models of different shapes: the second run's collectives do not meet the first's."""
    path = _config(tmp_path, ONE_EPOCH)
    for name, hidden in (("first", "[32]"), ("second", "[16, 8]")):
        metrics = runner.train(path, [f"name={name}", "distribute=mirrored", f"model.params.hidden={hidden}"])
        assert np.isfinite(metrics["test"]["loss"]), name


def test_integer_fields_refuse_booleans(tmp_path):
    path = _config(tmp_path, CONFIG.replace("epochs: 3, batch_size: 64", "epochs: true, batch_size: false"))
    lines = path.read_text().splitlines()
    line = {key: 1 + next(i for i, t in enumerate(lines) if t.strip().startswith(f"{key}: ")) for key in
            ("epochs", "batch_size")}
    with pytest.raises(SpecError) as info:
        load_run_config(path)
    assert {(p, ln) for p, ln, _ in info.value.problems} == {(("train", "epochs"), line["epochs"]),
                                                            (("train", "batch_size"), line["batch_size"])}
    assert f"{path}:{line['epochs']}: train.epochs: Input should be a valid integer, got True" in str(info.value)
    assert "train.batch_size: Input should be a valid integer, got False" in str(info.value)
    with pytest.raises(SpecError, match=r"train\.batch_size: Input should be a valid integer, got True "
                                        r"\(from --set train\.batch_size=true\)"):
        load_run_config(_config(tmp_path), ["train.batch_size=true"])


def test_a_misspelt_output_from_set_suggests_the_existing_one(tmp_path):
    # `klass` becomes a new head; with the spec's top-level metrics it has metrics, a weight and no loss
    with pytest.raises(SpecError, match=r"loss\.outputs\.klass\.weight: head 'klass' has a weight but no loss, .*; "
                                        r"did you mean 'class'\? \(from --set loss\.outputs\.klass\.weight=2\)"):
        load_run_config(_config(tmp_path), ["loss.outputs.klass.weight=2"])


def test_resuming_with_a_changed_config_names_the_keys_that_differ(tmp_path):
    from pathlib import Path

    from multiloss.run.kinds import get_kind

    kind, path = get_kind("train"), _config(tmp_path)
    cfg = kind.load_config(path)
    run = kind.folder(cfg)
    kind.start(run, cfg, say=lambda *a: None)
    run.save_checkpoint(0, {"step-0000.txt": lambda p: Path(p).write_text("x")}, {"fingerprint": cfg.fingerprint()})
    with pytest.raises(SpecError) as info:
        kind.folder(kind.load_config(path, ["train.batch_size=32", "loss.outputs.parity.weight=0.7"]), resume=True)
    assert [p for p, _, _ in info.value.problems] == [("train", "batch_size"), ("loss", "outputs", "parity", "weight")]
    message = str(info.value)
    assert (f"train.batch_size: differs from the run being resumed in {run.path}; resume with the same config "
            f"(only {kind.may_change} may change), or start another run (--set name=...); 64 in the run, 32 now "
            "(from --set train.batch_size=32)") in message
    assert "loss.outputs.parity.weight: differs from the run being resumed" in message
    assert "; 0.5 in the run, 0.7 now (from --set loss.outputs.parity.weight=0.7)" in message
    kind.folder(kind.load_config(path), resume=True)        # the same config resumes
    changed = _config(tmp_path, CONFIG.replace("batch_size: 64", "batch_size: 16"))   # the file, not --set
    line = 1 + next(i for i, t in enumerate(changed.read_text().splitlines()) if "batch_size: 16" in t)
    with pytest.raises(SpecError, match=rf"run\.yaml:{line}: train\.batch_size: differs .*; 64 in the run, 16 now$"):
        kind.folder(kind.load_config(changed), resume=True)
