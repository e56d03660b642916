"""The `multiloss` console script: fast help, --version, quiet TensorFlow start-up, -q, python -m."""

import os
import subprocess
import sys
import textwrap

import pytest

import multiloss_cli


def _run(*args, **kw):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=300, **kw)


def test_help_and_version_do_not_import_tensorflow():
    code = textwrap.dedent("""\
        import sys, multiloss_cli
        for argv in (["--help"], ["--version"], ["incremental", "--help"], ["train", "--help"]):
            try:
                multiloss_cli.main(argv)
            except SystemExit as exc:
                assert exc.code == 0, (argv, exc.code)
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    out = _run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"   # the parser imports the spec layer only
    assert "--resume" in out.stdout and "--overwrite" in out.stdout and "--dry-run" in out.stdout
    assert "multiloss 0.1.0" in out.stdout


@pytest.mark.parametrize("line, noise", [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", True),
    ("I0000 00:00:1796108806.811352   21133 port.cc:153] oneDNN custom operations are on.", True),
    ("W0000 00:00:1796108808.056559    3557 dataset.cc:997] Input of GeneratorDatasetOp", True),
    ("E0000 00:00:1796107807.863347    3557 cuda_platform.cc:52] failed call to cuInit: INTERNAL", True),
    ("To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with", True),
    ("error: runs/x already holds a run. Continue it with `multiloss train CONFIG --resume`", False),
    ("E0000 00:00:1796107807.863347    3557 executor.cc:12] Executor failed to create kernel", False),
    ("Traceback (most recent call last):", False),
])
def test_noise_filter_drops_only_tensorflow_start_up_lines(line, noise):
    assert multiloss_cli.is_noise(line) is noise


@pytest.mark.slow
def test_commands_are_quiet_by_default_and_verbose_on_request(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "multiloss")
    quiet = _run(exe, "validate", "configs/siamese.yaml")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.startswith("configs/siamese.yaml: OK")
    loud = _run(exe, "-v", "validate", "configs/siamese.yaml")
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    silent = _run(exe, "-q", "validate", "configs/siamese.yaml")
    assert silent.returncode == 0 and silent.stdout == "" and silent.stderr == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("outputs:\n  a: {loss: msee}\n")
    refused = _run(exe, "-q", "validate", str(bad))
    assert refused.returncode == 1 and refused.stderr.startswith(f"error: {bad}:2: outputs.a.loss: unknown loss")
    module = _run(sys.executable, "-m", "multiloss", "validate", "configs/siamese.yaml")
    assert module.returncode == 0 and module.stdout == quiet.stdout
