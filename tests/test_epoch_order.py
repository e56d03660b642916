"""Each epoch's order is drawn from the run's seed and the epoch alone (``Part.epochs``): every epoch
is shuffled anew, arrays too, and a resumed run reads, and trains to, what the uninterrupted run did.

Why multiloss owns the order: Keras 3.15's own ``fit(x, y, shuffle=True)`` on arrays repeats one
permutation every epoch once ``keras.utils.set_random_seed`` has been called (its index shuffle is a
stateful op in a ``tf.data`` map, re-seeded identically for each epoch's iterator; tensorflow#35682),
and ``tf.data``'s ``reshuffle_each_iteration`` starts its sequence of orders again in a new process.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_data_sources import dataset_config, order, run_config, write_tree
from test_task_datasets import config as task_config
from test_task_datasets import write_tasks

from multiloss.run import train as runner
from multiloss.run.config import load_run_config
from multiloss.run.data import Part, Splits
from multiloss.run.train import load_splits, train_batches


def epoch_orders(ds, steps: int) -> list[list[int]]:
    """The example ids each epoch of ``ds`` reads (x[:, 0] names the example), and its batch sizes."""
    batches = order(ds)
    assert len(batches) % steps == 0
    return [sum(batches[i:i + steps], []) for i in range(0, len(batches), steps)]


def test_keras_own_array_shuffle_repeats_one_order_under_a_global_seed():
    # The peer behaviour multiloss works around (should Keras change it, this test says so).
    seen = []

    class Recording(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            tf.py_function(lambda x: seen.append(x.numpy()[:, 0].astype(int).tolist()) or 0, [data[0]], tf.int32)
            return {"loss": tf.constant(0.0)}

    keras.utils.set_random_seed(0)
    model = Recording()
    model.compile("sgd", "mse")
    x = np.arange(8, dtype="float32")[:, None]
    model.fit(x, x, batch_size=8, epochs=3, shuffle=True, verbose=0)
    assert sorted(seen[0]) == list(range(8)) and seen[0] != list(range(8))   # shuffled once ...
    assert seen[1] == seen[0] and seen[2] == seen[0]                           # ... and never again


def _array_config(tmp_path, **train):
    return dataset_config(tmp_path, **{"batch_size": 4, "epochs": 3, **train})


def _arrays(n=10):
    ids = np.arange(n, dtype="float32")
    return Splits(Part(np.repeat(ids[:, None], 3, axis=1), {"label": (ids % 2).astype("int32")}), None, None)


@pytest.mark.parametrize("kind", ["arrays", "dataset"])
def test_each_epoch_is_a_new_order_and_a_resumed_run_reads_the_rest(kind, tmp_path):
    cfg = _array_config(tmp_path, shuffle=True)
    splits = _arrays() if kind == "arrays" else load_splits(cfg)
    ds, steps = train_batches(splits, cfg, 0)
    assert steps == 3                                                   # ⌈10 / 4⌉
    assert [len(b) for b in order(ds)] == [4, 4, 2] * 3                 # no batch crosses an epoch
    straight = epoch_orders(ds, steps)
    assert all(sorted(e) == list(range(10)) for e in straight)          # each epoch: every example once
    assert len({tuple(e) for e in straight}) == 3 and straight[0] != list(range(10))   # new orders
    assert epoch_orders(train_batches(splits, cfg, 0)[0], steps) == straight           # the same seed: the same
    assert epoch_orders(train_batches(splits, cfg, 2)[0], steps) == straight[2:]       # resumed at epoch 2
    cfg.seed = 1
    assert epoch_orders(train_batches(splits, cfg, 0)[0], steps) != straight
    cfg = _array_config(tmp_path, shuffle=False)
    assert epoch_orders(train_batches(splits, cfg, 1)[0], steps) == [list(range(10))] * 2


@pytest.mark.parametrize("cache", [False, True])
def test_image_files_each_epoch_a_new_order_resumed_alike(cache, tmp_path):
    made = write_tree(tmp_path / "images", {"a": 5, "b": 4})
    data = {"source": "image_folder", "params": {"path": str(tmp_path / "images"), "color_mode": "grayscale",
                                                 "val_fraction": 0.0, "test_fraction": 0.0, "cache": cache}}
    cfg = load_run_config(run_config(tmp_path, data, epochs=3, shuffle=True))
    splits = load_splits(cfg)

    def ids(initial_epoch):
        ds, steps = train_batches(splits, cfg, initial_epoch)
        grey = [np.rint(x[:, 0, 0, 0] * 255).astype(int).tolist() for x, _ in ds.as_numpy_iterator()]
        return [sum(grey[i:i + steps], []) for i in range(0, len(grey), steps)]

    straight = ids(0)
    assert all(sorted(e) == sorted(made) for e in straight) and len({tuple(e) for e in straight}) == 3
    assert ids(1) == straight[1:]


DROPOUT_NET = """
import keras

def build(info):
    x = keras.Input(info["input_shape"])
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(x))
    h = keras.layers.Dropout(0.5, seed=3)(h)
    return keras.Model(x, {"class": keras.layers.Dense(info["num_classes"], activation="softmax", name="class")(h)})
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["digits", "images", "dropout"])
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(source, tmp_path, monkeypatch):
    """Two epochs, then ``--resume`` to four, against four straight: the same history, the same weights.
    ``dropout``: a user's model with a Dropout layer, whose seed generator the checkpoint keeps
    (``.keras`` does not), so the resumed epochs draw the uninterrupted run's masks."""
    if source in ("digits", "dropout"):
        data = {"source": "digits"}
        model = {"builder": "mlp", "params": {"hidden": [16], "heads": {"class": {"kind": "classification"}}}}
        if source == "dropout":
            (tmp_path / "dropnet.py").write_text(DROPOUT_NET)
            monkeypatch.syspath_prepend(str(tmp_path))
            model = {"builder": "dropnet:build"}
    else:
        write_tree(tmp_path / "images", {"a": 12, "b": 12, "c": 12})
        data = {"source": "image_folder", "params": {"path": str(tmp_path / "images"), "color_mode": "grayscale",
                                                     "val_fraction": 0.2, "test_fraction": 0.0}}
        model = None
    raw = run_config(tmp_path, data, epochs=4, batch_size=8, verbose=0, shuffle=True)
    if model:
        raw["model"] = model
    runner.train(raw, ["name=straight"])
    runner.train(raw, ["name=resumed", "train.epochs=2"])
    runner.train(raw, ["name=resumed", "train.epochs=4"], resume=True)
    runs = tmp_path / "runs"
    straight, resumed = (json.loads((runs / n / "history.json").read_text()) for n in ("straight", "resumed"))
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["epoch"], key)
    w_straight, w_resumed = (keras.saving.load_model(runs / n / "model.keras").get_weights()
                             for n in ("straight", "resumed"))
    for a, b in zip(w_straight, w_resumed):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_a_resumed_run_of_tasks_continues_each_tasks_data_where_it_was(tmp_path):
    (xa, ya, xb, _), tasks = write_tasks(tmp_path, na=10, nb=6)
    raw = task_config(tmp_path, tasks, {"weighted": {"a": 1, "b": 2}}, epochs=4)
    raw["train"]["shuffle"] = True
    cfg = load_run_config(raw)
    splits = load_splits(cfg)

    def steps_from(initial_epoch):
        """(task, example ids) of every step from ``initial_epoch`` on."""
        ds, steps = train_batches(splits, cfg, initial_epoch)
        assert steps == splits.steps
        out = []
        for x, y, w in ds.as_numpy_iterator():
            task = "a" if w["a"].any() else "b"
            rows = (np.abs(ya[:, 0][None] - y["a"][:, 0][:, None]).argmin(1) if task == "a"
                    else np.abs(xb[:, 0][None] - x[:, 0][:, None]).argmin(1))
            out.append((task, rows.tolist()))
        return out

    straight = steps_from(0)
    assert len(straight) == 4 * splits.steps
    for task, n in (("a", 10), ("b", 6)):
        seen = sum((rows for t, rows in straight if t == task), [])
        passes = [seen[i:i + n] for i in range(0, len(seen) - n + 1, n)]
        assert len(passes) >= 2 and all(sorted(p) == list(range(n)) for p in passes)   # every pass: each once
        assert len({tuple(p) for p in passes}) == len(passes)                         # each pass a new order
    assert steps_from(1) == straight[splits.steps:]          # resumed after epoch 1: the same steps on
    assert steps_from(3) == straight[3 * splits.steps:]
