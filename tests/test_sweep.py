"""multiloss sweep: the sweep file, the space, the Pareto front, the reports, and real sweeps.

The fast tests check the sweep file's validation, the overrides a trial gets, the front and the
reports on hand-made trial tables (each against a computation written here), and Optuna's median
pruning as the sweep drives it.  The slow ones run real sweeps of tiny runs (digits, an mlp with one
hidden layer of 8, 1-3 epochs): the done-when sweep of 6 trials over two heads' weights with 2 workers,
two sweep processes sharing one journal study, and a NaN, a SIGKILL and --resume.
"""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from multiloss.cli.commands import main
from multiloss.run import sweep_report
from multiloss.run.config import load_run_config
from multiloss.run.sweep import Running, Scheduler, error_text, fail_stale, open_study
from multiloss.run.sweep_config import load_sweep
from multiloss.run.sweep_report import TrialRow
from multiloss.run.sweep_space import FixedPick, sample, simplex_weights
from multiloss.spec.errors import RunError, SpecError

RUN = textwrap.dedent("""\
    name: digits_heads
    seed: 0
    data: {source: digits}
    model:
      builder: mlp
      params:
        hidden: [8]
        heads: {class: {kind: classification}, parity: {kind: classification, units: 2}}
    loss:
      outputs:
        class: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        parity: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
      terms:
        - {name: class_again, outputs: [class], target: class, loss: sparse_categorical_crossentropy, weight: 0.5}
    optimizer: {name: adam, params: {learning_rate: 0.01}}
    train: {epochs: 2, batch_size: 128, verbose: 0}
""")

SWEEP = textwrap.dedent("""\
    name: heads
    run: run.yaml
    trials: 6
    objectives: {val_class_loss: min, val_parity_accuracy: auto}
    space:
      loss.outputs.class.weight: {log_uniform: [0.05, 5]}
      loss.outputs.parity.weight: {log_uniform: [0.05, 5]}
""")


def write(tmp_path: Path, sweep: str = SWEEP, run: str = RUN, **changes) -> Path:
    (tmp_path / "run.yaml").write_text(run)
    data = yaml.safe_load(sweep)
    data.setdefault("output_dir", str(tmp_path / "sweeps"))
    data.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the sweep file -------------------------------------------------------------------------------

def problems_of(path: Path) -> list[tuple[str, int, str]]:
    with pytest.raises(SpecError) as err:
        load_sweep(path)
    return [(".".join(map(str, p)), line, msg) for p, line, msg in err.value.problems]


def test_sweep_errors_name_the_line_the_path_and_what_is_valid(tmp_path):
    path = tmp_path / "sweep.yaml"
    (tmp_path / "run.yaml").write_text(RUN)
    path.write_text(textwrap.dedent("""\
        name: heads
        run: run.yaml
        objectives: {val_clas_loss: min, val_parity_accuracy: auto}
        space:
          loss.outputs.clas.weight: {log_uniform: [0.05, 5]}
          optimzer.params.learning_rate: {uniform: [0.1, 1]}
          loss.terms.class_agian.weight: {uniform: [0.1, 1]}
          name: {choice: [a, b]}
        pruning: {startup_trials: 3}
    """))
    found = problems_of(path)
    by_path = {p: (line, msg) for p, line, msg in found}
    assert by_path["space.loss.outputs.clas.weight"][0] == 5
    assert "did you mean 'class'? valid: class, parity" in by_path["space.loss.outputs.clas.weight"][1]
    assert by_path["space.optimzer.params.learning_rate"][0] == 6
    assert "did you mean 'optimizer'?" in by_path["space.optimzer.params.learning_rate"][1]
    assert by_path["space.loss.terms.class_agian.weight"][0] == 7
    assert "did you mean 'class_again'?" in by_path["space.loss.terms.class_agian.weight"][1]
    assert "set by the sweep" in by_path["space.name"][1] and by_path["space.name"][0] == 8
    assert by_path["pruning"][0] == 9 and "one objective" in by_path["pruning"][1]
    assert len(found) == 5   # the objective is checked once the space is right


def test_sweep_schema_errors_and_objectives_the_run_does_not_log(tmp_path):
    bad = write(tmp_path, trials=0, sampler={"nam": "tpe"},
                space={"loss.outputs.class.weight": {"loguniform": [0.05, 5]},
                       "loss.outputs.parity.weight": {"log_uniform": [5, 0.05]}})
    msgs = {p: m for p, _, m in problems_of(bad)}
    assert msgs["trials"] == "must be ≥ 1, got 0"
    assert msgs["sampler.nam"].startswith("unknown key 'nam'; did you mean 'name'?")
    assert msgs["space.loss.outputs.class.weight"].startswith("did you mean 'log_uniform'")
    assert "low < high" in msgs["space.loss.outputs.parity.weight"]

    unlogged = write(tmp_path, objectives={"val_class_los": "min", "val_parity_accuracy": "auto"})
    [(p, line, msg)] = problems_of(unlogged)
    assert (p, line) == ("objectives.val_class_los", 5)
    assert "did you mean 'val_class_loss'" in msg and "val_parity_accuracy" in msg

    missing = tmp_path / "missing.yaml"
    missing.write_text(SWEEP.replace("run: run.yaml", "run: nowhere.yaml"))
    assert problems_of(missing)[0][:2] == ("run", 2)


def test_a_grid_optuna_would_move_or_collapse_is_refused_and_paths_name_the_kind_once(tmp_path):
    """Optuna moves a range that is not a whole number of steps down to the grid, with only a warning
    ({uniform: [0.1, 1], step: 2} draws 0.1 every time), and refuses a log int from 0 mid-sweep."""
    space = {"loss.outputs.class.weight": {"uniform": [0.1, 1], "step": 2},
             "loss.outputs.parity.weight": {"uniform": [0.1, 1], "step": 0.4},
             "optimizer.params.learning_rate": {"log_uniform": [0, 1]},
             "train.batch_size": {"int": [0, 10], "step": 3},
             "train.epochs": {"int": [0, 4], "log": True}}
    msgs = {p: m for p, _, m in problems_of(write(tmp_path, space=space))}
    assert "every draw would be 0.1; give a step of at most 0.9" in msgs["space.loss.outputs.class.weight"]
    assert "give high 0.9 (low + 2·step)" in msgs["space.loss.outputs.parity.weight"]
    assert msgs["space.optimizer.params.learning_rate.log_uniform.0"] == "must be > 0.0, got 0"
    assert "give high 9 (low + 3·step)" in msgs["space.train.batch_size"]
    assert "needs low ≥ 1" in msgs["space.train.epochs"]
    grid = {"loss.outputs.class.weight": {"uniform": [0.1, 1], "step": 0.3},
            "loss.outputs.parity.weight": {"int": [1, 9], "step": 4}}
    assert load_sweep(write(tmp_path, space=grid), check_run=False).config.space


def test_a_bad_value_in_the_space_names_the_run_config_and_the_override(tmp_path):
    path = write(tmp_path, space={"loss.outputs.class.weight": {"uniform": [-1, 1]}})
    [(p, _, msg)] = problems_of(path)
    assert p == "space" and "run.yaml" in msg and "--set loss.outputs.class.weight=-1.0" in msg


def test_validate_recognises_a_sweep_file(tmp_path, capsys):
    path = write(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK (sweep 'heads': 6 trials over 2 config paths" in out and "outputs class, parity" in out
    (tmp_path / "typo.yaml").write_text(path.read_text().replace("val_parity_accuracy", "val_parity_acc"))
    assert main(["validate", str(tmp_path / "typo.yaml")]) == 1
    assert "typo.yaml:6: objectives.val_parity_acc" in capsys.readouterr().err


def test_validate_checks_the_storage_and_creates_nothing(tmp_path, capsys):
    bad = {
        "journal": {"journal": "shraed/heads.journal"},
        "sqlite": f"sqlite:///{tmp_path}/no/such/folder/study.db",
        "url": "notaurl",
        "dialect": "postgresq://user@host/db",
    }
    for kind, storage in bad.items():
        path = write(tmp_path, storage=storage)
        assert main(["validate", str(path)]) == 1, kind
        err = capsys.readouterr().err
        assert "storage" in err and "Traceback" not in err, (kind, err)
        assert {"journal": "journal's folder", "sqlite": "does not exist",
                "url": "not a SQLAlchemy URL",
                "dialect": "SQLAlchemy has no database 'postgresq'; did you mean 'postgresql'?"}[kind] in err, (kind, err)
    assert not (tmp_path / "shraed").exists() and not (tmp_path / "no").exists()
    assert not (tmp_path / "sweeps").exists()
    (tmp_path / "shared").mkdir()
    assert main(["validate", str(write(tmp_path, storage={"journal": "shared/heads.journal"}))]) == 0
    assert list((tmp_path / "shared").iterdir()) == []



def test_the_summary_names_the_run_config_as_sweep_show_does(tmp_path):
    """summary.md said `configs/../run.yaml` when written by the sweep, the absolute path after `sweep show`."""
    (tmp_path / "configs").mkdir()
    path = write(tmp_path / "configs", run="")
    path.write_text(path.read_text().replace("run: run.yaml", "run: ../run.yaml"))
    write(tmp_path)                                              # run.yaml beside configs/
    text = sweep_report.summary_text(load_sweep(path, check_run=False), [])
    assert f"Run config: `{tmp_path / 'run.yaml'}`." in text


def test_a_journal_set_over_a_storage_url_says_both_were_given(tmp_path):
    path = write(tmp_path, storage="sqlite:///study.db")
    with pytest.raises(SpecError, match=r"storage: .*give a SQLAlchemy URL or a journal file, not both: the URL "
                                        r"'sqlite:///study\.db' and the journal 'j\.journal'"):
        load_sweep(path, ["storage.journal=j.journal"], check_run=False)
    assert load_sweep(path, ["storage={journal: j.journal}"], check_run=False).config.storage.journal == "j.journal"


def test_a_relative_sqlite_file_is_beside_the_sweep_file_whatever_the_cwd(tmp_path, monkeypatch, capsys):
    """As a journal file: `sqlite:///db/heads.db` is the sweep file's db/, so that a --resume from another
    folder opens the same study (it was the cwd's: a fresh, empty study there)."""
    from multiloss.run.sweep import storage_of

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "db").mkdir(parents=True)
    (elsewhere / "db").mkdir(parents=True)
    path = write(project, storage="sqlite:///db/heads.db")
    monkeypatch.chdir(elsewhere)
    sweep = load_sweep(path)
    storage_of(sweep, sweep.folder)
    assert (project / "db" / "heads.db").is_file() and not (elsewhere / "db" / "heads.db").exists()
    assert yaml.safe_load(sweep.to_yaml())["storage"] == f"sqlite:///{project / 'db' / 'heads.db'}"
    (project / "db" / "heads.db").unlink()
    (project / "db").rmdir()
    assert main(["validate", str(path)]) == 1
    assert f"the SQLite file's folder {project / 'db'} does not exist" in capsys.readouterr().err


def test_enqueued_points_name_each_bad_key_and_value(tmp_path):
    """A typo, a simplex (it raised AttributeError), a value out of its range or not among the choices
    (an option, or its name for a choice of mappings): each at its enqueue path, in one pass."""
    space = {"loss.outputs.parity.weight": {"log_uniform": [0.05, 5]},
             "optimizer.name": {"choice": ["adam", "sgd"]},
             "heads": {"simplex": ["loss.outputs.class.weight", "loss.terms.class_again.weight"], "total": 2},
             "loss.weighting": {"choice": [{"strategy": "dwa"}, {"strategy": "rlw"}]}}
    path = write(tmp_path, space=space, enqueue=[
        {"loss.outputs.parity.wieght": 0.5, "heads": 1.0, "loss.weighting": "pcgrad"},
        {"loss.weighting": {"strategy": "dwa"}, "loss.outputs.parity.weight": 9.0, "optimizer.name": "rmsprop"}])
    got = {p: m for p, _, m in problems_of(path)}
    assert got["enqueue.0.loss.outputs.parity.wieght"].startswith(
        "unknown space key 'loss.outputs.parity.wieght'; did you mean 'loss.outputs.parity.weight'?")
    assert "space key 'heads' is a simplex, which cannot be enqueued" in got["enqueue.0.heads"]
    assert got["enqueue.0.loss.weighting"] == ("'pcgrad' is not one of the choices [{'strategy': 'dwa'}, "
                                               "{'strategy': 'rlw'}] or their names ['dwa', 'rlw']")
    assert got["enqueue.1.loss.outputs.parity.weight"] == "give a number in [0.05, 5.0], got 9.0"
    assert got["enqueue.1.optimizer.name"] == "'rmsprop' is not one of the choices ['adam', 'sgd']"
    assert len(got) == 5


def test_a_choice_of_mappings_is_enqueued_by_option_or_name(tmp_path):
    """`loss.weighting: {strategy: rlw}` (or `rlw`) in an enqueue point is tried first, the keys inside the
    other option sampled when it is drawn; it was refused ("cannot be enqueued")."""
    from multiloss.run.sweep import open_study

    space = {"loss.weighting": {"choice": [{"strategy": "dwa", "params": {"temperature": {"uniform": [1, 4]}}},
                                           {"strategy": "rlw"}]},
             "loss.outputs.parity.weight": {"log_uniform": [0.05, 5]}}
    sweep = load_sweep(write(tmp_path, space=space, enqueue=[
        {"loss.weighting": {"strategy": "rlw"}, "loss.outputs.parity.weight": 0.5}, {"loss.weighting": "dwa"}]),
        check_run=False)
    sweep.folder.mkdir(parents=True)
    study, _ = open_study(sweep, sweep.folder, resume=False, overwrite=False)
    first, second = study.ask(), study.ask()
    assert sample(first, sweep.config.space) == {"loss.weighting": {"strategy": "rlw"},
                                                 "loss.outputs.parity.weight": 0.5}
    drawn = sample(second, sweep.config.space)
    assert drawn["loss.weighting"]["strategy"] == "dwa" and 1 <= drawn["loss.weighting"]["params"]["temperature"] <= 4


def test_a_misspelt_objective_is_named_as_such_whatever_its_mode(tmp_path):
    """`val_class_los: auto` was told its mode cannot be resolved; it is a key the run does not log."""
    path = write(tmp_path, objectives={"val_class_los": "auto", "val_parity_accuracy": "max"})
    (where, _, msg), = problems_of(path)
    assert where == "objectives.val_class_los" and msg.startswith(
        "'val_class_los' is not a key the run logs; did you mean 'val_class_loss'")
    path = write(tmp_path, objectives={"val_class_loss": "min", "class_weight": "auto"})
    (where, _, msg), = problems_of(path)     # logged, and neither a loss nor a score: the mode is asked for
    assert where == "objectives.class_weight" and "mode auto cannot tell whether 'class_weight'" in msg


def test_a_strategy_shorthand_takes_set_and_a_sweep_over_its_params(tmp_path):
    """`weighting: dwa` is `{strategy: dwa}`: --set and a sweep space reach keys inside it (both were
    refused: "is str 'dwa', not a mapping or a list")."""
    run = RUN.replace("  terms:\n", "  weighting: dwa\n  terms:\n")
    (tmp_path / "run.yaml").write_text(run)
    cfg = load_run_config(tmp_path / "run.yaml", ["loss.weighting.params.temperature=4"])
    assert cfg.spec.weighting.strategy == "dwa" and cfg.spec.weighting.params["temperature"] == 4
    with pytest.raises(SpecError, match=r"loss\.weighting\.params\.temprature: strategy 'dwa' has no parameter "
                                        r"'temprature'; valid: temperature"):
        load_run_config(tmp_path / "run.yaml", ["loss.weighting.params.temprature=4"])
    sweep = load_sweep(write(tmp_path, run=run, space={"loss.weighting.params.temperature": {"uniform": [0.5, 4]}}))
    trial = load_run_config(sweep.run_path, sweep.trial_overrides(3, tmp_path, {"loss.weighting.params.temperature": 2.5}))
    assert trial.spec.weighting.strategy == "dwa" and trial.spec.weighting.params["temperature"] == 2.5


def test_shorthands_belong_to_their_kind_of_config(tmp_path):
    """A sweep file's `sampler: tpe` takes --set keys inside it; a run config's task `sampler:` is another
    key, with no `name` mapping (it was expanded to {'name': 'proportional', ...} and refused as such)."""
    sweep = load_sweep(write(tmp_path, sampler="tpe"), ["sampler.params.seed=5"])
    assert sweep.config.sampler.name == "tpe" and sweep.config.sampler.params == {"seed": 5}
    run = RUN.replace("data: {source: digits}", "tasks: {class: {data: {source: digits}}}\nsampler: proportional")
    (tmp_path / "run.yaml").write_text(run)
    with pytest.raises(SpecError) as exc:
        load_run_config(tmp_path / "run.yaml", ["sampler.weighted.class=2"])
    assert "sampler: is str 'proportional', not a mapping" in str(exc.value) and "name" not in str(exc.value)


# --- the space and the trial's run config -----------------------------------------------------------

class Draws:
    """A stand-in trial that returns given values, by parameter name."""

    def __init__(self, values: dict):
        self.values, self.asked = values, []

    def suggest_float(self, name, low, high, **kw):
        self.asked.append(name)
        return self.values[name]

    suggest_int = suggest_float

    def suggest_categorical(self, name, choices):
        self.asked.append(name)
        return self.values[name]


def test_set_reaches_a_space_entry_by_its_dotted_key(tmp_path):
    """Space keys are dotted config paths, so `--set space.loss.outputs.parity.weight={...}` was read as
    nested keys and refused ("space.loss: unknown search spec 'outputs'") whatever the value."""
    path = write(tmp_path, enqueue=[{"loss.outputs.parity.weight": 1.0}])
    sweep = load_sweep(path, ["space.loss.outputs.parity.weight={uniform: [0.5, 2]}",     # an entry it has
                              "space.optimizer.params.learning_rate={log_uniform: [1e-4, 1e-2]}",  # a new one
                              "enqueue.0.loss.outputs.parity.weight=1.5"])
    space = sweep.config.space
    assert (space["loss.outputs.parity.weight"].uniform, space["optimizer.params.learning_rate"].log_uniform) == \
        ((0.5, 2.0), (1e-4, 1e-2))
    assert set(space) == {"loss.outputs.class.weight", "loss.outputs.parity.weight", "optimizer.params.learning_rate"}
    assert sweep.config.enqueue == [{"loss.outputs.parity.weight": 1.5}]
    space = {"seed": {"choice": [1, 2]}, "loss.outputs.class.weight": {"log_uniform": [0.05, 5]}}
    seeded = load_sweep(write(tmp_path, space=space), ["space.seed.choice=[3, 4]"], check_run=False)
    assert seeded.config.space["seed"].choice == [3, 4] and set(seeded.config.space) == set(space)   # a plain key
    with pytest.raises(SpecError, match=r"space\.loss\.outputs\.parity\.weight: uniform: give \[low, high\] "
                                        r"with low < high, got \[2\.0, 0\.5\] \(from --set"):
        load_sweep(path, ["space.loss.outputs.parity.weight={uniform: [2, 0.5]}"])


def test_overrides_set_list_items_by_name_and_the_run_config_gets_every_value(tmp_path):
    path = write(tmp_path, space={
        "loss.terms.class_again.weight": {"uniform": [0, 1]},
        "optimizer.params.learning_rate": {"log_uniform": [1e-4, 1e-1]},
        "loss.weighting": {"choice": [{"strategy": "static"},
                                      {"strategy": "uncertainty", "params": {"init": {"uniform": [0, 1]}}}]},
        "heads": {"simplex": ["loss.outputs.class.weight", "loss.outputs.parity.weight"], "total": 2},
    })
    sweep = load_sweep(path)
    trial = Draws({"loss.terms.class_again.weight": 0.25, "optimizer.params.learning_rate": 0.003,
                   "loss.weighting": "uncertainty", "loss.weighting[uncertainty].params.init": 0.4,
                   "heads.class": 0.5, "heads.parity": 1 - math.exp(-3.0)})
    values = sample(trial, sweep.config.space)
    # the simplex: exponential draws -log(1-u) = (log 2, 3), normalised to sum 2
    e = [math.log(2), 3.0]
    assert values["loss.outputs.class.weight"] == pytest.approx(2 * e[0] / sum(e))
    assert values["loss.outputs.parity.weight"] == pytest.approx(2 * e[1] / sum(e))
    assert values["loss.weighting"] == {"strategy": "uncertainty", "params": {"init": 0.4}}
    overrides = sweep.trial_overrides(7, tmp_path / "sweeps" / "heads", values)
    assert overrides[0] == "name=trial-0007"
    assert any(o.startswith("loss.terms=[") for o in overrides)   # --set cannot index a list: the list
    cfg = load_run_config(sweep.run_path, overrides)
    terms = {t.name: t.weight for t in cfg.spec.resolve()}
    assert terms["class_again"] == 0.25 and terms["class"] == pytest.approx(values["loss.outputs.class.weight"])
    assert terms["parity"] == pytest.approx(values["loss.outputs.parity.weight"])
    assert cfg.optimizer.params["learning_rate"] == 0.003
    assert cfg.spec.weighting.strategy == "uncertainty" and cfg.spec.weighting.params == {"init": 0.4}
    assert cfg.run_dir == tmp_path / "sweeps" / "heads" / "trial-0007"


def test_a_loss_spec_file_is_overridden_whole(tmp_path):
    spec = yaml.safe_load(RUN)["loss"]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    path = write(tmp_path, run=RUN.split("loss:")[0] + "loss: spec.yaml\n" + "optimizer:" + RUN.split("optimizer:")[1])
    sweep = load_sweep(path)
    [text] = sweep.overrides({"loss.outputs.parity.weight": 3.0})
    assert text.startswith("loss={")
    cfg = load_run_config(sweep.run_path, [text])
    assert {t.name: t.weight for t in cfg.spec.resolve()}["parity"] == 3.0


def test_a_key_inside_a_weighting_shorthand_of_a_loss_spec_file_keeps_the_strategy(tmp_path):
    spec = {**yaml.safe_load(RUN)["loss"], "weighting": "dwa"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    path = write(tmp_path, run=RUN.split("loss:")[0] + "loss: spec.yaml\n" + "optimizer:" + RUN.split("optimizer:")[1])
    sweep = load_sweep(path)
    [text] = sweep.overrides({"loss.weighting.params.temperature": 4.0})
    cfg = load_run_config(sweep.run_path, [text])
    assert cfg.spec.weighting.strategy == "dwa" and cfg.spec.weighting.params == {"temperature": 4.0}


def test_resume_into_a_storage_without_the_study_of_the_folders_trials_is_refused(tmp_path):
    """A sweep started from another folder with a relative `sqlite:///study.db` (relative to the cwd before
    2aaaa5f, to the sweep file since): --resume opened an empty study and began again at trial 0."""
    from multiloss.run.sweep import open_study

    path = write(tmp_path, storage="sqlite:///study.db")
    sweep = load_sweep(path, check_run=False)
    (sweep.folder / "trial-0000").mkdir(parents=True)
    with pytest.raises(RunError, match=r"holds no study named 'heads', but .*heads holds its trials.*"
                                       r"relative to the sweep file"):
        open_study(sweep, sweep.folder, resume=True, overwrite=False)
    open_study(sweep, sweep.folder, resume=False, overwrite=True)      # a fresh start stays possible
    study, _ = open_study(sweep, sweep.folder, resume=True, overwrite=False)
    assert study.study_name == "heads"


@pytest.mark.parametrize("draws", [[0.0, 0.0, 0.0], [0.1, 0.5, 0.9], [1.0, 0.2, 0.3]])
def test_simplex_weights_are_non_negative_and_sum_to_the_total(draws):
    w = simplex_weights(draws, 3.0)
    assert all(x >= 0 for x in w) and sum(w) == pytest.approx(3.0)


def test_corners_reach_every_option():
    from multiloss.run.sweep_space import Choice

    space = {"a": Choice(choice=[1, 2, 3]), "b": Choice(choice=["x", "y"])}
    assert [sample(FixedPick(i), space) for i in range(3)] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"},
                                                                {"a": 3, "b": "y"}]


# --- the front and the reports on hand-made tables -------------------------------------------------

MODES = {"depth": "min", "seg": "max"}


def hand_front(rows, modes):
    """Independent: a row is on the front iff no other row is at least as good everywhere and better once."""
    def better(a, b, k):
        return a[k] < b[k] if modes[k] == "min" else a[k] > b[k]

    def worse(a, b, k):
        return better(b, a, k)

    done = [r for r in rows if r.state == "complete"]
    return sorted(r.number for r in done
                  if not any(all(not worse(o.values, r.values, k) for k in modes)
                             and any(better(o.values, r.values, k) for k in modes) for o in done if o is not r))


def table() -> list[TrialRow]:
    pts = [(0.50, 0.80), (0.40, 0.70), (0.60, 0.90), (0.55, 0.75), (0.40, 0.70), (0.45, 0.85), (0.70, 0.60)]
    rows = [TrialRow(i, "complete", {"depth": d, "seg": s}, {"loss.outputs.depth.weight": 0.1 * (i + 1)})
            for i, (d, s) in enumerate(pts)]
    rows.append(TrialRow(7, "failed", None, {"loss.outputs.depth.weight": 9.0}, error="non-finite values at epoch 2\n"
                                                                                       "more text"))
    rows.append(TrialRow(8, "pruned", None, {}))
    return rows


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_a_resumed_sweep_draws_new_points_and_each_session_is_reproducible(tmp_path, sampler):
    """Each process that opens the study (the first, then each --resume) samples with its own seed: a
    resumed sweep must not replay the first session's random phase (TPE's startup trials, NSGA-II's
    first generation), which made trials repeat points already tried."""
    import optuna

    from multiloss.run.sweep import open_folder, open_study, study_lock

    w = optuna.distributions.FloatDistribution(0.05, 5.0, log=True)

    def session(root, resume):
        root.mkdir(exist_ok=True)
        sweep = load_sweep(write(root, objectives={"val_class_loss": "min"} if sampler == "tpe" else
                                 {"val_class_loss": "min", "val_parity_accuracy": "max"},
                                 sampler={"name": sampler}))
        with open_folder(sweep, resume=resume, overwrite=False) as run_dir, study_lock(run_dir.path):
            study, _ = open_study(sweep, run_dir.path, resume=resume, overwrite=False)
        draws = []
        for _ in range(2):
            trial = study.ask({"w": w})
            draws.append(trial.params["w"])
            study.tell(trial, [1.0] * len(sweep.objectives))
        return draws

    first, second, third = (session(tmp_path / "a", resume=r) for r in (False, True, True))
    assert len(set(first + second + third)) == 6                   # no point drawn twice
    again = tmp_path / "b"                                          # the same sweep from scratch: the same draws
    assert [session(again, resume=r) for r in (False, True)] == [first, second]


def test_a_sweep_refused_before_its_study_leaves_nothing_that_blocks_the_fixed_rerun(tmp_path, capsys):
    from multiloss.run.sweep import open_folder

    bad = write(tmp_path, storage={"url": "foo://bar/baz"})
    assert main(["sweep", str(bad)]) == 1
    assert "storage: Optuna cannot open the storage" in capsys.readouterr().err
    folder = tmp_path / "sweeps" / "heads"
    assert sorted(p.name for p in folder.iterdir()) == ["run.lock", "study.lock", "sweep.yaml"]
    fixed = load_sweep(write(tmp_path))                        # the storage line removed: not refused
    with open_folder(fixed, resume=False, overwrite=False) as run_dir:
        assert run_dir.path == folder
    (folder / "study.db").write_bytes(b"")                     # a study is work: a second sweep is refused
    with pytest.raises(RunError, match=r"already holds a run"):
        open_folder(fixed, resume=False, overwrite=False)


def test_overwrite_is_refused_while_another_process_works_in_the_sweep_folder(tmp_path, capsys):
    """A second `sweep --overwrite` deleted the study and the folders under a running worker (which then
    died on Optuna's "Record does not exist"); workers that join with --resume still share the folder."""
    from multiloss.run.sweep import open_folder

    path = write(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from multiloss.run.sweep import open_folder
        from multiloss.run.sweep_config import load_sweep
        folder = open_folder(load_sweep({str(path)!r}), resume=False, overwrite=False)
        (folder.path / "study.db").write_bytes(b"")      # its work
        print("held", flush=True)
        time.sleep(300)""")], stdout=subprocess.PIPE, text=True)
    folder = tmp_path / "sweeps" / "heads"
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in folder.iterdir())
        assert main(["sweep", str(path), "--overwrite"]) == 1
        assert "is in use by another multiloss process" in capsys.readouterr().err
        assert sorted(p.name for p in folder.iterdir()) == before and (folder / "study.db").exists()
        with open_folder(load_sweep(path), resume=True, overwrite=False) as joined:   # a worker joining
            assert joined.path == folder
    finally:
        holder.kill()
        holder.wait(30)
    with open_folder(load_sweep(path), resume=False, overwrite=True) as replaced:       # its process is gone
        assert not (replaced.path / "study.db").exists()


def test_an_enqueued_point_waiting_in_the_study_is_not_counted_as_a_trial_yet(tmp_path):
    """`trials: 1` with one enqueued point: the waiting point filled the count, so no trial ran and the
    sweep ended at once with exit 0 ("1 of 1 trials: 1 waiting")."""
    from multiloss.run.sweep import open_folder, study_lock

    sweep = load_sweep(write(tmp_path, trials=1, enqueue=[{"loss.outputs.class.weight": 2.0,
                                                           "loss.outputs.parity.weight": 0.5}]))
    with open_folder(sweep, resume=False, overwrite=False) as run_dir:
        with study_lock(run_dir.path):
            study, _ = open_study(sweep, run_dir.path, resume=False, overwrite=False)
        scheduler = Scheduler(sweep, study, run_dir.path, 1, lambda result: None)
        trial = scheduler.claim()
        assert trial is not None and trial.number == 0
        assert sample(trial, sweep.config.space) == {"loss.outputs.class.weight": 2.0,
                                                     "loss.outputs.parity.weight": 0.5}
        assert scheduler.claim() is None                         # the one trial is taken


def test_sampler_params_optuna_refuses_are_refused_by_validate_and_before_the_folder(tmp_path, capsys):
    """`sampler.params.popsize` passed validate; the sweep then refused it after making its folder and
    its study."""
    path = write(tmp_path, sampler={"name": "nsga2", "params": {"popsize": 4}})
    for command in (["validate", str(path)], ["sweep", str(path)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "sampler.params: the nsga2 sampler refuses these params:" in err and "popsize" in err, err
    assert not (tmp_path / "sweeps").exists()


def test_pareto_front_of_a_hand_made_table():
    rows = table()
    assert [r.number for r in sweep_report.pareto_front(rows, MODES)] == hand_front(rows, MODES) == [1, 2, 4, 5]
    # every trial left out is dominated by one on the front
    front = sweep_report.pareto_front(rows, MODES)
    for r in rows:
        if r.state == "complete" and r not in front:
            assert any(sweep_report.dominates(f.values, r.values, MODES) for f in front)


class FakeSweep:
    """What the reports read of a sweep."""

    name = "hand"
    objectives = ["depth", "seg"]
    modes = MODES
    run_path = Path("run.yaml")

    class config:
        trials = 10
        baselines = {"depth": 0.5, "seg": 0.8}

    @staticmethod
    def paths():
        return {"loss.outputs.depth.weight": ("space", "x")}


def test_summary_and_csv_bold_the_best_and_give_delta_m(tmp_path):
    rows = sweep_report.mark(table(), FakeSweep)
    text = sweep_report.summary_text(FakeSweep, rows)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `trial")}
    assert set(lines) == {"`trial-0001`", "`trial-0002`", "`trial-0004`", "`trial-0005`", "`trial-0007`"}
    assert "**0.4**" in lines["`trial-0001`"] and "**0.4**" in lines["`trial-0004`"]   # a tie: both bold
    assert "**0.9**" in lines["`trial-0002`"] and "**" not in lines["`trial-0005`"]
    # Δm by hand: 100/2 · ((0.45 − 0.5)/0.5 − (0.85 − 0.8)/0.8)
    assert f"{100 / 2 * ((0.45 - 0.5) / 0.5 - (0.85 - 0.8) / 0.8):.4g}" in lines["`trial-0005`"]
    assert "non-finite values at epoch 2 |" in lines["`trial-0007`"]   # the failed table: first line only
    assert "9 of 10 trials: 7 complete, 1 failed, 1 pruned" in text
    got = list(csv.DictReader(sweep_report.trials_csv(FakeSweep, rows).splitlines()))
    assert [int(r["front"]) for r in got] == [int(i in (1, 2, 4, 5)) for i in range(9)]
    assert float(got[5]["depth"]) == 0.45 and got[7]["state"] == "failed" and got[7]["seg"] == ""
    png = sweep_report.plot_pareto(FakeSweep, rows, tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pick_prefers_the_front_trial_of_least_weighted_scaled_objectives():
    rows = sweep_report.mark(table(), FakeSweep)
    front = [r for r in rows if r.front]

    def by_hand(wd, ws):
        d = [r.values["depth"] for r in front]
        s = [r.values["seg"] for r in front]
        score = {r.number: wd * (r.values["depth"] - min(d)) / (max(d) - min(d))
                 + ws * (max(s) - r.values["seg"]) / (max(s) - min(s)) for r in front}
        return min(sorted(score), key=lambda n: score[n])

    for text, (wd, ws) in (("depth=1,seg=0", (1, 0)), ("dep=0,seg=1", (0, 1)), ("depth=0.7,seg=0.3", (0.7, 0.3)),
                           (None, (1, 1))):
        weights = sweep_report.parse_pick(text, FakeSweep.objectives)
        assert sweep_report.pick_trial(rows, FakeSweep, weights).number == by_hand(wd, ws), text
    for bad in ("x=1", "depth", "depth=-1,seg=0", "e=1"):     # 'e' is in both names
        with pytest.raises(RunError, match="--pick"):
            sweep_report.parse_pick(bad, FakeSweep.objectives)
    # Heads named a and c: 'a' is a word of val_a_accuracy only (it is also a letter of val_c_loss's "val").
    assert sweep_report.parse_pick("a=0.7,c=0.3", ["val_a_accuracy", "val_c_loss"]) == {
        "val_a_accuracy": 0.7, "val_c_loss": 0.3}
    assert sweep_report.parse_pick("class_again=1", ["val_class_loss", "val_class_again_loss"]) == {
        "val_class_again_loss": 1.0}


# --- pruning and failures as the scheduler sees them -------------------------------------------------

class FakeProcess:
    terminated = False

    def terminate(self):
        self.terminated = True


def test_median_pruning_on_the_per_epoch_values_of_history_json(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from multiloss.run.sweep import pruner_of
    from multiloss.run.sweep_config import PruningConfig

    sweep = type("S", (), {"objectives": ["val_loss"]})()
    sweep.config = type("C", (), {"pruning": PruningConfig(startup_trials=2, warmup_epochs=1)})()
    study = optuna.create_study(pruner=pruner_of(sweep))
    for curve in ([1.0, 0.6, 0.5], [1.2, 0.8, 0.7]):    # two complete trials: median at epoch 2 is 0.7
        t = study.ask()
        for epoch, v in enumerate(curve, 1):
            t.report(v, epoch)
        study.tell(t, curve[-1])
    scheduler = Scheduler(sweep, study, tmp_path, 1, print)
    for epoch2, pruned in ((0.75, True), (0.65, False)):
        folder = tmp_path / f"run-{epoch2}"
        folder.mkdir()
        (folder / "history.json").write_text(json.dumps([{"epoch": 1, "val_loss": 5.0},
                                                         {"epoch": 2, "val_loss": epoch2}]))
        run = Running(study.ask(), {}, FakeProcess(), None, folder)
        scheduler.report(run)
        # epoch 1 is warm-up (never pruned); at epoch 2 the trial is pruned iff worse than the median 0.7
        assert run.reported == 2 and run.pruned is pruned and run.process.terminated is pruned
        assert study.get_trials()[run.trial.number].intermediate_values == {1: 5.0, 2: epoch2}


def test_why_a_trial_failed(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("noise\nerror: 2 problems:\n  a: b\n  c: d\n")
    assert error_text(log, 1) == "2 problems:\n  a: b\n  c: d"
    log.write_text("Traceback\nValueError: boom\n")
    assert error_text(log, 1) == "exit status 1: ValueError: boom"
    assert "killed by SIGKILL (signal 9)" in error_text(log, -signal.SIGKILL)


# --- real sweeps ------------------------------------------------------------------------------------

def trials_of(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "trials.csv").read_text().splitlines()))


@pytest.mark.slow
def test_two_head_weight_sweep_on_digits_gives_a_pareto_front_an_independent_check_confirms(tmp_path, capsys):
    path = write(tmp_path)
    assert main(["sweep", str(path), "--workers", "2"]) == 0
    folder = tmp_path / "sweeps" / "heads"
    rows = trials_of(folder)
    assert [int(r["trial"]) for r in rows] == list(range(6)) and {r["state"] for r in rows} == {"complete"}
    objectives = ["val_class_loss", "val_parity_accuracy"]
    points = {}
    for r in rows:
        run = folder / f"trial-{int(r['trial']):04d}"
        for artifact in ("config.yaml", "history.json", "history.csv", "metrics.json", "model.keras", "plots"):
            assert (run / artifact).exists(), (run, artifact)
        metrics = json.loads((run / "metrics.json").read_text())["splits"]["val"]
        points[int(r["trial"])] = (metrics["class_loss"], metrics["parity_accuracy"])
        assert [float(r[k]) for k in objectives] == pytest.approx(points[int(r["trial"])], rel=1e-6)
        config = yaml.safe_load((run / "config.yaml").read_text())   # the sampled weights reached the run
        assert config["loss"]["outputs"]["class"]["weight"] == pytest.approx(float(r["loss.outputs.class.weight"]))
        assert config["loss"]["outputs"]["parity"]["weight"] == pytest.approx(
            float(r["loss.outputs.parity.weight"]))
        assert 0.05 <= float(r["loss.outputs.class.weight"]) <= 5
    # the independent check: no front trial dominated by any trial; every other trial dominated by one
    def dominated_by(a, b):     # b dominates a: loss no higher, accuracy no lower, one strictly better
        return b[0] <= a[0] and b[1] >= a[1] and (b[0] < a[0] or b[1] > a[1])

    front = {int(r["trial"]) for r in rows if r["front"] == "1"}
    assert front
    for n, p in points.items():
        others = [q for m, q in points.items() if m != n]
        if n in front:
            assert not any(dominated_by(p, q) for q in others), n
        else:
            assert any(dominated_by(p, points[m]) for m in front), n
    print("front:", {n: points[n] for n in sorted(front)}, file=sys.stderr)
    # two workers: two trials ran at the same time
    import optuna

    study = optuna.load_study(study_name="heads", storage=f"sqlite:///{folder / 'study.db'}")
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    summary = (folder / "summary.md").read_text()
    assert summary.count("| `trial-") == len(front) and "**" in summary
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # a second sweep into the folder is refused; show reprints; best writes a run config
    assert main(["sweep", str(path)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(["sweep", "show", str(folder)]) == 0
    assert "## Pareto front" in capsys.readouterr().out
    assert main(["sweep", "best", str(folder), "--pick", "class=1,parity=0"]) == 0
    best = load_run_config(folder / "best.yaml")
    lowest = min(front, key=lambda n: points[n][0])
    picked = yaml.safe_load((folder / f"trial-{lowest:04d}" / "config.yaml").read_text())
    assert best.name == "heads-best" and best.spec.to_dict()["outputs"] == picked["loss"]["outputs"]


def cli(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "multiloss", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_sweep_processes_on_one_journal_study_run_exactly_the_trials(tmp_path):
    import optuna

    path = write(tmp_path, trials=4, storage={"journal": "study.journal"}, set=["train.epochs=1"])
    first = cli(tmp_path, "sweep", str(path))
    deadline = time.time() + 120
    while not (tmp_path / "study.journal").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = cli(tmp_path, "sweep", str(path), "--resume")
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="heads", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(tmp_path / "study.journal"))))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    owners = {t.user_attrs["coordinator"] for t in trials}
    assert owners == {first.pid, second.pid}          # both processes ran trials, none twice
    folders = sorted(p.name for p in (tmp_path / "sweeps" / "heads").glob("trial-*"))
    assert folders == [f"trial-{i:04d}" for i in range(4)]
    for t in trials:
        metrics = json.loads((tmp_path / "sweeps" / "heads" / folders[t.number] / "metrics.json").read_text())
        assert t.values == pytest.approx([metrics["splits"]["val"]["class_loss"],
                                          metrics["splits"]["val"]["parity_accuracy"]], rel=1e-6)
    print("trials per process:", {pid: sum(t.user_attrs["coordinator"] == pid for t in trials)
                                  for pid in owners}, file=sys.stderr)


NAN_LOSS = textwrap.dedent("""\
    import os
    from keras import ops

    FACTOR = float("nan") if os.environ.get("MULTILOSS_TRIAL") == "1" else 1.0

    def nan_in_trial_1(y_true, y_pred):
        y = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), 2)
        return -ops.sum(y * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1) * FACTOR
""")


def trial_process(folder: Path, name: str) -> int | None:
    """The pid of the process training ``folder/name`` (its command line names the trial)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"name={name}".encode() in cmd and str(folder).encode() in b" ".join(cmd):
                return int(proc.name)
    return None


def test_resume_counts_a_trial_that_finished_after_its_sweep_was_killed_and_fails_the_others(tmp_path):
    """The sweep SIGKILLed while a trial wrote its last files: the trial's run is whole (metrics.json is
    written last), so --resume reads its values instead of throwing the trial away."""
    import socket

    sweep = load_sweep(write(tmp_path, objectives={"val_class_loss": "min", "val_parity_accuracy": "max"}),
                       check_run=False)
    folder = sweep.folder
    folder.mkdir(parents=True)
    study, storage = open_study(sweep, folder, resume=False, overwrite=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                   # a coordinator pid that no longer runs
    splits = {"finished": {"class_loss": 0.75, "parity_accuracy": 0.5},
              "nan": {"class_loss": float("nan"), "parity_accuracy": 0.5}, "cut": None, "unstarted": None}
    for number, (kind, val) in enumerate(splits.items()):
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("coordinator", dead.pid)
        trial.set_user_attr("folder", f"trial-{number:04d}")
        if kind != "unstarted":                   # killed before its process made its folder
            (folder / f"trial-{number:04d}").mkdir()
        if val is not None:
            (folder / f"trial-{number:04d}" / "metrics.json").write_text(json.dumps({"splits": {"val": val}}))
    live = study.ask()                            # a trial of a sweep still running here
    live.set_user_attr("host", socket.gethostname())
    live.set_user_attr("coordinator", os.getpid())
    ended = fail_stale(sweep, study, storage, folder)
    assert sorted(ended) == [0, 1, 2, 3] and "counted complete" in ended[0]
    assert ended[2].endswith("marked failed (its folder is kept)")
    assert ended[3].endswith("marked failed (it had no folder yet)")       # it said "folder kept"
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "RUNNING"]
    assert trials[0].values == [0.75, 0.5] and "metrics.json" in trials[0].user_attrs["recovered"]


def test_an_enqueued_point_whose_trial_a_kill_cut_short_is_queued_again(tmp_path):
    """The sweep SIGKILLed while its enqueued point (the run's own weights) trained: --resume marked it
    failed and never tried the point again, so it was missing beside the front."""
    import socket

    point = {"loss.outputs.class.weight": 1.0, "loss.outputs.parity.weight": 0.5}
    sweep = load_sweep(write(tmp_path, enqueue=[point]), check_run=False)
    folder = sweep.folder
    folder.mkdir(parents=True)
    study, storage = open_study(sweep, folder, resume=False, overwrite=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()                           # the enqueued point, first
    assert sample(trial, sweep.config.space) == point
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("coordinator", dead.pid)
    ended = fail_stale(sweep, study, storage, folder)
    assert ended[0].endswith("marked failed (it had no folder yet); its enqueued point is queued again (it "
                             "counts as a trial: give --set trials=N for more if the sweep has none left)")
    again = study.ask()
    assert again.number == 1 and sample(again, sweep.config.space) == point
    plain = study.ask()                           # then sampled points, as before
    assert sample(plain, sweep.config.space) != point


@pytest.mark.slow
def test_a_nan_trial_and_a_killed_trial_fail_the_sweep_goes_on_and_resume_continues(tmp_path, monkeypatch):
    (tmp_path / "nanloss.py").write_text(NAN_LOSS)
    run = RUN.replace("parity: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}",
                      "parity: {loss: 'nanloss:nan_in_trial_1', metrics: [accuracy]}")
    path = write(tmp_path, run=run, trials=3, objectives={"val_class_loss": "min"},
                 set=["train.epochs=40", "train.batch_size=64"])
    folder = tmp_path / "sweeps" / "heads"
    coordinator = cli(tmp_path, "sweep", str(path))
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None and coordinator.poll() is None:
        if (folder / "trial-0002" / "history.json").exists():
            pid = trial_process(folder, "trial-0002")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
        time.sleep(0.05)
    out = coordinator.communicate(timeout=300)[0]
    assert coordinator.returncode == 0 and killed is not None, out
    rows = {int(r["trial"]): r for r in trials_of(folder)}
    assert rows[0]["state"] == "complete"
    assert rows[1]["state"] == "failed" and rows[1]["error"].startswith("non-finite values (NaN or Inf)")
    assert rows[2]["state"] == "failed" and "killed by SIGKILL" in rows[2]["error"]
    assert (folder / "trial-0002" / "history.json").exists() and not (folder / "trial-0002" / "metrics.json").exists()
    assert "trial-0001 failed" in out and "trial-0002 failed" in out
    # --resume continues the study: one more trial, the three before untouched
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(path), "--resume", "--set", "trials=4", "--set", "set=[train.epochs=2]"]) == 1
    assert main(["sweep", str(path), "--resume", "--set", "trials=4"]) == 0
    after = {int(r["trial"]): r for r in trials_of(folder)}
    assert sorted(after) == [0, 1, 2, 3] and after[3]["state"] in ("complete", "pruned")
    assert {n: after[n] for n in range(3)} == rows
    summary = (folder / "summary.md").read_text()
    assert "## Best trial" in summary and "`trial-0002` | the trial's process was killed by SIGKILL" in summary


@pytest.mark.slow
def test_help_and_the_sweep_file_modules_import_no_tensorflow():
    code = textwrap.dedent("""\
        import os, sys
        os.environ["MULTILOSS_SPEC_ONLY"] = "1"
        import multiloss_cli
        for argv in (["sweep", "--help"], ["baselines", "--help"]):
            try:
                multiloss_cli.main(argv)
            except SystemExit as exc:
                assert exc.code == 0, (argv, exc.code)
        import multiloss.run.sweep_config, multiloss.run.sweep_space, multiloss.run.sweep_report
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert "--workers" in out.stdout and "--pick" in out.stdout


@pytest.mark.slow
def test_baselines_train_one_single_task_run_per_task_and_give_delta_m(tmp_path, capsys):
    from multiloss.run.selection import delta_m

    (tmp_path / "run.yaml").write_text(RUN + f"output_dir: {tmp_path / 'runs'}\n")
    assert main(["baselines", str(tmp_path / "run.yaml")]) == 0
    folder = tmp_path / "runs" / "digits_heads-baselines"
    data = json.loads((folder / "baselines.json").read_text())
    assert sorted(data["runs"]) == ["class", "parity"]        # class_again is on the class head: its task
    for task, own in (("class", {"class", "class_again"}), ("parity", {"parity"})):
        cfg = yaml.safe_load((folder / task / "config.yaml").read_text())["loss"]
        weights = {h: v.get("weight", 1.0) for h, v in cfg["outputs"].items()}
        weights.update({t["name"]: t.get("weight", 1.0) for t in cfg.get("terms", [])})
        assert {k for k, w in weights.items() if w != 0} == own & set(weights), (task, weights)
        val = json.loads((folder / task / "metrics.json").read_text())["splits"]["val"]
        keys = ["class_loss", "class_again_loss", "class_accuracy"] if task == "class" else ["parity_loss",
                                                                                              "parity_accuracy"]
        for key in keys:
            assert data["values"][f"val_{key}"] == val[key]
    assert main(["baselines", str(tmp_path / "run.yaml")]) == 1       # the runs are there: refused
    path = write(tmp_path, baselines=str(folder / "baselines.json"))
    sweep = load_sweep(path)
    row = TrialRow(0, "complete", {"val_class_loss": 1.5, "val_parity_accuracy": 0.9})
    [marked] = sweep_report.mark([row], sweep)
    b = data["values"]
    by_hand = 100 / 2 * ((1.5 - b["val_class_loss"]) / abs(b["val_class_loss"])
                         - (0.9 - b["val_parity_accuracy"]) / abs(b["val_parity_accuracy"]))
    assert marked.delta_m == pytest.approx(by_hand)
    assert by_hand == pytest.approx(delta_m(row.values, b, sweep.modes))


@pytest.mark.parametrize("override", ["trials=true", "seed=false", "pruning.startup_trials=true"])
def test_sweep_integer_fields_refuse_booleans(tmp_path, override):
    key = override.split("=")[0]
    with pytest.raises(SpecError, match=rf"{key.replace('.', chr(92) + '.')}: Input should be a valid integer"):
        load_sweep(write(tmp_path), [override])


@pytest.mark.slow
def test_a_trial_whose_sweep_is_gone_says_why_in_its_log(tmp_path):
    """A trial orphaned by the sweep's SIGKILL ended without a word in logs/trial-N.log."""
    log, ready = tmp_path / "trial.log", tmp_path / "ready"
    trial = ("import os, time; from multiloss.run.sweep_trial import end_with_parent; "
             f"end_with_parent(os.getppid()); open({str(ready)!r}, 'w').close(); time.sleep(120)")
    sweep = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {trial!r}], stderr=open({str(log)!r}, "w"))
        time.sleep(120)""")])
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.1)
        sweep.kill()                                     # a real SIGKILL of the sweep
        sweep.wait(30)
        for _ in range(300):
            if "is gone, so the trial stops" in log.read_text():
                break
            time.sleep(0.1)
        assert f"the sweep process {sweep.pid} that started this trial is gone, so the trial stops" in log.read_text()
    finally:
        sweep.kill()
    gone = subprocess.run([sys.executable, "-m", "multiloss.run.sweep_trial", "1", "--help"], capture_output=True,
                          text=True, timeout=120)                  # its sweep gone before it began
    assert gone.returncode == 143 and "the sweep process 1 that started this trial is gone" in gone.stderr
