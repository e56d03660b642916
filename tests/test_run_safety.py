"""Runs never lose work: re-runs, kills mid-write, NaNs, read-only and full disks — the real thing.

Each failure is produced as it happens in real life (a second `multiloss train`
in the same folder, SIGKILL, a user loss that turns NaN, a read-only mount, a
full tmpfs) and the folder is checked byte for byte afterwards.
"""

import csv
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from multiloss.cli.commands import main
from multiloss.run import atomic
from multiloss.run.rundir import RunDir
from multiloss.spec.errors import RunError

CONFIG = textwrap.dedent("""\
    name: safety
    seed: 0
    data: {source: digits}
    model:
      builder: mlp
      params:
        hidden: [16]
        heads: {class: {kind: classification}, image: {kind: reconstruction, hidden: 8}}
    loss:
      outputs:
        class: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        image: {loss: mse, weight: 0.5}
    optimizer: {name: adam, params: {learning_rate: 0.003}}
    train: {epochs: 2, batch_size: 256, verbose: 0}
""")

# A user loss (by import string) that turns NaN from its 13th call on: 5 training
# batches + 1 validation batch per epoch, so the first NaN is epoch 3's first step.
NAN_MODULE = textwrap.dedent("""\
    import tensorflow as tf
    from keras import ops

    CALLS = tf.Variable(0, trainable=False)

    def nan_mse(y_true, y_pred):
        CALLS.assign_add(1)
        factor = tf.where(CALLS > 12, float("nan"), 1.0)
        return ops.mean(ops.square(y_true - y_pred), axis=-1) * factor
""")


def _config(tmp_path: Path, output_dir: Path | None = None, **train) -> Path:
    data = yaml.safe_load(CONFIG)
    data["output_dir"] = str(output_dir or tmp_path / "runs")
    data["train"].update(train)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _env(tmp_path: Path) -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(tmp_path))


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multiloss", *args], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    """The folder of a finished one-epoch run of CONFIG, trained once in this process; the tests
    that start from such a run copy it to where their (real) read-only or full disk is."""
    where = tmp_path_factory.mktemp("one_epoch")
    assert main(["train", str(_config(where, epochs=1))]) == 0
    return where / "runs" / "safety"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _event_files(run: Path) -> list[Path]:
    return sorted(run.glob("tensorboard/**/events.out.tfevents.*"))


@pytest.mark.slow
def test_second_run_is_refused_untouched_then_overwrite_replaces_it(tmp_path):
    path = _config(tmp_path)
    assert main(["train", str(path)]) == 0   # the first run; the second and the overwrite are real processes
    run = tmp_path / "runs" / "safety"
    before = _snapshot(run)
    assert "model.keras" in before and "checkpoints/epoch-0002.keras" in before

    again = _cli(tmp_path, "train", str(path))
    assert again.returncode == 1
    assert "already holds a run" in again.stderr and "--resume" in again.stderr
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert _snapshot(run) == before

    replaced = _cli(tmp_path, "train", str(path), "--overwrite", "--set", "train.epochs=1")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    after = _snapshot(run)
    assert "checkpoints/epoch-0002.keras" not in after and "checkpoints/epoch-0001.keras" in after
    assert len(json.loads((run / "history.json").read_text())) == 1
    # TensorBoard: the events of the replaced run are gone (one train and one validation file).
    assert len(_event_files(run)) == 2


def test_overwrite_that_fails_before_training_leaves_the_run_it_would_replace(tmp_path, one_epoch_run, capsys):
    """--overwrite with a config whose data or model fails: the finished run was deleted first."""
    run = tmp_path / "runs" / "safety"
    shutil.copytree(one_epoch_run, run)
    before = _snapshot(run)
    path = _config(tmp_path)
    for bad in ("model.params.hidden=[-4]", "data.source=npz"):
        assert main(["train", str(path), "--overwrite", "--set", bad]) == 1, bad
        assert "error:" in capsys.readouterr().err
        assert _snapshot(run) == before, bad


def test_resume_with_a_checkpoint_file_gone_is_refused_not_a_fresh_start(tmp_path, one_epoch_run, capsys):
    """It retrained from epoch 0 and replaced the run's model and history."""
    run = tmp_path / "runs" / "safety"
    shutil.copytree(one_epoch_run, run)
    (run / "checkpoints" / "epoch-0001.keras").unlink()
    before = _snapshot(run)
    assert main(["train", str(_config(tmp_path)), "--resume", "--set", "train.epochs=2"]) == 1
    err = capsys.readouterr().err
    assert "names epoch-0001.keras, which is not in" in err and "--overwrite" in err, err
    assert _snapshot(run) == before


@pytest.mark.parametrize("damaged", ["checkpoints/epoch-0001.keras", "model.keras"])
def test_a_truncated_model_file_is_named_not_keras_file_not_found(tmp_path, one_epoch_run, capsys, damaged):
    """Keras says "File not found" for a .keras file that is there but truncated (a disk error, a copy
    cut short); --resume (the checkpoint) and export (the model) name the file and what to do."""
    run = tmp_path / "runs" / "safety"
    shutil.copytree(one_epoch_run, run)
    file = run / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    before = _snapshot(run)
    if damaged.startswith("checkpoints"):
        args = ["train", str(_config(tmp_path)), "--resume", "--set", "train.epochs=2"]
    else:
        args = ["export", str(run), "--format", "keras", "--out", str(tmp_path / "served.keras")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{file} is not a complete zip archive (truncated or damaged): put back an intact copy" in err, err
    assert "File not found" not in err and "Traceback" not in err
    assert _snapshot(run) == before


def test_a_folder_is_run_by_one_process_at_a_time_and_a_kill_frees_it(tmp_path):
    """Another process's open of a folder in use is refused before it looks inside; the holder's
    SIGKILL frees it (the kernel drops a dead process's lock).  This process's own opens pass."""
    with RunDir(tmp_path / "run") as first:
        first.open()
        RunDir(tmp_path / "run", overwrite=True).open()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from multiloss.run.rundir import RunDir
        RunDir({str(tmp_path / "run")!r}, overwrite=True).open()
        print("held", flush=True)
        time.sleep(300)""")], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=r"is in use by another multiloss process .*nothing in it was changed"):
            RunDir(tmp_path / "run", overwrite=True).open()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with RunDir(tmp_path / "run", resume=True) as after:
        assert after.open() is None


@pytest.mark.slow
def test_overwrite_while_the_run_trains_is_refused_and_the_run_goes_on(tmp_path):
    """A real `multiloss train` mid-run and a second `--overwrite` of its folder: the second cleared the
    folder under the first (whose later files then mixed with the new run's)."""
    path = _config(tmp_path, epochs=400)
    run = tmp_path / "runs" / "safety"
    live = subprocess.Popen([sys.executable, "-m", "multiloss", "train", str(path)], env=_env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "state.json").exists():
            assert live.poll() is None and time.time() < deadline, live.stderr.read()[-3000:] if live.poll() else ""
            time.sleep(0.2)
        second = _cli(tmp_path, "train", str(path), "--overwrite", "--set", "train.epochs=1")
        assert live.poll() is None, "the first run ended before the second was refused: make it longer"
        assert second.returncode == 1 and "is in use by another multiloss process" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        state = json.loads((run / "checkpoints" / "state.json").read_text())
        assert state["epoch"] >= 1 and (run / "config.yaml").is_file()    # not cleared
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait(30)


def test_checkpoints_are_pruned_by_epoch_number_not_file_name(tmp_path):
    run = RunDir(tmp_path / "run")
    run.open()
    ckpt = run.checkpoints
    ckpt.mkdir()
    for name in ("epoch-9.bin", "epoch-0012.bin"):  # 12: left by a run killed before its state
        (ckpt / name).write_bytes(b"old")
    # By file name "epoch-10" sorts before "epoch-9": pruning by name would delete the newest.
    run.save_checkpoint(10, {"epoch-10.bin": lambda p: p.write_bytes(b"new")}, {"epoch": 10}, keep=1)
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-10.bin", "state.json"]
    state = run.read_state()
    assert state["files"] == ["epoch-10.bin"] and state["index"] == 10
    run.save_checkpoint(11, {"epoch-11.bin": lambda p: p.write_bytes(b"newer")}, {"epoch": 11}, keep=2)
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-10.bin", "epoch-11.bin", "state.json"]


KILL_WRITER = textwrap.dedent("""\
    import sys, time
    from multiloss import atomic

    def slow(path):
        with open(path, "wb") as f:
            for _ in range(200):
                f.write(b"x" * 65536)
                f.flush()
                time.sleep(0.02)

    atomic.write_with(sys.argv[1], slow)
""")


def test_sigkill_mid_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "run" / "metrics.json"
    target.parent.mkdir()
    target.write_text('{"good": 1}')
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER)
    # Spec-only: the writer needs no TensorFlow (the SIGKILL is no less real for it).
    proc = subprocess.Popen([sys.executable, str(script), str(target)],
                            env=dict(_env(tmp_path), MULTILOSS_SPEC_ONLY="1"))
    deadline = time.time() + 60
    while time.time() < deadline:
        partial = list(target.parent.glob(f"{atomic.TMP_PREFIX}*"))
        if partial and partial[0].stat().st_size > 65536:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == '{"good": 1}'
    assert list(target.parent.glob(f"{atomic.TMP_PREFIX}*"))  # the half-written temporary
    RunDir(target.parent, resume=True).open()                   # a resumed run cleans it up
    assert not list(target.parent.glob(f"{atomic.TMP_PREFIX}*"))
    assert target.read_text() == '{"good": 1}'


def test_opening_a_folder_leaves_a_live_trials_temporary_alone(tmp_path):
    """A second sweep worker opening the sweep folder must not delete the file a trial is writing."""
    sweep = tmp_path / "sweep"
    trial = sweep / "trial-0001"
    trial.mkdir(parents=True)
    (trial / "config.yaml").write_text("name: trial-0001\n")
    (sweep / f"{atomic.TMP_PREFIX}stale.abcd.json").write_text("left by a killed process")
    target = trial / "metrics.json"
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(target)],
                            env=dict(_env(tmp_path), MULTILOSS_SPEC_ONLY="1"))
    deadline = time.time() + 60
    while time.time() < deadline and not list(trial.glob(f"{atomic.TMP_PREFIX}*")):
        time.sleep(0.01)
    RunDir(sweep, resume=True).open()                     # the sweep's own leftovers go ...
    assert not list(sweep.glob(f"{atomic.TMP_PREFIX}*"))
    assert proc.wait(timeout=60) == 0                     # ... the trial's write completes
    assert target.stat().st_size == 200 * 65536
    assert not list(trial.glob(f"{atomic.TMP_PREFIX}*"))


def test_artifacts_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def _nan_config(tmp_path: Path, **train) -> Path:
    (tmp_path / "nanloss.py").write_text(NAN_MODULE)
    path = _config(tmp_path, epochs=4, **train)
    data = yaml.safe_load(path.read_text())
    data["loss"]["outputs"]["image"]["loss"] = "nanloss:nan_mse"
    data["train"]["shuffle"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _load_weights(path: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_nan_from_a_user_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    path = _nan_config(tmp_path)
    out = _cli(tmp_path, "train", str(path))
    assert out.returncode == 3, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "non-finite values (NaN or Inf) in term 'image'" in out.stderr
    assert "at epoch 3, step 1" in out.stderr and "train.nonfinite: skip" in out.stderr
    run = tmp_path / "runs" / "safety"
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["files"] == ["epoch-0002.keras"]
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert all(np.isfinite(w).all() for w in _load_weights(run / "checkpoints" / "epoch-0002.keras"))
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [1, 2]


@pytest.mark.slow
def test_nan_batches_are_skipped_and_counted_when_asked(tmp_path):
    path = _nan_config(tmp_path, nonfinite="skip")
    out = _cli(tmp_path, "train", str(path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "warning: epoch 3: skipped 5 batch(es) with non-finite values in term 'image'" in out.stdout
    run = tmp_path / "runs" / "safety"
    history = json.loads((run / "history.json").read_text())
    assert [r["nonfinite_skipped"] for r in history] == [0, 0, 5, 5]
    assert json.loads((run / "metrics.json").read_text())["nonfinite_skipped_batches"] == 10
    # Skipped batches leave the weights as they were: finite, and equal to epoch 2's.
    final = _load_weights(run / "model.keras")
    assert all(np.isfinite(w).all() for w in final)
    assert history[2]["image_loss"] is None     # the epoch means still show what the loss computed: NaN,
    rows = list(csv.DictReader(open(run / "history.csv")))   # null in (strict) JSON, nan in the CSV
    assert np.isnan(float(rows[2]["image_loss"]))
    assert np.isfinite(history[1]["loss"]) and np.isfinite(history[2]["class_loss"])


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(name: str, size: str) -> Path:
        where = tmp_path / name
        if not _mount_tmpfs(where, size):
            pytest.skip("needs root to mount a tmpfs (a real read-only or full file system)")
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _one_epoch_run_on(disk: Path, request) -> Path:
    """The one-epoch run in ``disk``'s folder for CONFIG (trained only once a disk could be mounted)."""
    run = disk / "safety"
    shutil.copytree(request.getfixturevalue("one_epoch_run"), run)
    return run


@pytest.mark.slow
def test_read_only_output_folder_gives_a_clear_error_and_changes_nothing(tmp_path, tmpfs, request):
    disk = tmpfs("disk", "8m")
    path = _config(tmp_path, output_dir=disk, epochs=1)
    run = _one_epoch_run_on(disk, request)
    before = _snapshot(run)
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
    out = _cli(tmp_path, "train", str(path), "--resume", "--set", "train.epochs=2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"the run folder {run} is not writable (Read-only file system)" in out.stderr
    fresh = _cli(tmp_path, "train", str(path), "--set", "name=another")
    assert fresh.returncode == 1 and "Traceback" not in fresh.stderr
    assert f"cannot create the run folder {disk / 'another'}: Read-only file system" in fresh.stderr
    # --overwrite: it tried to remove the old run first ("--overwrite cannot remove .../plots")
    replace = _cli(tmp_path, "train", str(path), "--overwrite")
    assert replace.returncode == 1 and "Traceback" not in replace.stderr
    assert f"the run folder {run} is not writable (Read-only file system); nothing in it was changed" \
        in replace.stderr, replace.stderr[-2000:]
    assert _snapshot(run) == before


@pytest.mark.slow
def test_export_into_a_read_only_folder_is_one_line(tmp_path, tmpfs, request):
    """A SavedModel is written by TensorFlow, whose PermissionDeniedError was a traceback."""
    disk = tmpfs("disk", "8m")
    run = _one_epoch_run_on(disk, request)
    (run / "export").mkdir()                  # there from an earlier export: TensorFlow is the first to write
    before = _snapshot(run)
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode == 0
    for fmt in ("tf_saved_model", "keras"):
        out = _cli(tmp_path, "export", str(run), "--format", fmt)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert f"error: cannot write {run / 'export'}" in out.stderr and "Read-only file system" in out.stderr
    assert _snapshot(run) == before


@pytest.mark.slow
def test_full_disk_mid_run_keeps_the_last_checkpoint(tmp_path, tmpfs, request):
    disk = tmpfs("disk", "1m")
    path = _config(tmp_path, output_dir=disk, epochs=1)
    run = _one_epoch_run_on(disk, request)
    before = _snapshot(run)
    # Fill the disk but for a few blocks: enough to start, not enough for a checkpoint.
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - 24 * 1024))
    out = _cli(tmp_path, "train", str(path), "--resume", "--set", "train.epochs=3")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "No space left on device" in out.stderr and "is intact" in out.stderr
    after = _snapshot(run)
    for name in ("checkpoints/state.json", "checkpoints/epoch-0001.keras", "model.keras", "metrics.json"):
        assert after[name] == before[name], name
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert not list(run.rglob(f"{atomic.TMP_PREFIX}*"))


def test_a_failing_write_raises_run_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(atomic.os, "replace", no_space)
    with pytest.raises(RunError, match=r"cannot write .*metrics.json: No space left on device; the previous "
                                       r"version of the file \(if any\) is intact"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(f"{atomic.TMP_PREFIX}*"))
