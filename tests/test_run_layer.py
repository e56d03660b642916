"""The run layer every run kind shares: validate for every config kind, --dry-run, evaluate/plot of any run."""

import json
from pathlib import Path

import pytest
import yaml

from multiloss.cli.commands import main

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("path, kind", [
    ("configs/siamese.yaml", "loss spec, 4 terms: ctg_out_1, ctg_out_2, bin_out, contrastive"),
    ("multiloss/configs/siamese_digits.yaml", "run config 'siamese_digits': data 'digits_pairs', model "
                                              "'siamese_cnn' with outputs bin_out, ctg_out_1, ctg_out_2, emb_a, "
                                              "emb_b; 4 terms"),
    ("configs/incremental_digits.yaml", "incremental config 'incremental_digits': method 'icarl', 5 steps of "
                                        "[2, 2, 2, 2, 2] classes, class order [4, 2, 7, 6, 0, 3, 5, 8, 9, 1]"),
])
def test_validate_recognises_each_kind_of_file(path, kind, capsys):
    assert main(["validate", path]) == 0
    assert f"{path}: OK ({kind}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_every_shipped_config_validates(capsys):
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


def test_dry_run_runs_one_batch_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dry-run", "--set", "output_dir=out"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "(weight" in line}
    assert set(rows) == {"ctg_out_1", "ctg_out_2", "bin_out", "contrastive"}
    total = float(out.split("total ")[1].split(";")[0])
    # Σ weight·value over the printed terms (weights of the packaged config: 1, 1, 0.5, 0.1)
    expected = sum(float(r[1]) * float(r[3].rstrip(")")) for r in rows.values())
    assert total == pytest.approx(expected, rel=1e-4)
    assert not (tmp_path / "out").exists()


def test_dry_run_shows_the_runs_first_batch(tmp_path):
    """Seeded as the run is: with one batch an epoch, the dry run's total is the run's first epoch loss.
    It was unseeded, and printed another value each time (2.41, 2.36, 2.26 for digits_two_sets)."""
    import json

    from multiloss.run.config import load_run_config
    from multiloss.run.train import default_config_path, dry_run, train

    sets = [f"output_dir={tmp_path}", "train.epochs=1", "train.batch_size=4096", "train.verbose=0",
            "data.params.pairs_per_image=0.5"]
    first, again = (dry_run(load_run_config(default_config_path(), sets))["total"] for _ in range(2))
    assert first == again
    train(default_config_path(), sets)
    history = json.loads((tmp_path / "siamese_digits" / "history.json").read_text())
    assert history[0]["loss"] == pytest.approx(first, rel=1e-5)


@pytest.mark.slow
def test_evaluate_and_plot_an_incremental_run_folder(tmp_path, capsys):
    data = yaml.safe_load((CONFIGS / "incremental_digits.yaml").read_text())
    data.update(output_dir=str(tmp_path), name="inc")
    data["scenario"].update(steps=2)
    data["train"].update(epochs=1)
    data["model"]["params"] = {"filters": [4], "dense": 8}
    path = tmp_path / "inc.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["incremental", str(path)]) == 0
    run = tmp_path / "inc"
    summary = json.loads((run / "metrics.json").read_text())
    (run / "accuracy.png").unlink()
    assert main(["plot", str(run)]) == 0
    assert (run / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(run)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["step"] == 1 and evaluation["num_classes"] == 4
    # The restored network and memory give the figures the run recorded after its last step.
    assert evaluation["accuracy"] == pytest.approx(summary["last_accuracy"], abs=1e-9)
    assert evaluation["task_accuracy"] == pytest.approx(summary["steps"][-1]["task_accuracy"], abs=1e-9)
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "is not a run folder: it has no config.yaml" in capsys.readouterr().err


def test_a_malformed_set_is_named_once(capsys):
    assert main(["validate", "multiloss/configs/siamese_digits.yaml", "--set", "train.epochs"]) == 1
    assert capsys.readouterr().err == "error: --set: expected key.path=value, got 'train.epochs'\n"


def test_json_artifacts_are_strict_json_a_nan_is_null_and_a_sweep_reads_it_as_not_finite(tmp_path):
    from multiloss.run.rundir import RunDir
    from multiloss.run.sweep import finished_values, objective_values

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    nan, inf = float("nan"), float("inf")
    run.write_json("metrics.json", {"splits": {"val": {"loss": nan, "acc": 0.8635097742080688},
                                               "train": {"loss": -inf}}, "task_accuracy": [0.5, nan]})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    saved = json.loads((run.path / "metrics.json").read_text(), parse_constant=refuse)
    assert saved == {"splits": {"val": {"loss": None, "acc": 0.8635098}, "train": {"loss": None}},
                     "task_accuracy": [0.5, None]}
    values = objective_values(run.path, ["val_acc", "val_loss", "loss"])
    assert values[0] == pytest.approx(0.8635098) and all(v != v for v in values[1:])   # NaN, as logged
    assert finished_values(run.path, ["val_acc", "val_loss"]) is None
    assert finished_values(run.path, ["val_acc"]) == [pytest.approx(0.8635098)]
