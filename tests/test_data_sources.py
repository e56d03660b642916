"""The file sources (image_folder, csv, parquet, tfrecord), users' tf.data sources and their info
contract, batch size and seeded shuffling of datasets, and import strings resolved from the cwd.

Every image written here is a constant grey value ``v`` (8×8), so a decoded example names itself:
its pixels are ``v / 255``, and ``v`` tells which file it was.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from multiloss.cli.commands import main
from multiloss.run.config import load_run_config
from multiloss.run.data import get_source
from multiloss.run.train import load_splits, prepare, train_batches
from multiloss.spec.errors import SpecError


def write_tree(root: Path, counts: dict[str, int], start: int = 10) -> dict[int, str]:
    """``root/<class>/<i>.png`` grey images, ``counts[class]`` of each; ``{grey value: class}``."""
    value, made = start, {}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), value, "uint8"), "L").save(root / name / f"{i}.png")
            made[value] = name
            value += 1
    return made


def examples(part) -> list[tuple[int, int]]:
    """``(grey value, class id)`` of each example of a dataset part, in order (unshuffled, decoded)."""
    out = []
    for x, y in part.batches(64).unbatch().as_numpy_iterator():
        grey = np.unique(np.round(x * 255).astype(int))
        assert len(grey) == 1, "a constant image decodes to one value"
        out.append((int(grey[0]), int(y["class"])))
    return out


def run_config(tmp_path: Path, data: dict, **train) -> dict:
    return {"name": "folder", "seed": 0, "data": data, "output_dir": str(tmp_path / "runs"),
            "model": {"builder": "multihead_cnn", "params": {"filters": [2], "dense": 4,
                                                             "heads": {"class": {"kind": "classification"}}}},
            "loss": {"outputs": {"class": {"loss": "sparse_categorical_crossentropy"}}},
            "train": {"epochs": 1, "batch_size": 4, "verbose": 2, **train}}


# --- image_folder -----------------------------------------------------------------------------


def test_image_folder_classes_and_seeded_fraction_splits(tmp_path):
    made = write_tree(tmp_path, {"owl": 5, "cat": 4, "emu": 3})      # 12 images
    load = get_source("image_folder")
    splits = load(seed=5, path=str(tmp_path), color_mode="grayscale", val_fraction=0.25, test_fraction=0.25)
    assert splits.info == {"input_shape": (8, 8, 1), "num_classes": 3, "class_names": ["cat", "emu", "owl"]}
    parts = {s: examples(getattr(splits, s)) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [6, 3, 3]              # 12 - 3 - 3, round(0.25 * 12)
    names = ["cat", "emu", "owl"]
    seen = [v for p in parts.values() for v, _ in p]
    assert sorted(seen) == sorted(made)                                # disjoint and complete
    assert all(names[c] == made[v] for p in parts.values() for v, c in p)   # ids index the sorted names
    again = load(seed=5, path=str(tmp_path), color_mode="grayscale", val_fraction=0.25, test_fraction=0.25)
    assert {s: examples(getattr(again, s)) for s in parts} == parts
    other = load(seed=6, path=str(tmp_path), color_mode="grayscale", val_fraction=0.25, test_fraction=0.25)
    assert {v for v, _ in examples(other.test)} != {v for v, _ in parts["test"]}


def test_image_folder_explicit_split_folders_size_and_color(tmp_path):
    write_tree(tmp_path / "train", {"dog": 3, "ant": 2}, start=10)
    write_tree(tmp_path / "val", {"ant": 1, "dog": 1}, start=50)
    write_tree(tmp_path / "test", {"dog": 1}, start=90)
    load = get_source("image_folder")
    with pytest.warns(UserWarning, match="test has no images of the class 'ant' of train/"):
        splits = load(path=str(tmp_path), image_size=[4, 6])          # rgb by default
    assert splits.info == {"input_shape": (4, 6, 3), "num_classes": 2, "class_names": ["ant", "dog"]}
    x, y = next(iter(splits.test.batches(8)))
    assert x.shape == (1, 4, 6, 3) and y["class"].numpy().tolist() == [1]
    np.testing.assert_allclose(x.numpy(), 90 / 255, atol=1e-6)        # grey 90 in every channel
    assert [v for v, _ in examples(splits.val)] == [50, 51]            # ant/0.png, then dog/0.png
    assert len(examples(splits.train)) == 5
    # No val/ folder: val is drawn from train/ by its fraction (round(0.4 * 5) = 2), test/ stays.
    shutil.rmtree(tmp_path / "val")
    with pytest.warns(UserWarning, match="test has no images of the class 'ant' of train/"):
        drawn = load(seed=1, path=str(tmp_path), val_fraction=0.4)   # seed 0 would draw both ants
    assert [len(examples(p)) for p in (drawn.train, drawn.val, drawn.test)] == [3, 2, 1]


def test_image_folder_streams_from_disk_unless_cached(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2})                             # greys 10, 11 | 12, 13
    streamed = get_source("image_folder")(path=str(tmp_path), val_fraction=0, test_fraction=0)
    cached = get_source("image_folder")(path=str(tmp_path), val_fraction=0, test_fraction=0, cache=True)
    stream_ds, cache_ds = streamed.train.batches(4), cached.train.batches(4)
    first = np.round(next(iter(cache_ds))[0].numpy()[:, 0, 0, 0] * 255).tolist()
    assert first == [10, 11, 12, 13]
    Image.fromarray(np.full((8, 8), 200, "uint8"), "L").save(tmp_path / "a" / "0.png")   # changed on disk
    assert np.round(next(iter(stream_ds))[0].numpy()[:, 0, 0, 0] * 255).tolist() == [200, 11, 12, 13]
    assert np.round(next(iter(cache_ds))[0].numpy()[:, 0, 0, 0] * 255).tolist() == first   # epoch 2: the cache


def test_image_folder_bad_input_names_the_place(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 1})
    load = get_source("image_folder")
    with pytest.raises(ValueError, match=r"^data\.params\.image_size: must be \[height, width\] of positive "
                                         r"ints .*got \[0, 8\]"):
        load(path=str(tmp_path), image_size=[0, 8])
    with pytest.raises(ValueError, match=r"^data\.params\.color_mode: unknown color mode 'cmyk'; valid: "
                                         "grayscale, rgb, rgba"):
        load(path=str(tmp_path), color_mode="cmyk")
    with pytest.raises(ValueError, match=r"^data\.params\.path: '.*nowhere' is not a folder"):
        load(path=str(tmp_path / "nowhere"))
    (tmp_path / "b" / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/b/notes\.png is not a PNG, JPEG, GIF or BMP image"):
        load(path=str(tmp_path))
    (tmp_path / "b" / "notes.png").unlink()
    write_tree(tmp_path / "train", {"a": 1})
    with pytest.raises(ValueError, match=r"has a train/ folder and other folders \(a, b\)"):
        load(path=str(tmp_path))
    # Through a run config, the message carries the config's place.
    cfg = load_run_config(run_config(tmp_path, {"source": "image_folder",
                                                "params": {"path": str(tmp_path / "a"), "color_mode": "rgb"}}))
    with pytest.raises(SpecError, match=r"data: data source 'image_folder' failed: data\.params\.path: "
                                        r".*/a has no class folders"):
        load_splits(cfg)


IMAGE_EXTENSIONS = r"\.png, \.jpg, \.jpeg, \.gif, \.bmp"


def test_image_folder_refuses_an_empty_class_folder(tmp_path):
    write_tree(tmp_path, {"ant": 3, "bee": 3})
    (tmp_path / "cat" / "notes").mkdir(parents=True)                   # no image at any depth
    (tmp_path / "cat" / "notes" / "readme.txt").write_text("photos to come")
    load = get_source("image_folder")
    with pytest.raises(ValueError, match=rf"^data\.params\.path: class folder {tmp_path}/cat has no image files "
                                         rf"\(accepted extensions: {IMAGE_EXTENSIONS}, at any depth\); add images or "
                                         "remove the folder"):
        load(path=str(tmp_path))
    write_tree(tmp_path / "split" / "train", {"ant": 2})
    (tmp_path / "split" / "train" / "bee").mkdir()
    with pytest.raises(ValueError, match=rf"^data\.params\.path: class folder {tmp_path}/split/train/bee has no "
                                         "image files"):
        load(path=str(tmp_path / "split"))


def test_image_folder_refuses_a_class_left_without_training_images(tmp_path):
    write_tree(tmp_path, {"ant": 1, "bee": 6, "cat": 6})               # ant/0.png is image 0 of 13
    load = get_source("image_folder")
    assert load(seed=0, path=str(tmp_path)).info["num_classes"] == 3  # seed 0 keeps image 0 in train
    for seed, split in ((5, "val"), (9, "test")):                      # these draw it into val, test
        with pytest.raises(ValueError, match=rf"^data\.params\.path: class 'ant' \({tmp_path}/ant\) has 1 image, "
                                             rf"drawn into {split} .*val_fraction 0\.1, test_fraction 0\.2, seed "
                                             rf"{seed}.*needs at least one training image"):
            load(seed=seed, path=str(tmp_path))


def test_image_folder_names_a_truncated_image(tmp_path):
    write_tree(tmp_path, {"ant": 2, "bee": 2})
    whole = (tmp_path / "bee" / "1.png").read_bytes()
    (tmp_path / "bee" / "1.png").write_bytes(whole + b"trailing bytes")   # decodes: not refused
    load = get_source("image_folder")
    assert len(examples(load(path=str(tmp_path), val_fraction=0, test_fraction=0).train)) == 4
    (tmp_path / "bee" / "1.png").write_bytes(whole[:60])              # a valid header, the data cut short
    with pytest.raises(ValueError, match=rf"^{tmp_path}/bee/1\.png is cut short or damaged: Invalid PNG data, "
                                         "size 60; remove or replace it"):
        load(path=str(tmp_path))


def test_a_run_reaching_images_damaged_inside_stops_naming_each_one(tmp_path, capsys):
    """A file whose first and last bytes are whole passes the load-time check; the epoch that reads it
    fails in TensorFlow's decoder, and the run's error names every damaged file (not a Keras traceback)."""
    write_tree(tmp_path / "images", {"ant": 6, "bee": 6})
    damaged = [tmp_path / "images" / "bee" / "3.png", tmp_path / "images" / "ant" / "5.png"]
    for f in damaged:
        raw = bytearray(f.read_bytes())
        raw[raw.find(b"IDAT") + 6] ^= 0xFF        # the compressed data damaged, the file's end intact
        f.write_bytes(raw)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(tmp_path, {"source": "image_folder", "params": {
        "path": str(tmp_path / "images"), "val_fraction": 0.25, "test_fraction": 0}})))
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 2 record(s) of the data cannot be read (found when an epoch read them):"), err
    for f in damaged:
        assert f"  {f} is cut short or damaged: Invalid PNG data" in err
    assert "Traceback" not in err and "Graph execution error" not in err
    assert not (tmp_path / "runs" / "folder" / "model.keras").exists()


def test_image_folder_warns_of_a_training_class_missing_from_a_split_folder(tmp_path):
    write_tree(tmp_path / "train", {"ant": 2, "bee": 2, "cat": 2})
    write_tree(tmp_path / "test", {"bee": 1}, start=90)
    (tmp_path / "test" / "cat").mkdir()                                # there, but empty
    load = get_source("image_folder")
    with pytest.warns(UserWarning, match=rf"data\.params\.path: {tmp_path}/test has no images of the classes "
                                         r"'ant', 'cat' of train/: their test accuracy is not measured"):
        splits = load(path=str(tmp_path))
    assert [c for _, c in examples(splits.test)] == [1]


# --- datasets: batch size, seeded shuffling, the info contract --------------------------------


def ten_examples(seed: int = 0):
    """Ten unbatched examples: x is [3] filled with the example's index, y names it twice."""
    x = np.repeat(np.arange(10, dtype="float32")[:, None], 3, axis=1)
    ids = np.arange(10, dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((x, {"label": ids % 2, "index": ids}))
    return {"train": ds, "val": ds.take(3)}


def batched_examples():
    return {"train": ten_examples()["train"].batch(4), "info": {"input_shape": (3,)}}


def twenty_rows(scale=1.0):
    """Arrays of 20 rows whose input's first column is the row number (a user source that returns only train)."""
    x = np.stack([np.arange(20), np.zeros(20), np.zeros(20)], axis=1).astype("float32") * scale
    return {"train": (x, {"label": np.arange(20) % 2}), "info": {"input_shape": (3,)}}


def own_fractions(**kw):
    """A source that draws its own val split by the val_fraction it is given (through **kwargs)."""
    splits = twenty_rows()
    n = round(kw.get("val_fraction", 0.1) * 20)
    x, y = splits["train"]
    return {"train": (x[n:], {"label": y["label"][n:]}), "val": (x[:n], {"label": y["label"][:n]}),
            "info": splits["info"]}


def train_dataset_only():
    return {"train": ten_examples()["train"], "info": {"input_shape": (3,)}}


def unknown_shape_examples():
    spec = (tf.TensorSpec((None, 3), tf.float32), {"label": tf.TensorSpec((), tf.int32)})
    return {"train": tf.data.Dataset.from_generator(lambda: iter([]), output_signature=spec)}


def disagreeing_classes():
    return {"train": ten_examples()["train"], "info": {"num_classes": 3, "class_names": ["even", "odd"]}}


def order(ds) -> list[list[int]]:
    return [x[:, 0].astype(int).tolist() for x, _ in ds.as_numpy_iterator()]


def dataset_config(tmp_path, **train):
    data = run_config(tmp_path, {"source": "test_data_sources:ten_examples"}, **train)
    data["model"] = {"builder": "mlp", "params": {"hidden": [4], "heads": {"label": {"kind": "classification",
                                                                                     "units": 2}}}}
    data["loss"] = {"outputs": {"label": {"loss": "sparse_categorical_crossentropy"}}}
    return load_run_config(data)


def test_dataset_is_batched_and_shuffled_with_the_run_seed(tmp_path):
    cfg = dataset_config(tmp_path, shuffle=False)
    splits = load_splits(cfg)
    assert splits.info == {"input_shape": (3,)}                          # taken from the examples
    plain = prepare(splits.train, cfg, "train")
    assert order(plain) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]        # batch_size 4: 4 + 4 + 2
    x, y = next(iter(plain))
    assert set(y) == {"label"} and y["label"].numpy().tolist() == [0, 1, 0, 1]   # only the head's target

    def epochs(seed, n=2):
        cfg = dataset_config(tmp_path, shuffle=True, epochs=n)
        cfg.seed = seed
        ds, steps = train_batches(load_splits(cfg), cfg, 0)
        batches = order(ds)
        return [sum(batches[i:i + steps], []) for i in range(0, len(batches), steps)]

    first, second = epochs(0)
    assert sorted(first) == list(range(10)) and first != list(range(10))   # a permutation, not the file order
    assert second != first                                              # a new order each epoch
    assert epochs(0) == [first, second]                                 # the same seed, the same orders
    assert epochs(1)[0] != first
    cfg = dataset_config(tmp_path, shuffle=True)
    assert [len(b) for b in order(train_batches(load_splits(cfg), cfg, 0)[0])] == [4, 4, 2]
    assert order(prepare(splits.train, cfg, "train")) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]   # evaluated in order
    assert order(prepare(splits.val, dataset_config(tmp_path, shuffle=True), "val")) == [[0, 1, 2]]  # not shuffled


def test_dataset_targets_named_and_mapped(tmp_path):
    cfg = dataset_config(tmp_path)
    cfg.targets = {"label": "index"}
    x, y = next(iter(prepare(load_splits(cfg).val, cfg, "val")))
    assert y["label"].numpy().tolist() == [0, 1, 2]
    cfg.targets = {"label": "colour"}
    with pytest.raises(SpecError, match=r"targets\.label: the val data has no target 'colour' for 'label'; data "
                                        r"targets: \['index', 'label'\]"):
        prepare(load_splits(cfg).val, cfg, "val")


def test_user_source_draws_the_splits_it_does_not_return_by_the_given_fractions(tmp_path):
    """A function that takes no val_fraction: the fractions given (data.params, train.validation_split)
    draw val and test from its train arrays, disjoint and by the seed; without them it keeps its splits."""
    def rows(part):
        return sorted(part.x[:, 0].astype(int).tolist())

    plain = load_splits(load_run_config(run_config(tmp_path, {"source": "test_data_sources:twenty_rows"})))
    assert rows(plain.train) == list(range(20)) and plain.val is None and plain.test is None
    data = run_config(tmp_path, {"source": "test_data_sources:twenty_rows", "params": {"test_fraction": 0.25}},
                      validation_split=0.1)
    splits = load_splits(load_run_config(data))
    train, val, test = rows(splits.train), rows(splits.val), rows(splits.test)
    assert (len(train), len(val), len(test)) == (13, 2, 5)                  # 20 - round(2.0) - round(5.0)
    assert sorted(train + val + test) == list(range(20))                    # disjoint, nothing lost
    np.testing.assert_array_equal(splits.val.y["label"], np.asarray(val) % 2)   # targets follow their rows
    order = np.random.default_rng(0).permutation(20)                        # split_indices's draw, by hand
    assert val == sorted(order[13:15].tolist()) and test == sorted(order[15:].tolist())
    # A function that takes the fractions (here through **kwargs) gets them and draws its own splits.
    data = run_config(tmp_path, {"source": "test_data_sources:own_fractions"}, validation_split=0.3)
    assert len(load_splits(load_run_config(data)).val.x) == 6
    # A dataset has no fixed positions to draw from: refused, saying what to do.
    data = run_config(tmp_path, {"source": "test_data_sources:train_dataset_only"}, validation_split=0.2)
    with pytest.raises(SpecError, match=r"data: data source 'test_data_sources:train_dataset_only' failed: "
                                        r"val_fraction cannot draw a split from a tf\.data\.Dataset .* return 'val' "
                                        r"from the function"):
        load_splits(load_run_config(data))


@pytest.mark.parametrize("function, message", [
    ("batched_examples", r"the train dataset is already batched: its input is shaped \(None, 3\) where one example "
                         r"is \(3\) \(info\['input_shape'\]\); return it unbatched \(ds\.unbatch\(\)\)"),
    ("unknown_shape_examples", r"info has no 'input_shape' and the train examples' input is shaped \(None, 3\), "
                               r"not fully known; a source returns info \{'input_shape'"),
    ("disagreeing_classes", r"info\['num_classes'\] must be a positive int equal to the number of class_names, got "
                            r"3 for 2 class_names"),
])
def test_user_source_info_contract(tmp_path, function, message):
    data = run_config(tmp_path, {"source": f"test_data_sources:{function}"})
    with pytest.raises(SpecError, match=rf"data: data source 'test_data_sources:{function}' failed: {message}"):
        load_splits(load_run_config(data))


# --- csv, parquet ---------------------------------------------------------------------------

ROWS = [  # x1, x2, species, price ("" = missing)
    (0.5, 1, "owl", "2.5"), (1.5, 2, "cat", ""), (2.5, 3, "owl", "4"), (3.5, 4, "dog", "1"),
    (4.5, 5, "cat", "7.25"), (5.5, 6, "owl", "3"), (6.5, 7, "dog", "0"), (7.5, 8, "cat", "9"),
    (8.5, 9, "owl", "1.5"), (9.5, 10, "dog", "2"),
]
SPECIES = ["cat", "dog", "owl"]


def write_csv(path: Path, rows) -> None:
    path.write_text("x1,x2,species,price\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows))


def check_rows(part, rows) -> None:
    """Each example of an array part is the row with its x1, with species ids and NaN for gaps."""
    by_x1 = {r[0]: r for r in rows}
    for x, sp, price in zip(part.x, part.y["species"], part.y["price"]):
        a, b, c, d = by_x1[float(x[0])]
        assert x.tolist() == [a, b] and SPECIES[sp] == c
        assert (np.isnan(price) and d == "") or price == float(d)


def test_csv_columns_as_inputs_and_targets(tmp_path):
    write_csv(tmp_path / "t.csv", ROWS)
    splits = get_source("csv")(seed=5, path=str(tmp_path / "t.csv"), inputs=["x1", "x2"], val_fraction=0.2,
                               test_fraction=0.3)
    assert splits.info == {"input_shape": (2,), "classes": {"species": SPECIES}, "num_classes": 3,
                           "class_names": SPECIES}
    parts = [splits.train, splits.val, splits.test]
    assert [len(p) for p in parts] == [5, 2, 3]
    assert sorted(float(v) for p in parts for v in p.x[:, 0]) == [r[0] for r in ROWS]
    for p in parts:
        assert p.x.dtype == np.float32 and p.y["species"].dtype == np.int32
        check_rows(p, ROWS)
    # Split files: val is drawn from the train file; class ids come from every file's values.
    write_csv(tmp_path / "a.csv", ROWS[:8])
    write_csv(tmp_path / "b.csv", [(10.5, 11, "yak", "1")])
    files = get_source("csv")(path={"train": str(tmp_path / "a.csv"), "test": str(tmp_path / "b.csv")},
                              inputs=["x1", "x2"], targets=["species"], val_fraction=0.25)
    assert files.info["class_names"] == ["cat", "dog", "owl", "yak"]
    assert [len(files.train), len(files.val)] == [6, 2] and files.test.y["species"].tolist() == [3]


def test_csv_bad_columns_name_the_file(tmp_path):
    write_csv(tmp_path / "t.csv", ROWS)
    load = get_source("csv")
    with pytest.raises(ValueError, match=r"^data\.params\.inputs: .*t\.csv has no column 'x3'; columns: "
                                         r"\['x1', 'x2', 'species', 'price'\]"):
        load(path=str(tmp_path / "t.csv"), inputs=["x1", "x3"])
    with pytest.raises(ValueError, match=r"t\.csv: input column 'species' must hold a finite number in every "
                                         r"row; line 2 holds the text 'owl'"):
        load(path=str(tmp_path / "t.csv"), inputs=["species"])
    with pytest.raises(ValueError, match=r"t\.csv: input column 'price' must hold a finite number in every row; "
                                         r"line 3 holds nothing \(an empty cell\) or NaN"):
        load(path=str(tmp_path / "t.csv"), inputs=["price"])
    for cell, held in (("nan", "nothing \\(an empty cell\\) or NaN"), ("inf", "inf"), ("-inf", "-inf")):
        write_csv(tmp_path / "gap.csv", [*ROWS[:3], (cell, 4, "dog", "1"), *ROWS[4:]])    # line 5
        with pytest.raises(ValueError, match=rf"gap\.csv: input column 'x1' must hold a finite number in every "
                                             rf"row; line 5 holds {held}"):
            load(path=str(tmp_path / "gap.csv"), inputs=["x1"])
    (tmp_path / "short.csv").write_text("x1,x2\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"short\.csv: line 3 has 1 fields, the header 2"):
        load(path=str(tmp_path / "short.csv"), inputs=["x1"])


def test_parquet_table(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"x1": [r[0] for r in ROWS], "x2": [r[1] for r in ROWS], "species": [r[2] for r in ROWS],
                      "price": [float(r[3]) if r[3] else None for r in ROWS]})
    pq.write_table(table, tmp_path / "t.parquet")
    splits = get_source("parquet")(path=str(tmp_path / "t.parquet"), inputs=["x1", "x2"], val_fraction=0.2,
                                   test_fraction=0.3)
    assert splits.info["class_names"] == SPECIES and splits.info["input_shape"] == (2,)
    assert [len(p) for p in (splits.train, splits.val, splits.test)] == [5, 2, 3]
    for p in (splits.train, splits.val, splits.test):
        check_rows(p, ROWS)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)                  # `import pyarrow` fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match=r"the parquet source needs pyarrow, which is not installed: "
                                         r"pip install 'multiloss\[parquet\]'"):
        get_source("parquet")(path=str(tmp_path / "t.parquet"), inputs=["x1"])


# --- tfrecord -------------------------------------------------------------------------------

FEATURES = {"image": {"dtype": "string", "decode": "image", "shape": [8, 8, 1]}, "label": "int64",
            "value": {"dtype": "float32", "shape": [2]}}


def write_records(path: Path, greys) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for g in greys:
            png = tf.io.encode_png(np.full((8, 8, 1), g, "uint8")).numpy()
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[g % 3])),
                       "value": tf.train.Feature(float_list=tf.train.FloatList(value=[g, -g]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def records(part) -> list[int]:
    """The grey of each example, checking its label and value against it."""
    out = []
    for x, y in part.batches(64).unbatch().as_numpy_iterator():
        g = int(round(float(x[0, 0, 0]) * 255))
        np.testing.assert_allclose(x, g / 255, atol=1e-6)
        assert int(y["label"]) == g % 3 and y["value"].tolist() == [g, -g]
        out.append(g)
    return out


def test_tfrecord_feature_spec_and_splits(tmp_path):
    write_records(tmp_path / "a.tfrecord", range(20, 30))
    load = get_source("tfrecord")
    args = dict(path=str(tmp_path / "*.tfrecord"), features=FEATURES, inputs=["image"],
                class_names=["zero", "one", "two"], val_fraction=0.2, test_fraction=0.2)
    splits = load(seed=2, **args)
    assert splits.info == {"input_shapes": {"image": (8, 8, 1)}, "input_shape": (8, 8, 1), "num_classes": 3,
                           "class_names": ["zero", "one", "two"]}
    parts = [records(p) for p in (splits.train, splits.val, splits.test)]
    assert [len(p) for p in parts] == [6, 2, 2]
    assert sorted(sum(parts, [])) == list(range(20, 30))               # disjoint and complete
    again = load(seed=2, **args)
    assert [records(again.val), records(again.test)] == parts[1:]     # the same seed, the same split
    write_records(tmp_path / "b.rec", [90, 91])
    explicit = load(path={"train": str(tmp_path / "a.tfrecord"), "test": str(tmp_path / "b.rec")},
                    features=FEATURES, inputs=["image"], targets=["label"], val_fraction=0.3)
    assert [len(list(p.x)) for p in (explicit.train, explicit.val, explicit.test)] == [7, 3, 2]
    x, y = next(iter(explicit.test.batches(2)))
    assert set(y) == {"label"} and y["label"].numpy().tolist() == [0, 1]


def test_tfrecord_bad_spec_names_the_place(tmp_path):
    write_records(tmp_path / "a.tfrecord", [1, 2])
    load = get_source("tfrecord")
    path = str(tmp_path / "a.tfrecord")
    with pytest.raises(ValueError, match=r"^data\.params\.features\.value\.dtype: 'float64' is not a TFRecord "
                                         "dtype; valid: float32, int64, string"):
        load(path=path, features={**FEATURES, "value": {"dtype": "float64"}}, inputs=["image"])
    # Said in the config's terms (TensorFlow's was "Key: value.  Can't parse serialized Example" and its
    # function and node names).
    first = r"a\.tfrecord: the first record does not fit data\.params\.features: "
    with pytest.raises(ValueError, match=first + r"feature 'value' holds 2 values; its shape \[3\] takes 3$"):
        load(path=path, features={**FEATURES, "value": {"dtype": "float32", "shape": [3]}}, inputs=["image"])
    with pytest.raises(ValueError, match=first + r"feature 'label' holds int64 values, not float32 ones; give its "
                                                 r"dtype: int64$"):
        load(path=path, features={**FEATURES, "label": "float32"}, inputs=["image"])
    with pytest.raises(ValueError, match=first + r"the record has no feature 'lable'; did you mean 'label' or 'value'\? "
                                                 r"its features: \['image', 'label', 'value'\]$"):
        load(path=path, features={"image": FEATURES["image"], "lable": "int64"}, inputs=["image"])
    with pytest.raises(ValueError, match=r"^data\.params\.path: no TFRecord file matches '.*nothing\*'"):
        load(path=str(tmp_path / "nothing*"), features=FEATURES, inputs=["image"])
    with pytest.raises(ValueError, match=r"^data\.params\.inputs: must list features of data\.params\.features "
                                         r"\(image, label, value\); got \['pixels'\]"):
        load(path=path, features=FEATURES, inputs=["pixels"])


def test_a_tfrecord_image_damaged_inside_is_named_by_file_and_record(tmp_path):
    from multiloss.run.data import read_errors_named
    from multiloss.spec.errors import RunError

    path = tmp_path / "a.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for g in range(6):
            png = bytearray(tf.io.encode_png(np.full((8, 8, 1), g, "uint8")).numpy())
            if g == 4:
                png[png.find(b"IDAT") + 6] ^= 0xFF        # the record whole, the image in it damaged
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(png)])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[g % 3])),
                       "value": tf.train.Feature(float_list=tf.train.FloatList(value=[g, -g]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    splits = get_source("tfrecord")(path={"train": str(path)}, features=FEATURES, inputs=["image"],
                                    val_fraction=0, test_fraction=0)
    with pytest.raises(RunError, match=rf"^1 record\(s\) of the data cannot be read \(found when an epoch read "
                                       rf"them\):\n  {path}, record 4: Invalid PNG data"):
        with read_errors_named(splits.parts()):
            list(splits.train.batches(2))
    write_records(tmp_path / "whole.tfrecord", range(3))
    whole = get_source("tfrecord")(path={"train": str(tmp_path / "whole.tfrecord")}, features=FEATURES,
                                   inputs=["image"], val_fraction=0, test_fraction=0)
    with pytest.raises(tf.errors.InvalidArgumentError):  # an error no check explains passes as it is
        with read_errors_named(whole.parts()):
            tf.debugging.assert_positive(tf.constant([-1.0]))


# --- a run on an image folder; import strings from the cwd ------------------------------------


@pytest.mark.slow
def test_train_a_two_head_model_on_an_image_folder(tmp_path, capsys):
    write_tree(tmp_path / "images", {"cat": 6, "dog": 5, "emu": 5})   # 16 images: 10 train, 2 val, 4 test
    data = run_config(tmp_path, {"source": "image_folder",
                                 "params": {"path": str(tmp_path / "images"), "color_mode": "grayscale",
                                            "val_fraction": 0.15, "test_fraction": 0.25}})
    data["model"]["params"]["heads"]["image"] = {"kind": "reconstruction", "hidden": 8}
    data["loss"]["outputs"] = {"class": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
                               "image": {"loss": "mse"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    run = tmp_path / "runs" / "folder"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"train", "val", "test"} and metrics["epochs"] == 1
    assert {"class_loss", "image_loss", "class_accuracy"} <= set(metrics["splits"]["test"])
    history = json.loads((run / "history.json").read_text())
    assert {"val_class_loss", "val_image_loss"} <= set(history[0])
    # The run's class names are the folder names: predict reports them.
    np.savez(tmp_path / "x.npz", inputs=np.full((2, 8, 8, 1), 0.5, "float32"))
    assert main(["predict", str(run), "--input", str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as p:
        assert p["class"].shape == (2, 3) and set(p["class_class_name"]) <= {"cat", "dog", "emu"}


def test_the_cli_imports_from_the_current_folder(tmp_path, monkeypatch, capsys):
    module = f"cwd_source_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""\
        import numpy as np, tensorflow as tf
        def load():
            x = np.zeros((6, 3), "float32")
            return {"train": tf.data.Dataset.from_tensor_slices((x, {"label": np.arange(6) % 2}))}
    """))
    data = run_config(tmp_path, {"source": f"{module}:load"})
    data["model"] = {"builder": "mlp", "params": {"heads": {"label": {"kind": "classification", "units": 2}}}}
    data["loss"] = {"outputs": {"label": {"loss": "sparse_categorical_crossentropy"}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    try:
        with pytest.raises(SpecError, match=rf"No module named '{module}'"):   # outside the CLI: sys.path only
            load_run_config("run.yaml")
        assert main(["validate", "run.yaml"]) == 0
        assert f"data '{module}:load', model 'mlp'" in capsys.readouterr().out
        assert str(tmp_path) not in sys.path                           # put back after the command
    finally:
        sys.modules.pop(module, None)


@pytest.mark.slow
def test_the_console_script_imports_a_model_from_the_current_folder(tmp_path):
    (tmp_path / "mymodel.py").write_text(textwrap.dedent("""\
        import keras
        def build():
            x = keras.Input((3,), name="x")
            return keras.Model(x, {"score": keras.layers.Dense(1, name="score")(x)})
    """))
    (tmp_path / "spec.yaml").write_text("outputs:\n  score: {loss: mse}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = os.path.join(os.path.dirname(sys.executable), "multiloss")
    out = subprocess.run([exe, "check", "spec.yaml", "--model", "mymodel:build", "--batch", "2"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "score" in out.stdout and "(2, 1)" in out.stdout and "total = " in out.stdout


def test_resume_refuses_an_image_folder_whose_files_changed(tmp_path, capsys):
    """Files added after a run began move images between the drawn splits (test images trained on):
    --resume refuses; with the folder as it was, it resumes."""
    write_tree(tmp_path / "images", {"cat": 6, "dog": 6})
    data = run_config(tmp_path, {"source": "image_folder", "params": {"path": str(tmp_path / "images"),
                                                                     "color_mode": "grayscale"}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    state = json.loads((tmp_path / "runs" / "folder" / "checkpoints" / "state.json").read_text())
    assert set(state["data"]) == {"train", "val", "test"} and all(state["data"].values())
    Image.fromarray(np.full((8, 8), 99, "uint8"), "L").save(tmp_path / "images" / "dog" / "extra.png")
    capsys.readouterr()
    config = (tmp_path / "runs" / "folder" / "config.yaml").read_text()
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--set", "train.epochs=2"]) == 1
    err = capsys.readouterr().err
    assert "the data differs from the run being resumed: the test, train, val splits hold other examples" in err
    assert (tmp_path / "runs" / "folder" / "config.yaml").read_text() == config    # the refused resume's is not
    assert json.loads((tmp_path / "runs" / "folder" / "checkpoints" / "state.json").read_text())["epoch"] == 1
    (tmp_path / "images" / "dog" / "extra.png").unlink()
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--set", "train.epochs=2"]) == 0


WEIGHTED_SOURCE = """\
import keras, numpy as np, tensorflow as tf
def load(key="mask"):
    r = np.random.default_rng(0)
    x = r.random((40, 4, 4, 1)).astype("float32")
    y, w = r.integers(0, 3, (40, 4, 4)), r.random((40, 4, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, {"mask": y}, {key: w}))
    return {"train": ds.take(24), "val": ds.skip(24), "info": {"input_shape": (4, 4, 1)}}
def build(info):
    i = keras.Input(info["input_shape"])
    return keras.Model(i, {"seg": keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(i)})
"""


@pytest.mark.parametrize("layout", ["data", "tasks"])
def test_a_datasets_sample_weights_are_keyed_as_its_y_and_mapped_with_it(tmp_path, monkeypatch, layout):
    """`targets: {seg: mask}` renamed y but not the weights: `multiloss train` then refused the weight key
    'mask' from inside the step (`<spec>: sample_weight`), after validate had passed; a run of tasks left
    such a head unweighted."""
    module = f"weighted_source_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(WEIGHTED_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = run_config(tmp_path, {"source": f"{module}:load"}, batch_size=16, verbose=0)
    raw.update(model={"builder": f"{module}:build"}, targets={"seg": "mask"},
               loss={"outputs": {"seg": {"loss": "sparse_categorical_crossentropy", "reduction": "weighted_mean"}}})
    if layout == "tasks":                        # one task labelled for seg (its name)
        raw["tasks"] = {"seg": {"data": raw.pop("data")}}
    data = raw["data"] if layout == "data" else raw["tasks"]["seg"]["data"]
    from multiloss.run.train import train
    train(raw)
    import keras

    src = sys.modules[module].load()
    x, y, w = (np.stack([np.asarray(e[i]) if i == 0 else np.asarray(e[i]["mask"]) for e in src["val"]])
               for i in range(3))
    p = keras.saving.load_model(tmp_path / "runs" / "folder" / "model.keras").predict(x, verbose=0)["seg"]
    ce = -np.log(np.take_along_axis(p.astype("float64"), y[..., None], -1)[..., 0])
    metrics = json.loads((tmp_path / "runs" / "folder" / "history.json").read_text())[-1]
    assert metrics["val_seg_loss"] == pytest.approx((w * ce).sum() / w.sum(), rel=1e-5)   # one val batch of 16
    assert abs(metrics["val_seg_loss"] - ce.mean()) > 1e-3                               # the weights count
    data["params"], raw["name"] = {"key": "msk"}, "typo"
    with pytest.raises(SpecError, match=r"data(\.source)?: .*the train data's sample weights have the key 'msk', "
                                        r"which is no data target or head: key them as its y is .*did you mean 'mask'\?"):
        train(raw)
    data["params"], raw["name"] = {"key": "seg"}, "by_head"      # keyed by the head: as before, taken
    train(raw)
    by_head = json.loads((tmp_path / "runs" / "by_head" / "history.json").read_text())[-1]
    assert by_head["val_seg_loss"] == pytest.approx(metrics["val_seg_loss"], rel=1e-6)
    data["params"], raw["name"] = {"key": "mask"}, "typo"
    train(raw)                                   # the fixed rerun is not refused
