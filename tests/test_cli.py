"""The multiloss command line: validate, describe, schema, check."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multiloss.cli.commands import main


def test_validate_ok_and_error_exit_codes(tmp_path, capsys):
    assert main(["validate", "configs/siamese.yaml"]) == 0
    assert "OK (loss spec, 4 terms" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("outputs:\n  a: {loss: mse}\n  b: {loss: crossentropy}\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: outputs.b.loss: unknown loss 'crossentropy'" in err
    assert "Traceback" not in err


def test_validate_with_model_checks_output_names(capsys):
    rc = main(["validate", "configs/siamese.yaml", "--model", "multiloss.run.examples:depth_model"])
    assert rc == 1
    assert "the model has no output 'ctg_out_1'; its outputs are ['depth', 'segmentation']" in capsys.readouterr().err
    rc = main(["validate", "configs/siamese.yaml", "--model", "nosuch.module:fn"])
    assert rc == 1 and "does not import" in capsys.readouterr().err


def test_describe_table(capsys):
    assert main(["describe", "configs/depth_segmentation.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["term", "outputs", "loss", "weight", "reduction", "metrics", "weights"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows["depth"][1:5] == ["depth", "huber(delta=1.0)", "1", "weighted_mean"]
    assert rows["segmentation_dice"][3] == "0.5"
    assert "class_weight={3:" in " ".join(rows["segmentation"])


def test_describe_a_run_config_describes_its_loss(capsys):
    """It read the whole run config as a loss spec: 14 bogus problems (name: unknown key ...)."""
    assert main(["describe", "configs/fashion_mnist_siamese.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:] if line.strip() and not line.startswith("weighting")}
    assert set(rows) == {"ctg_out_1", "ctg_out_2", "bin_out", "contrastive"}
    assert rows["contrastive"][1:4] == ["emb_a,emb_b", "contrastive(margin=1.0)", "0.1"]
    assert main(["describe", "configs/incremental_digits.yaml"]) == 1
    err = capsys.readouterr().err
    assert "an incremental config has no loss spec of its own" in err and "unknown key" not in err


def test_check_a_run_config_checks_its_loss(tmp_path, capsys):
    """It read the whole run config as a loss spec: a line of `unknown key` per run key."""
    run = tmp_path / "run.yaml"
    run.write_text(f"name: d\ndata: {{source: digits}}\nmodel: {{builder: mlp}}\n"
                   f"loss: {Path('configs/depth_segmentation.yaml').resolve()}\n")
    assert main(["check", str(run), "--model", "multiloss.run.examples:depth_model", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "(3, 16, 16, 4)  (3,)" in next(line for line in out.splitlines() if line.startswith("segmentation_dice"))
    assert main(["check", "configs/incremental_digits.yaml", "--model", "multiloss.run.examples:depth_model"]) == 1
    assert "an incremental config has no loss spec of its own" in capsys.readouterr().err


def test_schema_is_valid_json_and_names_fields(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "multiloss loss spec"
    assert "reduction" in schema["$defs"]["HeadSpec"]["properties"]
    assert schema["$defs"]["HeadSpec"]["properties"]["reduction"]["enum"] == [
        "sum_over_batch_size", "sum_by_nonzero_weights", "weighted_mean", "sum"]


def test_check_prints_loss_shapes_and_values(capsys):
    assert main(["check", "configs/depth_segmentation.yaml", "--model", "multiloss.run.examples:depth_model",
                 "--batch", "3"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith("total")}
    assert "(3, 16, 16, 1)  (3, 16, 16)" in rows["depth"]
    assert "(3, 16, 16, 4)  (3, 16, 16)" in rows["segmentation"]
    assert "(3, 16, 16, 4)  (3,)" in rows["segmentation_dice"]
    values = {k: float(v.split()[-1]) for k, v in rows.items()}
    total = float(out.split("total = Σ weight·value = ")[1].split()[0])
    assert total == pytest.approx(values["depth"] + values["segmentation"] + 0.5 * values["segmentation_dice"],
                                  rel=1e-4)
    assert np.isfinite(total)


@pytest.mark.slow
def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "multiloss.cli.commands", "describe", "configs/siamese.yaml"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "contrastive(margin=1.0)" in out.stdout


@pytest.mark.parametrize("args", [["quickstart", "--out", "{tmp}/qs", "--epochs", "0"],
                                  ["check", "configs/depth_segmentation.yaml", "--batch", "-3"],
                                  ["sweep", "configs/sweep_siamese.yaml", "--workers", "two"]])
def test_counts_below_one_are_refused_by_the_parser_before_anything_runs(args, tmp_path, capsys):
    """`quickstart --epochs 0` trained and then printed `error: digit_weight`; `check --batch -3` was a
    numpy traceback."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {args[-2]}: must be an integer ≥ 1, got " in err and "Traceback" not in err
    assert not (tmp_path / "qs").exists()


def test_quickstart_into_a_file_is_refused_before_it_trains(tmp_path, capsys, monkeypatch):
    """It trained for its epochs, then failed to make the folder (a file was there)."""
    import multiloss.run.quickstart as quickstart

    (tmp_path / "qs").write_text("my notes")
    monkeypatch.setattr(quickstart, "digits_multitask_data", lambda: pytest.fail("it loaded data to train"))
    assert main(["quickstart", "--out", str(tmp_path / "qs")]) == 1
    err = capsys.readouterr().err
    assert f"error: --out {tmp_path / 'qs'} is a file; give a folder" in err
    assert (tmp_path / "qs").read_text() == "my notes"



def test_describe_with_a_strategy_and_schedules_does_not_call_static_x_schedule_the_effective_weight(
        tmp_path, capsys):
    """With uncertainty, 'at step 0: 2' was headed "effective weight", while the first step logs c_weight
    1.0 (½e^0·2): the strategy's factor multiplies the column, and describe says so."""
    path = tmp_path / "spec.yaml"
    path.write_text("outputs:\n  a: {loss: mse, weight: 2}\n  c: {loss: mse, weight: 2}\nweighting: uncertainty\n"
                    "schedules:\n  c: {kind: linear, start: 0.0, end: 1.0, steps: 10}\n")
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "effective weight  static" not in out and "static × schedule  static" in out
    assert "is this × the weight uncertainty computes" in out
    path.write_text("outputs:\n  a: {loss: mse, weight: 2}\n"
                    "schedules:\n  a: {kind: linear, start: 0.0, end: 1.0, steps: 10}\n")
    assert main(["describe", str(path)]) == 0
    assert "effective weight  static" in capsys.readouterr().out     # no strategy: it is the effective weight


def test_the_commands_show_user_warnings_in_one_line(tmp_path):
    """A test folder without a class's images warned through Python's format: the file, the line and the
    calling source line (`records = split_records(...)`) beside the message."""
    import warnings

    import numpy as np

    from multiloss.cli.commands import own_warnings_in_one_line
    from multiloss.run.sources import warn_missing_classes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with own_warnings_in_one_line():
            warn_missing_classes(tmp_path / "test", ["a", "b"], np.array([0, 0]), "test")
            warnings.warn("not ours", RuntimeWarning, stacklevel=1)
            shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]
    assert shown[0] == (f"warning: data.params.path: {tmp_path / 'test'} has no images of the class 'b' of train/: "
                        "their test accuracy is not measured, and test figures over all classes cover the others "
                        f"only; add images in {tmp_path / 'test'}/<class>/\n")
    assert "RuntimeWarning: not ours" in shown[1]            # other categories as Python shows them
    assert len(caught) == 2                                   # still recorded: pytest.warns sees them
