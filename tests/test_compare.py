"""``multiloss compare``: several runs' histories overlaid in one PNG and one Markdown table."""

import csv
import json

import pytest

import multiloss.run.compare as compare


def _run(path, losses, accuracy, weight=1.0, val=True, as_csv=False):
    rows = []
    for e, (loss, acc) in enumerate(zip(losses, accuracy), start=1):
        row = {"epoch": e, "loss": weight * loss, "a_loss": loss, "a_weight": weight, "a_accuracy": acc,
               "b_auc": 0.5}
        if val:
            row.update(val_loss=weight * loss * 1.5, val_a_loss=loss * 1.5, val_a_accuracy=acc - 0.1)
        rows.append(row)
    path.mkdir(parents=True)
    if as_csv:
        with open(path / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        (path / "history.json").write_text(json.dumps(rows))
    return path


@pytest.fixture
def figures(monkeypatch):
    saved = []
    original = compare.save_figure
    monkeypatch.setattr(compare, "save_figure", lambda fig, path: (saved.append(fig), original(fig, path)))
    return saved


def test_compare_two_runs(tmp_path, figures):
    a = _run(tmp_path / "x" / "static", [1.0, 0.5, 0.4], [0.5, 0.7, 0.8])
    b = _run(tmp_path / "y" / "gradnorm", [1.2, 0.6, 0.3, 0.2], [0.4, 0.6, 0.85, 0.9], as_csv=True)
    png, md = compare.compare_runs([a, b], tmp_path / "out" / "cmp")
    assert png == tmp_path / "out" / "cmp.png" and md == tmp_path / "out" / "cmp.md"
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in md.read_text().splitlines() if line.startswith("| ") and "---" not in line}
    assert table[""] == ["`static`", "`gradnorm`"]
    assert table["epochs"] == ["3", "4"]
    # Final epoch, train / validation; the better validation value in bold (lower loss, higher accuracy).
    assert table["a_loss"] == ["0.4 / 0.6", "**0.2 / 0.3**"]
    assert table["a_accuracy"] == ["0.8 / 0.7", "**0.9 / 0.8**"]
    assert table["b_auc"] == ["0.5", "0.5"]  # the same everywhere: no bold
    assert "a_weight" not in table  # the same fixed weight in both runs
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["loss  (total)", "a_loss", "a_accuracy"]
    assert "b_auc = 0.5" in fig.get_supxlabel()  # constant: listed, no panel
    ax = panels[1]
    lines = ax.get_lines()
    assert [tuple(line.get_xdata()) for line in lines] == [(1, 2, 3), (1, 2, 3), (1, 2, 3, 4), (1, 2, 3, 4)]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]


def test_weights_that_differ_get_a_row_and_a_panel(tmp_path, figures):
    a = _run(tmp_path / "w1", [1.0, 0.5], [0.5, 0.6], weight=0.1, val=False)
    b = _run(tmp_path / "w2", [1.0, 0.5], [0.5, 0.6], weight=2.8, val=False)
    png, md = compare.compare_runs([a, b], tmp_path)
    assert png.name == "compare.png" and md.name == "compare.md"
    text = md.read_text()
    assert "| a_weight | 0.1 | 2.8 |" in text and "| loss | **0.05** | 1.4 |" in text
    assert "a_weight" in [ax.get_title() for ax in figures[0].axes]


def test_same_folder_names_get_their_parents(tmp_path):
    a = _run(tmp_path / "seed0" / "run", [1.0], [0.5])
    b = _run(tmp_path / "seed1" / "run", [1.0], [0.5])
    _, md = compare.compare_runs([a, b], tmp_path / "c")
    assert "`seed0/run`" in md.read_text() and "`seed1/run`" in md.read_text()


def test_missing_history_is_reported(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no history.json or history.csv"):
        compare.compare_runs([tmp_path / "empty"], tmp_path / "c")
    from multiloss.cli.commands import main

    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 1
    assert "no history.json" in capsys.readouterr().err


def test_cli_compare(tmp_path, capsys):
    from multiloss.cli.commands import main

    a = _run(tmp_path / "a", [1.0, 0.5], [0.5, 0.6])
    b = _run(tmp_path / "b", [1.0, 0.4], [0.5, 0.7])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| a_loss | 0.5 / 0.75 | **0.4 / 0.6** |" in out
    assert (tmp_path / "cmp.png").exists() and (tmp_path / "cmp.md").exists()


def test_incremental_histories_count_epochs_through_steps(tmp_path, figures):
    rows = [{"step": s, "stage": "train", "epoch": e, "loss": 10.0 * s + e, "classification_loss": 10.0 * s + e}
            for s in range(2) for e in (1, 2)]
    run = tmp_path / "icarl"
    run.mkdir()
    (run / "history.json").write_text(json.dumps(rows))
    assert [r["epoch"] for r in compare.read_history(run)] == [1, 2, 3, 4]
    compare.compare_runs([run], tmp_path / "c")
    ax = next(a for a in figures[0].axes if a.get_title() == "classification_loss")
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 2.0, 11.0, 12.0]  # in file order, not by epoch
    assert "step" not in [a.get_title() for a in figures[0].axes]


def test_compare_adds_delta_m_against_single_task_baselines(tmp_path, capsys):
    """Final epoch: run a has val_a_loss 0.75, val_a_accuracy 0.5; run b 0.6 and 0.6.  Baselines 0.5 and 0.8:
    a: ((0.75 − 0.5)/0.5 − (0.5 − 0.8)/0.8)/2 = (0.5 + 0.375)/2 = +43.75 %;
    b: ((0.6 − 0.5)/0.5 − (0.6 − 0.8)/0.8)/2 = (0.2 + 0.25)/2 = +22.5 %  (the better)."""
    from multiloss.cli.commands import main

    a = _run(tmp_path / "a", [1.0, 0.5], [0.5, 0.6])
    b = _run(tmp_path / "b", [1.0, 0.4], [0.5, 0.7])
    (tmp_path / "baselines.json").write_text(json.dumps({"values": {"val_a_loss": 0.5, "val_a_accuracy": 0.8}}))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"),
                 "--baselines", str(tmp_path / "baselines.json")]) == 0
    assert "| Δm% vs baselines | +43.75 | **+22.50** |" in capsys.readouterr().out
    (tmp_path / "written.json").write_text(json.dumps({"values": {  # as `multiloss baselines` writes it
        "val_a_loss": 0.5, "val_a_accuracy": 0.8, "test_a_loss": 0.4, "test_a_accuracy": 0.9}}))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"),
                 "--baselines", str(tmp_path / "written.json")]) == 0
    assert ("| Δm% vs baselines (over val_a_loss, val_a_accuracy: no history logs test_a_loss, test_a_accuracy) "
            "| +43.75 | **+22.50** |") in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["compare", str(a), "--out", str(tmp_path / "cmp"), "--baselines", str(tmp_path / "bad.json")]) != 0
    assert "--baselines" in capsys.readouterr().err
