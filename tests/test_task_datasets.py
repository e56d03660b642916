"""Per-task datasets with a sampler (multiloss.run.tasks): which task each step draws, which batch of
it, and which terms reach the loss, the gradient, the strategies and the logs; the config's errors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import multiloss as ml
from multiloss.run import train as runner
from multiloss.run.config import load_run_config
from multiloss.run.train import build_model, load_splits, train
from multiloss.spec.errors import SpecError

B = 4


def write_tasks(tmp_path, na=16, nb=8, csv_b=False):
    """Task a: regression target ``a`` (npz); task b: a 2-class target ``b`` (npz or CSV); explicit splits."""
    rng = np.random.default_rng(0)

    def arrays(n):
        return rng.normal(size=(n, 3)).astype("float32")

    xa, xb = arrays(na + 4), arrays(nb + 4)
    ya = (xa.sum(1, keepdims=True) + np.arange(len(xa))[:, None]).astype("float32")   # distinct per row
    yb = (np.arange(len(xb)) % 2).astype("int32")
    np.savez(tmp_path / "a.npz", **{"train/x": xa[:na], "train/a": ya[:na], "val/x": xa[na:], "val/a": ya[na:]})
    if csv_b:
        rows = ["x0,x1,x2,b"] + [f"{r[0]!r},{r[1]!r},{r[2]!r},{c}" for r, c in zip(xb.tolist(), yb)]
        (tmp_path / "b.csv").write_text("\n".join(rows[:nb + 1]) + "\n")
        (tmp_path / "b_val.csv").write_text("\n".join([rows[0]] + rows[nb + 1:]) + "\n")
        b_data = {"source": "csv", "params": {"path": {"train": str(tmp_path / "b.csv"),
                                                       "val": str(tmp_path / "b_val.csv")},
                                              "inputs": ["x0", "x1", "x2"]}}
    else:
        np.savez(tmp_path / "b.npz", **{"train/x": xb[:nb], "train/b": yb[:nb], "val/x": xb[nb:], "val/b": yb[nb:]})
        b_data = {"source": "npz", "params": {"path": str(tmp_path / "b.npz"), "inputs": ["x"]}}
    a_data = {"source": "npz", "params": {"path": str(tmp_path / "a.npz"), "inputs": ["x"]}}
    return (xa[:na], ya[:na], xb[:nb], yb[:nb]), {"a": {"data": a_data}, "b": {"data": b_data}}


def config(tmp_path, tasks, sampler="round_robin", epochs=2, **extra):
    cfg = {"name": "tasks", "output_dir": str(tmp_path / "runs"), "seed": 3, "tasks": tasks, "sampler": sampler,
           "model": {"builder": "mlp", "params": {"hidden": [5], "heads": {"a": {"kind": "regression"},
                                                                            "b": {"units": 2}}}},
           "loss": {"outputs": {"a": {"loss": "mse", "weight": 0.5},
                                "b": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}}},
           "train": {"epochs": epochs, "batch_size": B, "shuffle": False, "verbose": 0}}
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    return cfg


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append({k: float(v) for k, v in logs.items()})


def per_row_losses(model, xa, ya, xb, yb):
    """The frozen model's per-example losses: squared error of a, cross-entropy of b (numpy)."""
    pa = np.asarray(model(xa)["a"])
    pb = np.asarray(model(xb)["b"])
    return ((pa - ya) ** 2)[:, 0], -np.log(pb[np.arange(len(yb)), yb])


def expected_logs(order, la, lb, steps):
    """Hand computation: step s draws task order[s]; a task's k-th batch is its rows k·B .. k·B+B-1 modulo its
    size (unshuffled, repeated); a term's running mean is over the steps that carried it; the total of a step
    is its own task's term only (weight 0.5 for a, 1 for b)."""
    taken = {0: 0, 1: 0}
    rows, sums, counts, totals = [], {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, []
    for s, task in enumerate(order):
        if s % steps == 0:          # a new epoch: Keras's running means restart
            sums, counts, totals = {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, []
        losses = (la, lb)[task]
        idx = (taken[task] * B + np.arange(B)) % len(losses)
        taken[task] += 1
        value = float(losses[idx].mean())
        sums[task] += value
        counts[task] += 1
        totals.append((0.5, 1.0)[task] * value)
        rows.append({"a_loss": sums[0] / counts[0] if counts[0] else 0.0,
                     "b_loss": sums[1] / counts[1] if counts[1] else 0.0, "loss": float(np.mean(totals))})
    return rows


def frozen_fit(tmp_path, sampler, epochs=2, strategy=None, **extra):
    data, tasks = write_tasks(tmp_path, **extra.pop("sizes", {}))
    cfg = load_run_config(config(tmp_path, tasks, sampler, epochs, **extra))
    splits = load_splits(cfg)
    model = build_model(cfg, splits.info)
    model.optimizer.learning_rate.assign(0.0)         # frozen: every step's loss is computable by hand
    logs = BatchLogs()
    model.fit(splits.train_dataset(0, epochs), epochs=epochs, steps_per_epoch=splits.steps, verbose=0,
              callbacks=[logs])
    return data, splits, model, logs.rows


@pytest.mark.parametrize("sampler", ["round_robin", {"weighted": {"a": 2, "b": 1}}])
def test_steps_draw_the_hand_computed_task_batches_and_terms(tmp_path, sampler):
    (xa, ya, xb, yb), splits, model, rows = frozen_fit(tmp_path, sampler)
    steps = 16 // B + 8 // B                                  # Σ ⌈examples / batch⌉
    assert splits.steps == steps == 6 and len(rows) == 2 * steps
    if sampler == "round_robin":
        order = np.arange(2 * steps) % 2
    else:
        p = np.array([2.0, 1.0]) / 3
        order = np.concatenate([np.random.default_rng([3, e]).choice(2, steps, p=p) for e in range(2)])
        assert set(order) == {0, 1}
    expected = expected_logs(order, *per_row_losses(model, xa, ya, xb, yb), steps)
    for s, (got, want) in enumerate(zip(rows, expected)):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (s, key, order[: s + 1])


def test_proportional_probabilities_and_task_order():
    from multiloss.run.tasks import probabilities, task_order

    p = probabilities("proportional", None, {"a": 30, "b": 10})
    assert p.tolist() == [0.75, 0.25]
    assert task_order("round_robin", p, 5, 0, 1).tolist() == [1, 0, 1, 0, 1]       # continues across epochs
    drawn = task_order("proportional", p, 4000, 7, 0)
    assert abs(drawn.mean() - 0.25) < 0.03
    assert drawn.tolist() == np.random.default_rng([7, 0]).choice(2, 4000, p=[0.75, 0.25]).tolist()


def test_absent_term_adds_exactly_zero_to_loss_and_gradient(tmp_path):
    (xa, ya, _, _), tasks = write_tasks(tmp_path)
    cfg = load_run_config(config(tmp_path, tasks))
    splits = load_splits(cfg)
    model = build_model(cfg, splits.info)
    x, y, sw = next(iter(splits.task_batches(0, "train", True)))          # a batch of task a
    assert sw["b"].numpy().tolist() == [0.0] * B and sw["a"].numpy().tolist() == [1.0] * B
    assert y["b"].numpy().tolist() == [0] * B
    with tf.GradientTape(persistent=True) as tape:
        pred = model(x)
        result = model.loss.compute(y, pred, sw)
        only_a = 0.5 * tf.reduce_mean(tf.square(pred["a"] - y["a"]))
    assert float(result.losses["b"]) == 0.0
    assert float(result.total) == pytest.approx(float(only_a), rel=1e-6)
    head_b = model.get_layer("b").trainable_variables
    for g in tape.gradient(result.total, head_b):
        assert np.all(g.numpy() == 0.0)                                    # exactly 0, not small
    for g, h in zip(tape.gradient(result.total, model.trainable_variables),
                    tape.gradient(only_a, model.trainable_variables)):
        if h is not None:
            np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-6, atol=1e-7)


def test_a_strategy_sees_only_the_task_of_the_batch(tmp_path):
    """MGDA over [g_a, 0] would step by the zero vector; with b absent its weights are λ_a = 1."""
    (xa, ya, _, _), tasks = write_tasks(tmp_path)
    cfg = load_run_config(config(tmp_path, tasks, epochs=1,
                                 train={"steps_per_epoch": 1},
                                 optimizer={"name": "sgd", "params": {"learning_rate": 0.1}}) |
                          {"loss": {"weighting": {"strategy": "mgda"},
                                    "outputs": {"a": {"loss": "mse"}, "b": {"loss": "sparse_categorical_crossentropy"}}}})
    splits = load_splits(cfg)
    model = build_model(cfg, splits.info)
    trunk = [v for v in model.trainable_variables if "b" != v.path.split("/")[0]]
    before = [v.numpy() for v in model.trainable_variables]
    model.fit(splits.train_dataset(0, 1), epochs=1, steps_per_epoch=1, verbose=0)
    moved = [np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)]
    assert max(moved) > 1e-4 and trunk
    assert model.loss.get_weights()["a"] == pytest.approx(1.0)


def test_train_run_logs_validation_per_task(tmp_path):
    _, tasks = write_tasks(tmp_path, csv_b=True)
    one = train(config(tmp_path, tasks, epochs=2, name="one"), overwrite=True)
    # val_b_loss is task b's own validation split only: the trained model on its 4 rows, by hand
    model = keras.saving.load_model(tmp_path / "runs" / "one" / "model.keras")
    rows = np.loadtxt(tmp_path / "b_val.csv", delimiter=",", skiprows=1)
    pb = np.asarray(model(rows[:, :3].astype("float32"))["b"])
    ce = -np.log(pb[np.arange(len(pb)), rows[:, 3].astype(int)]).mean()
    assert one["val"]["b_loss"] == pytest.approx(ce, rel=1e-5)
    assert one["val"]["b_accuracy"] == pytest.approx((pb.argmax(1) == rows[:, 3]).mean())
    va = np.load(tmp_path / "a.npz")
    pa = np.asarray(model(va["val/x"])["a"])
    assert one["val"]["a_loss"] == pytest.approx(((pa - va["val/a"]) ** 2).mean(), rel=1e-5)
    n_a, n_b = len(pa), len(pb)       # val_loss: the mean total over both tasks' validation batches
    assert one["val"]["loss"] == pytest.approx((n_a * 0.5 * one["val"]["a_loss"] + n_b * ce) / (n_a + n_b), rel=1e-5)
    history = (tmp_path / "runs" / "one" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_a_loss", "val_b_loss", "val_b_accuracy", "a_loss", "b_loss"} <= set(history)


def _fit_under(strategy, splits, cfg, epochs=2):
    """The weights before and after ``epochs`` of the task batches, the model built under ``strategy``."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model(cfg, splits.info)
    before = model.get_weights()
    model.fit(splits.train_dataset(0, epochs), epochs=epochs, steps_per_epoch=splits.steps, verbose=0)
    return before, model.get_weights()


@pytest.mark.parametrize("weighting", [None, {"strategy": "pcgrad"}])
def test_two_replicas_equal_one_device(tmp_path, weighting):
    _, tasks = write_tasks(tmp_path)
    raw = config(tmp_path, tasks, {"weighted": {"a": 1, "b": 1}}, optimizer={"name": "sgd",
                                                                          "params": {"learning_rate": 0.1}})
    if weighting:
        raw["loss"]["weighting"] = weighting
    cfg = load_run_config(raw)
    splits = load_splits(cfg)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    start, one = _fit_under(tf.distribute.OneDeviceStrategy(devices[0]), splits, cfg)
    mirrored = ml.mirrored_strategy(devices[:2])
    start2, two = _fit_under(mirrored, splits, cfg)
    assert max(np.abs(a - b).max() for a, b in zip(start, one)) > 1e-3          # it trained
    for a, b, s0, s1 in zip(one, two, start, start2):
        np.testing.assert_array_equal(s0, s1)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("change, path, words", [
    ({"sampler": {"weighted": {"a": 2, "c": 1}}}, "sampler.weighted.c", "'c' is not a task"),
    ({"sampler": {"weighted": {"a": 2, "b": -1}}}, "sampler.weighted.b", "a number > 0"),
    ({"sampler": {"weighted": {"a": 2}}}, "sampler.weighted", "missing: b"),
    ({"sampler": "uniform"}, "sampler", "valid: round_robin, proportional"),
    ({"tasks": {"depth": {"data": {"source": "npz"}}}}, "tasks.depth", "'depth' is no target or term"),
    ({"tasks": {"a": {"data": {"source": "nope"}}}}, "tasks.a.data.source", "nope"),
    ({"data": {"source": "digits"}}, "tasks", "not both"),
])
def test_config_errors_name_the_yaml_path(tmp_path, change, path, words):
    _, tasks = write_tasks(tmp_path)
    cfg = config(tmp_path, tasks)
    cfg.update(change)
    with pytest.raises(SpecError) as exc:
        load_run_config(cfg)
    text = str(exc.value)
    assert path in text and words in text, text


def test_data_errors_name_the_task(tmp_path):
    _, tasks = write_tasks(tmp_path)
    np.savez(tmp_path / "c.npz", **{"train/x": np.zeros((8, 5), "float32"), "train/b": np.zeros(8, "int32")})
    tasks["b"]["data"]["params"]["path"] = str(tmp_path / "c.npz")
    with pytest.raises(SpecError) as exc:
        load_splits(load_run_config(config(tmp_path, tasks)))
    assert "tasks.b.data" in str(exc.value) and "same names and shapes" in str(exc.value)
    tasks["b"]["labels"] = ["a"]
    tasks["a"]["labels"] = ["a", "b"]
    np.savez(tmp_path / "c.npz", **{"train/x": np.zeros((8, 3), "float32"), "train/a": np.zeros((8, 1), "float32")})
    with pytest.raises(SpecError) as exc:
        load_splits(load_run_config(config(tmp_path, tasks)))
    assert "tasks.a.data" in str(exc.value) and "no target 'b'" in str(exc.value)


def test_check_dry_run_and_the_saved_config(tmp_path, capsys):
    from multiloss.run.train import KIND, dry_run

    _, tasks = write_tasks(tmp_path)
    raw = config(tmp_path, tasks, "proportional", epochs=1, name="saved")
    assert "tasks a, b (sampler proportional)" in KIND.check(raw)
    values = dry_run(load_run_config(raw))          # the first step draws task a (16 of 24 examples: p = 2/3)
    out = capsys.readouterr().out
    assert values["b"] == 0.0 and "absent from this batch" in out.splitlines()[1] and values["a"] > 0
    train(raw, overwrite=True)
    saved = load_run_config(tmp_path / "runs" / "saved" / "config.yaml")   # reloads: tasks, no data block
    assert saved.tasks is not None and saved.data is None and saved.sampler == "proportional"
    assert saved.fingerprint() == load_run_config(raw).fingerprint()
    with pytest.raises(SpecError) as exc:          # the tasks have no test split
        KIND.evaluate(tmp_path / "runs" / "saved")
    assert "tasks" in str(exc.value) and "no test split" in str(exc.value)


def test_a_run_without_tasks_keeps_its_saved_config_and_refuses_task_keys(tmp_path):
    _, tasks = write_tasks(tmp_path)
    raw = config(tmp_path, tasks)
    raw["data"] = raw.pop("tasks")["a"]["data"]
    raw["loss"]["outputs"].pop("b")
    raw["model"]["params"]["heads"].pop("b")
    raw.pop("sampler")
    cfg = load_run_config(raw)
    assert not {"tasks", "sampler"} & set(yaml.safe_load(cfg.to_yaml())) and "steps_per_epoch" not in cfg.to_yaml()
    for key, value, path in (("sampler", "proportional", "sampler"),
                             ("train", {"steps_per_epoch": 3}, "train.steps_per_epoch")):
        bad = dict(raw, **{key: dict(raw[key], **value) if isinstance(value, dict) else value})
        with pytest.raises(SpecError) as exc:
            load_run_config(bad)
        assert path in str(exc.value) and "tasks: only" in str(exc.value)


@pytest.mark.slow
def test_a_resumed_task_run_continues_the_history(tmp_path):
    _, tasks = write_tasks(tmp_path)
    raw = config(tmp_path, tasks, {"weighted": {"a": 1, "b": 3}}, epochs=1, name="resumed")
    train(raw, overwrite=True)
    train(raw, overrides=["train.epochs=2"], resume=True)
    history = json.loads((tmp_path / "runs" / "resumed" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    # epoch 2 draws b only (p_a = 1/4: rng([3, 1]) gives no 0 in 6 draws): a, carried by no batch, logs 0
    assert np.random.default_rng([3, 1]).choice(2, 6, p=[0.25, 0.75]).tolist() == [1] * 6
    assert history[0]["a_loss"] > 0 and history[1]["a_loss"] == 0.0 and history[1]["a_weight"] == 0.0
    assert history[1]["b_loss"] > 0 and history[1]["loss"] == pytest.approx(history[1]["b_loss"])
    assert history[1]["val_a_loss"] > 0           # validation still has task a's split


def test_augment_reaches_every_tasks_training_batches_only(tmp_path):
    """``train.augment`` with ``tasks:``: each task's training inputs are augmented (targets and the
    absent terms' zero weights untouched); evaluation batches are not."""
    rng = np.random.default_rng(0)
    tasks = {}
    for name, n in (("a", 8), ("b", 4)):
        x = np.broadcast_to(rng.uniform(0.2, 0.8, (n + 2, 1, 1, 1)), (n + 2, 6, 6, 1)).astype("float32")
        y = np.arange(n + 2, dtype="float32")[:, None] if name == "a" else (np.arange(n + 2) % 2).astype("int32")
        np.savez(tmp_path / f"{name}.npz", **{"train/x": x[:n], f"train/{name}": y[:n],
                                             "val/x": x[n:], f"val/{name}": y[n:]})
        tasks[name] = {"data": {"source": "npz", "params": {"path": str(tmp_path / f"{name}.npz"), "inputs": ["x"]}}}

    def batches(augment, split="train"):
        cfg = load_run_config(config(tmp_path, tasks, epochs=1, train={"augment": augment}))
        splits = load_splits(cfg)
        ds = runner.train_batches(splits, cfg, 0)[0] if split == "train" else runner.prepare_split(splits, cfg, split)
        return [(x.numpy(), {k: v.numpy() for k, v in y.items()}, {k: v.numpy() for k, v in w.items()})
                for x, y, w in ds]

    brighten = [{"random_brightness": {"factor": 0.5}}]
    plain, bright = batches([]), batches(brighten)
    assert len(plain) == len(bright) == 3                                 # ⌈8/4⌉ + ⌈4/4⌉ steps
    for (xp, yp, wp), (xb, yb, wb) in zip(plain, bright):
        assert not np.allclose(xp, xb)                                    # every task's inputs augmented
        assert all(np.array_equal(yp[k], yb[k]) and np.array_equal(wp[k], wb[k]) for k in yp)
    for (xp, _, _), (xb, _, _) in zip(batches([], "val"), batches(brighten, "val")):
        np.testing.assert_array_equal(xp, xb)                             # validation: never augmented
