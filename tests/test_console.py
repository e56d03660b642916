"""multiloss.run.console: rounded weights, text tables, one line per epoch."""

import json
import math

import keras
import numpy as np
import pytest

from multiloss.run.console import round_weight, table
from multiloss.run.epochlog import EpochLog


@pytest.mark.parametrize("x,expected", [
    (0.09999995678663254, 0.1),            # an epoch mean of the float32 weight 0.1 (the run)
    (float(np.float32(0.1)), 0.1),         # 0.10000000149011612
    (float(np.float32(2.8)), 2.8),
    (float(np.float32(1 / 3)), 0.333333),
    (1.0, 1.0), (0.0, 0.0), (1e-8, 1e-8), (-0.5, -0.5), (float(np.float32(123456.789)), 123457.0),
])
def test_round_weight_examples(x, expected):
    assert round_weight(x) == expected
    assert json.dumps(round_weight(x)) == json.dumps(expected)


def test_round_weight_is_close_and_short():
    rng = np.random.default_rng(0)
    for x in np.concatenate([rng.random(200), 10 ** rng.uniform(-6, 6, 200)]).astype("float32"):
        r = round_weight(float(x))
        assert abs(r - float(x)) <= 5e-6 * abs(float(x))
        digits = f"{r:e}".split("e")[0].replace(".", "").replace("-", "").rstrip("0")
        assert len(digits) <= 6 and len(repr(r)) <= 13
    assert math.isnan(round_weight(float("nan"))) and round_weight(float("inf")) == float("inf")


def test_table_aligns_columns_without_control_codes():
    text = table([["ctg_out_1", "2.5", "sum"], ["bin", "0.25", "weighted_mean"]], ["term", "value", "reduction"])
    lines = text.splitlines()
    assert "\x1b" not in text and len(lines) == 4
    assert lines[0].split() == ["term", "value", "reduction"]
    assert set(lines[1]) <= {"─", "-", " "}
    # Numbers right-aligned under their header; text left-aligned; two spaces between columns.
    end = lines[0].index("value") + len("value")
    assert lines[2][:end].endswith("2.5") and lines[3][:end].endswith("0.25")
    assert lines[2].index("sum") == lines[3].index("weighted_mean") == lines[0].index("reduction")
    assert "ctg_out_1  " in lines[2]
    assert all(line == line.rstrip() for line in lines)


def test_table_without_rich_is_the_same(monkeypatch):
    import builtins

    rows, headers = [["ctg_out_1", "2.5", "sum"], ["bin", "0.25", "weighted_mean"]], ["term", "value", "reduction"]
    with_rich = table(rows, headers)
    real_import = builtins.__import__

    def no_rich(name, *args, **kwargs):
        if name.startswith("rich"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rich)
    assert table(rows, headers) == with_rich


def test_epoch_log_lines():
    lines = []
    log = EpochLog(print_fn=lines.append, width=1000)
    log.set_params({"epochs": 3})
    log.on_train_begin()
    base = {"loss": 1.5, "a_loss": 1.0, "b_loss": 2.0, "a_accuracy": 0.5, "a_weight": 0.5, "b_weight": 0.10000000149,
            "val_loss": 1.6, "val_a_loss": 1.1, "val_a_accuracy": 0.4, "val_a_weight": 0.5, "val_b_weight": 0.1,
            "learning_rate": 0.001}
    log.on_epoch_end(0, base)
    log.on_epoch_end(1, {**base, "b_weight": 0.09999995678663254})  # the same weight, float32 noise
    log.on_epoch_end(2, {**base, "a_weight": 0.75, "learning_rate": 0.0005})
    first, second, third = lines
    assert first.startswith("epoch 1/3  loss 1.5  a_accuracy 0.5  a_loss 1  b_loss 2")
    assert "| val_loss 1.6  val_a_accuracy 0.4  val_a_loss 1.1" in first
    assert first.endswith("| a_weight 0.5  b_weight 0.1  learning_rate 0.001")
    assert "weight" not in second and "learning_rate" not in second  # unchanged: not repeated
    assert third.endswith("| a_weight 0.75  learning_rate 0.0005") and "b_weight" not in third
    assert all("val_a_weight" not in line and "\x1b" not in line and "\r" not in line for line in lines)


def test_epoch_lines_wrap_at_the_terminal_width_and_keep_every_value():
    logs = {"loss": 1.25, **{f"head_{i}_loss": 0.5 + i for i in range(12)},
            **{f"val_head_{i}_accuracy": 0.25 for i in range(12)}, **{f"head_{i}_weight": 1.0 for i in range(12)}}
    line = EpochLog(width=80).format(0, logs)
    rows = line.split("\n")
    assert len(rows) > 3 and all(len(r) <= 80 for r in rows)
    assert rows[0].startswith("epoch 1  loss 1.25") and all(r.startswith("    ") for r in rows[1:])
    flat = " ".join(r.strip() for r in rows)
    assert all(f"{k} " in flat for k in logs)
    assert EpochLog(width=10_000).format(0, logs).count("\n") == 0


def test_epoch_log_in_fit():
    import multiloss as ml

    x_in = keras.Input((3,))
    model = keras.Model(x_in, {"a": keras.layers.Dense(1, name="a")(x_in), "b": keras.layers.Dense(1, name="b")(x_in)})
    ml.compile(model, "outputs: {a: {loss: mse, weight: 0.1}, b: {loss: mae, metrics: [mse]}}", optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"a": rng.normal(size=(16, 1)).astype("float32"), "b": rng.normal(size=(16, 1)).astype("float32")}
    lines = []
    hist = model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_data=(x, y),
                     callbacks=[EpochLog(print_fn=lines.append, width=1000)]).history
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ")
    assert f"loss {hist['loss'][1]:.4g}" in lines[1] and f"val_b_mse {hist['val_b_mse'][1]:.4g}" in lines[1]
    assert "a_weight 0.1" in lines[0] and "_weight" not in lines[1]


def test_describe_shows_strategy_schedules_and_effective_weights(tmp_path, capsys):
    from multiloss.cli.commands import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("outputs:\n  a: {loss: mse, weight: 0.1}\n  b: {loss: MeanAbsoluteError, weight: 2.8,"
                    " reduction: mean}\n"
                    "weighting: {strategy: dwa, params: {temperature: 3.0}}\n"
                    "schedules:\n  b: {kind: linear, start: 0.0, end: 0.5, steps: 1000, warmup: 100}\n")
    assert main(["describe", str(spec)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["a"][1:5] == ["a", "mse", "0.1", "sum_over_batch_size"]
    assert rows["b"][2:5] == ["MeanAbsoluteError", "2.8", "sum_over_batch_size"]  # `mean` is Keras's alias
    assert lines[4].startswith("weighting: dwa(temperature=3.0)")
    effective = {line.split()[0]: line.split() for line in lines[7:]}
    assert effective["a"] == ["a", "0.1", "-", "0.1", "0.1"]
    # b: 2.8 × 0 at step 0, 2.8 × 0.5 = 1.4 after warm-up (100 steps) and the 1000-step ramp.
    assert effective["b"] == ["b", "2.8", "linear", "0→0.5", "over", "steps", "100–1100", "0", "1.4"]
