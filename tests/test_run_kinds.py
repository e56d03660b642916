"""Run kinds (multiloss.run.kinds): the CLI dispatches on the protocol, kinds recognise their folders,
and the one shared resume check refuses a changed config the same way for every kind."""

import json
import re
from pathlib import Path

import pytest
import yaml

from multiloss.cli.commands import main
from multiloss.run.kinds import RUN_KINDS, RunKind, get_kind, kind_of_run, register_kind
from multiloss.spec.configfile import ConfigFile
from multiloss.spec.errors import RunError, SpecError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"train": ROOT / "multiloss" / "configs" / "siamese_digits.yaml",
           "incremental": ROOT / "configs" / "incremental_digits.yaml"}


class ToyConfig:
    """The least a kind's config needs for the shared parts (folder, resume check, config.yaml, seed)."""

    def __init__(self, data: dict):
        self.data, self.name, self.seed = data, data["name"], data.get("seed", 0)
        self.file = ConfigFile(name="<toy>")

    @property
    def run_dir(self) -> Path:
        return Path(self.data["output_dir"]) / self.name

    def fingerprint(self) -> dict:
        return {"toy": self.data["toy"], "seed": self.seed}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data)

    def error(self, problems):
        return self.file.error(problems)


class ToyKind(RunKind):
    """A run kind that writes a ``toy.json`` beside its config; evaluate and plot leave a trace."""

    name = "toy"
    config_kind = "toy"
    may_change = "nothing"
    resumes_from = "where it stopped"

    def __init__(self):
        self.calls = []

    def load_config(self, source, overrides=None):
        return ToyConfig(source)

    def check(self, config, overrides=None):
        return "toy config"

    def run(self, config, overrides=None, *, resume=False, overwrite=False):
        run = self.folder(config, resume=resume, overwrite=overwrite)
        self.start(run, config)
        run.write_json("toy.json", {"value": config.data["toy"]})
        return {"value": config.data["toy"]}

    def evaluate(self, run_dir):
        self.calls.append(("evaluate", Path(run_dir)))
        return {"value": json.loads((Path(run_dir) / "toy.json").read_text())["value"]}

    def plot(self, run_dir):
        self.calls.append(("plot", Path(run_dir)))
        return []

    def recognises(self, run_dir):
        return (Path(run_dir) / "toy.json").is_file()


@pytest.fixture
def toy():
    kind = register_kind(ToyKind())
    yield kind
    RUN_KINDS.unregister(kind.name)


def test_a_registered_kind_is_dispatched_by_evaluate_and_plot(toy, tmp_path):
    toy.run(ToyConfig({"name": "t", "toy": 3, "output_dir": str(tmp_path)}))
    folder = tmp_path / "t"
    assert (folder / "config.yaml").is_file() and (folder / "toy.json").is_file()
    assert get_kind("toy") is toy and kind_of_run(folder) is toy
    assert get_kind("train").recognises(folder)   # its config.yaml has output_dir: a registered kind is asked first
    assert main(["evaluate", str(folder)]) == 0
    assert main(["plot", str(folder)]) == 0
    assert toy.calls == [("evaluate", folder), ("plot", folder)]


def test_the_shared_folder_handling_protects_a_toy_run_too(toy, tmp_path):
    cfg = ToyConfig({"name": "t", "toy": 3, "output_dir": str(tmp_path)})
    toy.run(cfg)
    with pytest.raises(RunError, match=r"already holds a run. Continue it with `multiloss toy CONFIG --resume`"):
        toy.run(cfg)
    assert toy.resume_hint == "`multiloss toy CONFIG --resume` continues where it stopped"


def _config(kind: str, tmp_path: Path) -> Path:
    data = yaml.safe_load(CONFIGS[kind].read_text())
    data.update(output_dir=str(tmp_path / "runs"), name=kind)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["train", "incremental"])
def test_built_in_kinds_recognise_their_folders(name, tmp_path):
    kind = get_kind(name)
    cfg = kind.load_config(_config(name, tmp_path))
    run = kind.folder(cfg)
    kind.start(run, cfg)                       # config.yaml, as a run writes it first
    assert kind_of_run(run.path) is kind
    others = [k for k in RUN_KINDS.values() if k is not kind]
    assert others and not any(k.recognises(run.path) for k in others)


def test_a_folder_no_kind_wrote_is_refused(tmp_path):
    with pytest.raises(RunError, match="is not a run folder: it has no config.yaml"):
        kind_of_run(tmp_path)
    (tmp_path / "config.yaml").write_text("outputs:\n  a: {loss: mse}\n")   # a loss spec, not a run's config
    with pytest.raises(RunError, match="is not a run folder: its config.yaml is not the config of a run"):
        kind_of_run(tmp_path)


def test_a_run_folders_file_is_answered_with_the_folder(tmp_path):
    kind = get_kind("train")
    cfg = kind.load_config(_config("train", tmp_path))
    run = kind.folder(cfg)
    kind.start(run, cfg)
    with pytest.raises(RunError, match=rf"config.yaml is a file; give the run folder that holds it \({run.path}\)"):
        kind_of_run(run.path / "config.yaml")


@pytest.mark.parametrize("name", ["train", "incremental"])
def test_a_resume_of_a_folder_that_is_not_there_says_so(name, tmp_path):
    kind = get_kind(name)
    cfg = kind.load_config(_config(name, tmp_path))
    said = []
    with kind.folder(cfg, resume=True) as run:          # a misspelt name: nothing to resume
        assert kind.start(run, cfg, said.append) is None
    assert said == [f"{run.path} did not exist (is the run's name right?); --resume starts from scratch"]
    with kind.folder(cfg, resume=True) as run:          # the folder is there now, with no checkpoint
        kind.start(run, cfg, said.append)
    assert said[1] == f"no checkpoint in {run.checkpoints}; --resume starts from scratch"


def _checkpointed(kind: RunKind, path: Path):
    """The folder of ``path``'s run with a checkpoint whose fingerprint is the config's (no training)."""
    cfg = kind.load_config(path)
    run = kind.folder(cfg)
    kind.start(run, cfg)
    run.save_checkpoint(0, {"step-0000.txt": lambda p: Path(p).write_text("x")},
                        {"fingerprint": cfg.fingerprint()})
    return run


@pytest.mark.parametrize("name", ["train", "incremental"])
def test_resuming_with_a_changed_config_is_refused_alike(name, tmp_path, capsys):
    kind = get_kind(name)
    path = _config(name, tmp_path)
    run = _checkpointed(kind, path)
    shape = (rf"seed: differs from the run being resumed in {re.escape(str(run.path))}; resume with the same "
             rf"config \(only {re.escape(kind.may_change)} may change\), or start another run \(--set name=\.\.\.\)")
    with pytest.raises(SpecError, match=shape):
        kind.folder(kind.load_config(path, ["seed=7"]), resume=True)
    assert main([name, str(path), "--resume", "--set", "seed=7"]) == 1     # the command, through the kind
    err = capsys.readouterr().err
    assert re.search(shape, err) and "(from --set seed=7)" in err
    kind.folder(kind.load_config(path), resume=True)        # the same config resumes
    assert run.read_state()["fingerprint"] == kind.load_config(path).fingerprint()   # nothing was touched
