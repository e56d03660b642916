"""Incremental configs: validation at load time names the YAML path and line."""

import re
import textwrap

import numpy as np
import pytest

from multiloss.incremental import load_incremental_config
from multiloss.run.optim import build_optimizer
from multiloss.spec.errors import SpecError

CONFIG = textwrap.dedent("""\
    name: inc
    data: {source: digits}
    model:
      builder: cnn
      params: {filters: [8], dense: 16}
    scenario: {initial: 2, increment: 2}
    memory: {budget: 40}
    method:
      name: eeil
      params: {temperature: 2.0}
    train: {epochs: 2}
""")


def _write(tmp_path, text):
    path = tmp_path / "inc.yaml"
    path.write_text(text)
    return path


def _line(text, needle):
    return 1 + next(i for i, t in enumerate(text.splitlines()) if needle in t)


def test_valid_config_defaults_and_overrides(tmp_path):
    cfg = load_incremental_config(_write(tmp_path, CONFIG), ["method.name=wa", "memory.budget=100"])
    assert cfg.scenario.order_seed == 1993 and cfg.memory.selection == "herding"
    assert (cfg.method.name, cfg.memory.budget, cfg.train.epochs) == ("wa", 100, 2)
    assert cfg.run_dir.as_posix() == "runs/inc"


def test_errors_name_path_and_line(tmp_path):
    bad = CONFIG.replace("name: eeil", "name: eil").replace("budget: 40", "budget: 40, selection: kmeans")
    path = _write(tmp_path, bad)
    with pytest.raises(SpecError) as info:
        load_incremental_config(path)
    assert f"inc.yaml:{_line(bad, 'kmeans')}: memory.selection:" in str(info.value)
    assert "'herding' or 'random'" in str(info.value)
    bad = CONFIG.replace("name: eeil", "name: eil")
    with pytest.raises(SpecError, match=rf"inc.yaml:{_line(bad, 'eil')}: method.name: unknown method 'eil'; "
                                        r"did you mean 'eeil'"):
        load_incremental_config(_write(tmp_path, bad))
    bad = CONFIG.replace("temperature: 2.0", "temperature: -1")
    with pytest.raises(SpecError, match=rf":{_line(bad, 'temperature')}: method.params.temperature: must be > 0"):
        load_incremental_config(_write(tmp_path, bad))
    bad = CONFIG.replace("temperature: 2.0", "temprature: 2.0")
    with pytest.raises(SpecError, match=r"method.params.temprature: unknown key 'temprature'; did you mean "
                                        r"'temperature'\? valid: "):
        load_incremental_config(_write(tmp_path, bad))
    bad = CONFIG.replace("filters: [8]", "filter: [8]")
    with pytest.raises(SpecError, match=rf":{_line(bad, 'filter:')}: model.params.filter: unknown parameter "
                                        r"'filter'; did you mean 'filters'\? valid: filters, dense"):
        load_incremental_config(_write(tmp_path, bad))
    bad = CONFIG.replace("builder: cnn", "builder: resnet")
    with pytest.raises(SpecError, match=r"model.builder: unknown backbone 'resnet'"):
        load_incremental_config(_write(tmp_path, bad))
    bad = CONFIG.replace("initial: 2", "initial: 0")
    with pytest.raises(SpecError, match=rf":{_line(bad, 'initial')}: scenario.initial: must be ≥ 1, got 0"):
        load_incremental_config(_write(tmp_path, bad))


def test_memory_regimes_and_replay_methods_need_a_memory(tmp_path):
    path = _write(tmp_path, CONFIG)
    with pytest.raises(SpecError, match=r"memory: give either `budget`.*not both"):
        load_incremental_config(path, ["memory.per_class=5"])
    no_memory = CONFIG.replace("memory: {budget: 40}\n", "")
    with pytest.raises(SpecError, match=r"method.name: method 'eeil' keeps exemplars: add `memory"):
        load_incremental_config(_write(tmp_path, no_memory))
    load_incremental_config(_write(tmp_path, no_memory), ["method.name=lwf", "method.params={}"])


def test_override_errors_name_the_override(tmp_path):
    with pytest.raises(SpecError, match=r"train.epochs: .* \(from --set train.epochs=many\)"):
        load_incremental_config(_write(tmp_path, CONFIG), ["train.epochs=many"])
    with pytest.raises(SpecError, match=r"optimizer.name: unknown optimizer 'adamm'"):
        load_incremental_config(_write(tmp_path, CONFIG), ["optimizer.name=adamm"])
    with pytest.raises(SpecError, match=r"scenario.class_order: class_order repeats class 1 \(at positions 1, 3\)"):
        load_incremental_config(_write(tmp_path, CONFIG), ["scenario.class_order=[0, 1, 2, 1]"])
    with pytest.raises(SpecError, match=r"seeds: seeds repeats seed 3 \(at positions 0, 2\)"):
        load_incremental_config(_write(tmp_path, CONFIG), ["seeds=[3, 4, 3]"])


def test_learning_rate_scale(tmp_path):
    cfg = load_incremental_config(_write(tmp_path, CONFIG), ["optimizer.params={learning_rate: 0.01}"])
    assert float(build_optimizer(cfg.optimizer, 0.1).learning_rate) == pytest.approx(1e-3)
    assert float(build_optimizer(cfg.optimizer).learning_rate) == pytest.approx(1e-2)


def test_optimizer_parameters_are_checked_at_load(tmp_path):
    with pytest.raises(SpecError, match=r"optimizer.params.momentun: unknown parameter 'momentun'; did you mean "
                                        r"'momentum' or 'ema_momentum'\? valid: learning_rate, momentum, nesterov"):
        load_incremental_config(_write(tmp_path, CONFIG), ["optimizer={name: sgd, params: {momentun: 0.9}}"])


def test_cosine_schedule_per_stage(tmp_path):
    cfg = load_incremental_config(_write(tmp_path, CONFIG), ["optimizer={name: sgd, params: {learning_rate: 0.1}}",
                                                              "train.lr_schedule=cosine"])
    opt = build_optimizer(cfg.optimizer, 0.5, cosine_steps=10)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    # cos decay: lr_t = 0.05 · ½(1 + cos(π t / 10))
    for t in (0, 5, 10):
        assert float(schedule(t)) == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * t / 10)), abs=1e-7)
    with pytest.raises(SpecError, match=r"train.lr_schedule: lr_schedule 'cosine' replaces optimizer.schedule"):
        load_incremental_config(_write(tmp_path, CONFIG), [
            "train.lr_schedule=cosine",
            "optimizer.schedule={name: CosineDecay, params: {initial_learning_rate: 0.1, decay_steps: 5}}"])


def test_shipped_incremental_configs_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("incremental_*.yaml"))
    assert {f.name for f in files} >= {"incremental_digits.yaml", "incremental_fashion_mnist.yaml"}
    for f in files:
        cfg = load_incremental_config(f)
        assert (cfg.scenario.order_seed, cfg.scenario.initial, cfg.scenario.increment) == (1993, 2, 2)
        assert cfg.make_method().name == cfg.method.name
    fm = load_incremental_config("configs/incremental_fashion_mnist.yaml")
    assert (fm.data.source, fm.memory.budget, fm.memory.per_class) == ("fashion_mnist", 200, None)


def test_a_quoted_number_is_no_integer(tmp_path):
    """`epochs: "5"` (a YAML string) was read as 5, as schedule steps were in a loss spec."""
    with pytest.raises(SpecError, match=r"train\.epochs: Input should be a valid integer, got '5'"):
        load_incremental_config(_write(tmp_path, CONFIG), ["train.epochs='5'"])


@pytest.mark.parametrize("override", ["train.epochs=true", "train.batch_size=false", "scenario.initial=true",
                                      "memory.budget=true", "seed=false", "seeds=[0,true]",
                                      "scenario.class_order=[1,0,true,2]"])
def test_integer_fields_refuse_booleans(tmp_path, override):
    key = {"seeds": "seeds.1", "scenario.class_order": "scenario.class_order.2"}.get(*[override.split("=")[0]] * 2)
    either = " or a valid string" if key == "scenario.class_order.2" else ""     # a class id or its name
    with pytest.raises(SpecError, match=rf"{re.escape(key)}: Input should be a valid integer{either}, got "
                                        rf"(True|False) \(from --set {re.escape(override)}\)"):
        load_incremental_config(_write(tmp_path, CONFIG), [override])
