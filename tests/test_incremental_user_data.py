"""Class-incremental learning on users' data: PNG class folders (kept as file paths), tf.data
sources, a saved .keras backbone cut at a layer, model.keras and classes.json after every step,
and train.augment in both run kinds (training batches only; teachers and herding see clean images).

Every image written here is 8×8 grey, ``20·class + 3·index + 2·column`` in each row: it names its
class and index, and is not its own mirror image, so a horizontal flip shows.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image
from test_data_sources import run_config

import multiloss as ml
from multiloss.cli.commands import main
from multiloss.incremental import ExemplarMemory, IncrementalNet, herding_order
from multiloss.incremental import learner as learner_module
from multiloss.incremental.config import load_incremental_config
from multiloss.incremental.memory import normalize
from multiloss.incremental.methods import Step
from multiloss.incremental.network import cnn, saved_backbone
from multiloss.incremental.runner import Scenario, make_learner
from multiloss.run.config import load_run_config
from multiloss.run.data import Part, Splits
from multiloss.run.train import load_splits, prepare, train_batches
from multiloss.spec.errors import SpecError

CLASSES = ["ant", "bee", "cat", "dog"]


def pixels(c: int, i: int) -> np.ndarray:
    return np.tile(20 * c + 3 * i + 2 * np.arange(8), (8, 1)).astype("uint8")


def write_folders(root: Path, per_class: int = 6) -> dict[str, np.ndarray]:
    """``root/<class>/<i>.png`` for the four classes; ``{path: pixels in [0, 1] as [8, 8, 1]}``."""
    made = {}
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / f"{i}.png"
            Image.fromarray(pixels(c, i), "L").save(path)
            made[str(path)] = pixels(c, i)[..., None].astype("float32") / 255
    return made


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path), "float32")[..., None] / 255


def incremental_config(tmp_path, data: dict, **extra) -> dict:
    cfg = {"name": "mine", "seed": 0, "data": data,
           "model": {"builder": "cnn", "params": {"filters": [4], "dense": 8}},
           "scenario": {"class_order": [2, 0, 3, 1], "initial": 2, "increment": 2},
           "memory": {"per_class": 2}, "method": {"name": "replay"},
           "optimizer": {"name": "sgd", "params": {"learning_rate": 0.05}},
           "train": {"epochs": 1, "batch_size": 4}, "output_dir": str(tmp_path / "runs")}
    cfg.update(extra)
    return cfg


def folder_data(root: Path) -> dict:
    return {"source": "image_folder", "params": {"path": str(root), "color_mode": "grayscale",
                                                 "val_fraction": 0.0, "test_fraction": 0.25}}


# --- image folders: file paths, read when the network sees them -----------------------------------


def test_image_folder_scenario_keeps_file_paths(tmp_path):
    made = write_folders(tmp_path / "images")
    scenario = Scenario(load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"))))
    assert scenario.class_names == ["cat", "ant", "dog", "bee"]          # class_order [2, 0, 3, 1], by folder name
    train, test = scenario.parts["train"], scenario.parts["test"]
    assert train.x.dtype.names == ("path", "label") and len(train.x) + len(test.x) == 24   # 18 + 6, no pixels
    for part in (train, test):
        for (path, label), position in zip(part.x, part.y):
            assert CLASSES[label] == Path(path).parent.name                # the folder's class id ...
            assert scenario.class_names[position] == Path(path).parent.name   # ... as its position in the order
    rows = train.x[[5, 0, 11]]
    np.testing.assert_allclose(scenario.reader(rows), np.stack([made[p] for p in rows["path"]]), atol=1e-6)
    assert scenario.info["input_shape"] == (8, 8, 1)


def test_memory_of_file_paths_herds_on_the_features(tmp_path):
    write_folders(tmp_path / "images")
    cfg = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"),
                                                     memory={"per_class": 3}, method={"name": "icarl"}))
    scenario = Scenario(cfg)
    learner = make_learner(cfg, scenario, cfg.make_method())
    x, y = scenario.parts["train"].x, scenario.parts["train"].y
    learner.memory.add(x, y, [0, 1], features=learner.net.features)
    for c in (0, 1):                       # herding on the features of the images read independently
        rows = np.flatnonzero(y == c)
        images = np.stack([read_png(p) for p in x["path"][rows]])
        feats = np.asarray(learner.net.backbone(images, training=False))
        expected = x["path"][rows[herding_order(normalize(feats), 3)]]
        assert learner.memory.exemplars(c)["path"].tolist() == expected.tolist()
    learner.memory.save(tmp_path / "memory.npz")                             # paths in the file, no pickle
    loaded = ExemplarMemory.load(tmp_path / "memory.npz")
    assert loaded.exemplars(1)["path"].tolist() == learner.memory.exemplars(1)["path"].tolist()
    assert np.load(tmp_path / "memory.npz", allow_pickle=False)["class_0"].dtype.names == ("path", "label")


def test_an_image_that_cannot_be_decoded_is_named_when_read(tmp_path):
    write_folders(tmp_path / "images")
    damaged = tmp_path / "images" / "bee" / "3.png"
    raw = bytearray(damaged.read_bytes())
    raw[raw.find(b"IDAT") + 6] ^= 0xFF        # the data damaged, the end intact: passes the load-time checks
    damaged.write_bytes(raw)
    scenario = Scenario(load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"))))
    rows = np.concatenate([scenario.parts[s].x for s in ("train", "test")])
    rows = rows[np.argsort(rows["path"] != str(damaged), kind="stable")][:4]   # the damaged one among 4
    with pytest.raises(ml.RunError, match=rf"^{damaged} cannot be read: Invalid PNG data, size {len(raw)}; remove "
                                         "or replace it"):
        scenario.reader(rows)


def test_a_class_without_training_images_is_refused_before_training(tmp_path):
    write_folders(tmp_path / "images")
    for f in sorted((tmp_path / "images" / "bee").iterdir())[1:]:
        f.unlink()                            # bee: one image, drawn into test (seed 0, test_fraction 0.25)
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"),
                             scenario={"class_order": [2, 0, 3, 1], "initial": 1, "increment": 1})
    with pytest.raises(SpecError, match=r"data: data source 'image_folder' failed: data\.params\.path: class 'bee' "
                                        r"\(.*/images/bee\) has 1 image, drawn into test"):
        Scenario(load_incremental_config(cfg))


def test_a_test_split_without_the_first_steps_classes_is_refused_before_training(tmp_path):
    """Its accuracy after the first step would be undefined (the run crashed in predict on no samples)."""
    import shutil

    write_folders(tmp_path / "images" / "train")
    write_folders(tmp_path / "images" / "test", per_class=2)
    for name in ("cat", "ant"):                # the first step's classes (class_order [2, 0, 3, 1])
        shutil.rmtree(tmp_path / "images" / "test" / name)
    data = {"source": "image_folder", "params": {"path": str(tmp_path / "images"), "color_mode": "grayscale",
                                                 "val_fraction": 0}}
    with pytest.warns(UserWarning, match="has no images of the classes"), pytest.raises(
            SpecError, match=r"data\.source: the test split has no example of the first step's classes \('cat', "
                             r"'ant'\), so their accuracy after it is undefined"):
        Scenario(load_incremental_config(incremental_config(tmp_path, data)))
    with pytest.warns(UserWarning, match="has no images of the classes"):
        scenario = Scenario(load_incremental_config(incremental_config(
            tmp_path, data, scenario={"class_order": [3, 1, 2, 0], "initial": 2, "increment": 2})))
    assert scenario.class_names[:2] == ["dog", "bee"]


# --- a user's tf.data source ---------------------------------------------------------------------

def examples(n: int, offset: int):
    """``n`` examples per class of 4: x is [3] = (class, index, offset), y the class id."""
    c = np.repeat(np.arange(4), n).astype("int32")
    x = np.stack([c, np.tile(np.arange(n), 4), np.full(4 * n, offset)], axis=1).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, {"class": c}))


def tf_data_source():
    return {"train": examples(5, 0), "test": examples(2, 1), "info": {"class_names": ["w", "x", "y", "z"]}}


def no_class_target():
    ds = examples(2, 0).map(lambda x, y: (x, {"kind": y["class"]}))
    return {"train": ds, "test": ds}


def test_a_tf_data_source_is_read_into_arrays(tmp_path):
    cfg = load_incremental_config(incremental_config(tmp_path, {"source": "test_incremental_user_data:tf_data_source"},
                                                     model={"builder": "mlp", "params": {"hidden": [4]}}))
    scenario = Scenario(cfg)
    train = scenario.parts["train"]
    assert train.x.shape == (20, 3) and scenario.class_names == ["y", "w", "z", "x"]
    order = np.asarray(scenario.order)
    np.testing.assert_array_equal(order[train.y], train.x[:, 0])           # position -> class id = x's first value
    assert scenario.parts["val"] is None and len(scenario.parts["test"].x) == 8
    # A user's dataset is not digested for --resume (its order may change between processes); files are.
    assert scenario.digests == {"train": None, "test": None}
    with pytest.raises(SpecError, match=r"data.source: the train split has no `class` target \(class ids\); its "
                                        r"targets: \['kind'\]"):
        Scenario(load_incremental_config(incremental_config(
            tmp_path, {"source": "test_incremental_user_data:no_class_target"}, model={"builder": "mlp"})))


def lacks_a_test_class():
    """Class 3 (``z``) in the train split only."""
    return {"train": examples(5, 0), "test": examples(2, 1).filter(lambda x, y: y["class"] != 3),
            "info": {"class_names": ["w", "x", "y", "z"]}}


def test_an_unmeasured_task_prints_n_a_and_is_left_out_of_backward_transfer(tmp_path, capsys):
    """Task 1 is class z, which has no test examples: the step lines, the summary and `evaluate` print
    n/a for it (the step line and evaluate printed nan), and the task-aware backward transfer is over
    task 0 (it was null whenever a diagonal entry was unmeasured)."""
    from multiloss.incremental import runner

    cfg = incremental_config(tmp_path, {"source": "test_incremental_user_data:lacks_a_test_class"},
                             model={"builder": "mlp", "params": {"hidden": [4]}},
                             scenario={"class_order": [2, 0, 3, 1], "initial": 2, "increment": 1})
    summary = runner.run_incremental(cfg)
    out = capsys.readouterr().out
    assert re.search(r"step 1: 3 classes.*\(tasks \d\.\d{3} n/a\)", out), out
    assert re.search(r"step 2: 4 classes.*\(tasks \d\.\d{3} n/a \d\.\d{3}\)", out), out
    assert "nan" not in out
    aware = summary["task_incremental"]["accuracy_matrix"]
    assert aware[1][1] is None and aware[2][1] is None
    assert summary["task_incremental"]["backward_transfer"] == pytest.approx(aware[2][0] - aware[0][0])
    runner.IncrementalKind().evaluate(tmp_path / "runs" / "mine")
    assert re.search(r"\(tasks \d\.\d{3} n/a \d\.\d{3}\)", capsys.readouterr().out)


def two_targets():
    """y has the 4 classes (info's class names are theirs) and their parity."""
    both = examples(3, 0).map(lambda x, y: (x, {"class": y["class"], "parity": y["class"] % 2}))
    return {"train": both, "test": both, "info": {"class_names": ["w", "x", "y", "z"]}}


def one_kind_target():
    return {**no_class_target(), "info": {"class_names": ["w", "x", "y", "z"]}}


def test_info_class_names_are_the_class_targets(tmp_path):
    """A source's info `class_names` name its `class` target (or its only one): `data.target: parity`
    has its own 2 classes, where the info's 4 names made a scenario of 4 classes, two never seen."""
    cfg = incremental_config(tmp_path, {"source": "test_incremental_user_data:two_targets", "target": "parity"},
                             model={"builder": "mlp", "params": {"hidden": [4]}},
                             scenario={"initial": 1, "increment": 1})
    scenario = Scenario(load_incremental_config(cfg))
    assert sorted(scenario.class_names) == ["0", "1"] and scenario.groups == [1, 1]
    cfg["data"] = {"source": "test_incremental_user_data:one_kind_target", "target": "kind"}
    cfg["scenario"] = {"initial": 2, "increment": 2}
    assert sorted(Scenario(load_incremental_config(cfg)).class_names) == ["w", "x", "y", "z"]


def train_lacks_a_class():
    """Class 1 (``x``) in the test split only."""
    return {"train": examples(5, 0).filter(lambda x, y: y["class"] != 1), "test": examples(2, 1),
            "info": {"class_names": ["w", "x", "y", "z"]}}


def test_a_class_without_training_examples_is_named_by_the_scenario(tmp_path):
    cfg = incremental_config(tmp_path, {"source": "test_incremental_user_data:train_lacks_a_class"},
                             model={"builder": "mlp", "params": {"hidden": [4]}})
    with pytest.raises(SpecError, match=r"data.source: class 'x' \(id 1\) has no training examples \(2 in the test "
                                        r"split\); each class of the scenario's steps needs some"):
        Scenario(load_incremental_config(cfg))
    cfg["scenario"] = {"class_order": [2, 0, 3, 1], "initial": 2, "increment": 1, "steps": 2}   # x not in a step
    assert Scenario(load_incremental_config(cfg)).groups == [2, 1]



def _species_csv(path: Path) -> None:
    """Three features, a `color` text target (2 values, listed first) and a `species` one (4)."""
    rng = np.random.default_rng(0)
    species = ["owl", "emu", "kiwi", "auk"]
    rows = ["f1,f2,f3,color,species"]
    for i in range(48):
        s = i % 4
        rows.append(f"{s + rng.normal(0, 0.1):.3f},{rng.normal():.3f},{-s:.1f},{['red', 'tan'][i % 2]},{species[s]}")
    path.write_text("\n".join(rows) + "\n")


def test_a_csv_names_its_class_column_with_data_target(tmp_path):
    """`data.target` names the column of class ids: its own names and count, not those of the first
    text column (`color`), which a table's info gives as num_classes."""
    from multiloss.incremental import runner

    _species_csv(tmp_path / "birds.csv")
    data = {"source": "csv", "target": "species",
            "params": {"path": str(tmp_path / "birds.csv"), "inputs": ["f1", "f2", "f3"],
                       "targets": ["color", "species"], "val_fraction": 0.0, "test_fraction": 0.25}}
    cfg = incremental_config(tmp_path, data, model={"builder": "mlp", "params": {"hidden": [4]}})
    scenario = Scenario(load_incremental_config(cfg))
    # species ids are of its sorted names: auk 0, emu 1, kiwi 2, owl 3; the class order is [2, 0, 3, 1].
    assert scenario.class_names == ["kiwi", "auk", "owl", "emu"] and scenario.groups == [2, 2]
    train = scenario.parts["train"]
    ids = np.asarray(scenario.order)[train.y]          # position -> species id; f3 is -(index in the file list)
    np.testing.assert_array_equal(np.asarray(["auk", "emu", "kiwi", "owl"])[ids],
                                  np.asarray(["owl", "emu", "kiwi", "auk"])[(-train.x[:, 2]).astype(int)])
    summary = runner.run_incremental(cfg, quiet=True)
    assert len(summary["steps"]) == 2
    classes = json.loads((tmp_path / "runs" / "mine" / "classes.json").read_text())
    assert classes["class_names"] == ["kiwi", "auk", "owl", "emu"]
    # A misspelt target is named where it is written, with the targets the source has.
    cfg["data"]["target"] = "specis"
    with pytest.raises(SpecError, match=r"data.target: the train split has no `specis` target \(class ids\); "
                                        r"did you mean 'species'\? its targets: \['color', 'species'\]"):
        Scenario(load_incremental_config(cfg))
    # Without it, the source is at fault, and the fix is said.
    del cfg["data"]["target"]
    with pytest.raises(SpecError, match=r"data.source: the train split has no `class` target .*set `data.target` "
                                        r"to the one that holds the class ids"):
        Scenario(load_incremental_config(cfg))


# --- a user's backbone builder and method settings, checked before training -----------------------

def dense_layer(info):
    return keras.layers.Dense(4)


def unbuilt_sequential(info):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)])


def feature_maps(info):
    x = keras.Input(info["input_shape"])
    return keras.Model(x, keras.layers.Conv2D(2, 3)(x))


def other_inputs(info):
    x = keras.Input((16, 16, 1))
    return keras.Model(x, keras.layers.Dense(4)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("builder, message", [
    ("dense_layer", "it returned a Dense, not a keras.Model"),
    ("unbuilt_sequential", r"it returned a Sequential without inputs \(a Sequential needs a keras.Input first"),
    ("feature_maps", r"the backbone must map its inputs to one feature vector \[B, D\]; it outputs "
                     r"\[\(None, 6, 6, 2\)\]"),
    ("other_inputs", r"it takes inputs shaped \(16, 16, 1\), the data's are \(8, 8, 1\)"),
])
def test_a_users_backbone_that_cannot_be_one_is_named_at_model_builder(tmp_path, builder, message):
    """They were tracebacks from inside the network (AttributeError, ValueError), or (other inputs) passed
    validate and failed at the first batch inside Keras."""
    from multiloss.incremental.runner import IncrementalKind

    write_folders(tmp_path / "images")
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"),
                             model={"builder": f"test_incremental_user_data:{builder}"})
    with pytest.raises(SpecError, match=r"model\.builder: backbone builder 'test_incremental_user_data:"
                                        + builder + "': " + message):
        IncrementalKind().check(cfg)


def tanh_features(info):
    x = keras.Input(info["input_shape"])
    return keras.Model(x, keras.layers.Dense(4, activation="tanh")(x))


@pytest.mark.parametrize("method, builder, where, message", [
    ("podnet", "mlp", "method.name", "method 'podnet' cannot build its network on this backbone: POD "
                                     "distillation needs a backbone with 4-D feature maps"),
    ("memo", "mlp", "method.params.specialized_stages", "the backbone has 1 stage"),
    ("lucir", "test_incremental_user_data:tanh_features", "method.params.features",
     "cannot take the features before the last ReLU of this backbone (its last layer is Dense"),
])
def test_a_method_that_cannot_use_the_backbone_is_named_at_its_key(tmp_path, method, builder, where, message):
    """LUCIR's pre-ReLU features on a backbone without a last ReLU were named at method.name, though the
    message's fix is method.params.features."""
    from multiloss.incremental.runner import IncrementalKind

    cfg = incremental_config(tmp_path, {"source": "test_incremental_user_data:tf_data_source"},
                             model={"builder": builder, "params": {"hidden": [4]} if builder == "mlp" else {}},
                             method={"name": method})
    with pytest.raises(SpecError) as err:
        IncrementalKind().check(cfg)
    assert f"{where}: {message}" in str(err.value), str(err.value)


def test_a_memory_budget_below_the_classes_is_refused_and_a_bad_one_named_once(tmp_path):
    """budget 2 for 4 classes kept [1, 1, 0, 0] exemplars: a class never replayed and, for iCaRL, a zero
    class mean it is almost never predicted by; budget 0 was also reported as "add memory"."""
    write_folders(tmp_path / "images")
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"), memory={"budget": 3},
                             method={"name": "icarl"})
    with pytest.raises(SpecError, match=r"memory\.budget: 3 exemplars cannot keep one of each of the 4 classes "
                                        r"the steps learn.*give budget ≥ 4 or per_class"):
        Scenario(load_incremental_config(cfg))
    cfg["memory"] = {"budget": 4}
    assert Scenario(load_incremental_config(cfg)).groups == [2, 2]
    cfg["memory"] = {"budget": 0}
    with pytest.raises(SpecError) as err:
        load_incremental_config(cfg)
    assert [p[0] for p in err.value.problems] == [("memory", "budget")]
    cfg["memory"] = None                   # no memory at all: what to add
    with pytest.raises(SpecError, match=r"method\.name: method 'icarl' keeps exemplars: add `memory"):
        load_incremental_config(cfg)


def test_lucir_with_one_new_class_a_step_takes_it_as_its_hard_negative(tmp_path):
    """K = 2 hard negatives among one new class failed at step 1 in top_k; K is at most the new classes."""
    from multiloss.incremental.methods import LUCIR, Step

    spec = LUCIR().spec(Step(1, (2, 1)))
    ranking, = [t for t in spec["terms"] if t["name"] == "margin_ranking"]
    assert ranking["loss"]["params"]["k"] == 1
    cfg = incremental_config(tmp_path, {"source": "test_incremental_user_data:tf_data_source"},
                             model={"builder": "mlp", "params": {"hidden": [4]}}, method={"name": "lucir"},
                             scenario={"class_order": [2, 0, 3, 1], "initial": 2, "increment": 1, "steps": 2})
    from multiloss.incremental import runner

    summary = runner.run_incremental(cfg, quiet=True)
    assert len(summary["steps"]) == 2 and all(np.isfinite(s["accuracy"]) for s in summary["steps"])


def test_hidden_folders_inside_a_class_folder_are_not_its_images(tmp_path):
    """A notebook's `a/.ipynb_checkpoints/0-checkpoint.png` was read as an image of class a."""
    from multiloss.run.sources import image_files

    made = write_folders(tmp_path / "images", per_class=2)
    (tmp_path / "images" / "ant" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(pixels(1, 0), "L").save(tmp_path / "images" / "ant" / ".ipynb_checkpoints" / "0-checkpoint.png")
    Image.fromarray(pixels(1, 1), "L").save(tmp_path / "images" / "ant" / "._1.png")
    assert [str(f) for f in image_files(tmp_path / "images" / "ant")] == sorted(
        k for k in made if "/ant/" in k)

# --- a saved Keras model as the backbone ----------------------------------------------------------

def two_head_model(filters: int = 3, units: int = 5) -> keras.Model:
    x = keras.Input((8, 8, 1), name="inputs")
    h = keras.layers.Conv2D(filters, 3, activation="relu", name="conv")(x)
    f = keras.layers.Dense(units, activation="relu", name="embedding")(keras.layers.Flatten(name="flat")(h))
    return keras.Model(x, {"class": keras.layers.Dense(4, name="class")(f),
                           "score": keras.layers.Dense(1, name="score")(f)})


def test_a_saved_model_is_cut_at_its_layer(tmp_path):
    model = two_head_model()
    model.save(tmp_path / "mine.keras")
    backbone = saved_backbone(str(tmp_path / "mine.keras"), "embedding", {"input_shape": (8, 8, 1)})
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    kernel, bias = model.get_layer("conv").get_weights()          # the saved weights, by hand
    conv = np.maximum(np.stack([[[(x[n, r:r + 3, c:c + 3, 0][..., None] * kernel[..., 0, :]).sum((0, 1)) + bias
                                  for c in range(6)] for r in range(6)] for n in range(3)]), 0)
    w, b = model.get_layer("embedding").get_weights()
    np.testing.assert_allclose(backbone(x), np.maximum(conv.reshape(3, -1) @ w + b, 0), rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in backbone.layers] == ["inputs", "conv", "flat", "embedding"]   # heads cut off


def test_model_path_errors_name_the_key_and_the_valid_layers(tmp_path):
    write_folders(tmp_path / "images", per_class=2)
    two_head_model().save(tmp_path / "mine.keras")

    def check(model, pattern):
        with pytest.raises(SpecError, match=pattern):
            cfg = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"), model=model))
            make_learner(cfg, Scenario(cfg), cfg.make_method())

    path = str(tmp_path / "mine.keras")
    check({"path": path, "features": "embeding"},
          rf"model.features: {path} has no layer 'embeding'; did you mean 'embedding'\? valid \(layers with a "
          r"feature vector \[B, D\] output\): flat, embedding, class, score")
    check({"path": path, "features": "conv"},
          r"model.features: the layer 'conv' of .* outputs \(None, 6, 6, 3\), not one feature vector \[B, D\] per "
          r"example; valid: flat, embedding, class, score")
    check({"path": str(tmp_path / "none.keras"), "features": "embedding"}, r"model.path: .*none.keras is not a file")
    check({"path": path}, r"model.features: name the layer of the saved model whose output is the feature vector")
    check({"path": path, "features": "embedding", "builder": "cnn"}, r"model.builder: give model.builder or "
                                                                    r"model.path \(a saved model\), not both")
    (tmp_path / "big").mkdir()
    keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(name="flat")]).save(tmp_path / "big" / "m.keras")
    check({"path": str(tmp_path / "big" / "m.keras"), "features": "flat"},
          r"model.path: .*m.keras takes inputs shaped \(16, 16, 1\), the data's are \(8, 8, 1\)")


# --- augment ---------------------------------------------------------------------------------------

FLIP = [{"random_flip": {"mode": "horizontal"}}]


def flipped_or_not(batch: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Per example: True if it is its original mirrored left-right, False if unchanged (else fail)."""
    out = []
    for b, o in zip(batch, originals):
        same, mirror = np.allclose(b, o), np.allclose(b, o[:, ::-1])
        assert same != mirror, "an example is its original or its mirror image"
        out.append(mirror)
    return np.asarray(out)


def test_augment_changes_train_batches_only_seeded(tmp_path):
    write_folders(tmp_path / "images")
    data = {"source": "image_folder", "params": {"path": str(tmp_path / "images"), "color_mode": "grayscale",
                                                 "val_fraction": 0.25, "test_fraction": 0.0}}

    def batches(augment, split, seed=0):
        cfg = load_run_config(run_config(tmp_path, data, shuffle=False, augment=augment))
        cfg.seed = seed
        splits = load_splits(cfg)
        ds = train_batches(splits, cfg, 0)[0] if split == "train" else prepare(splits.val, cfg, split)
        return [(x.numpy(), y["class"].numpy()) for x, y in ds]

    plain, flipped = batches([], "train"), batches(FLIP, "train")
    mirrored = np.concatenate([flipped_or_not(f[0], p[0]) for f, p in zip(flipped, plain)])
    assert 0 < mirrored.sum() < len(mirrored)                           # some flipped, some not
    assert all((f[1] == p[1]).all() for f, p in zip(flipped, plain))   # targets untouched
    again = batches(FLIP, "train")
    assert all(np.array_equal(a[0], f[0]) for a, f in zip(again, flipped))            # the run's seed: the same draws
    other = np.concatenate([flipped_or_not(f[0], p[0]) for f, p in zip(batches(FLIP, "train", seed=1),
                                                                         batches([], "train", seed=1))])
    assert not np.array_equal(other, mirrored)                        # (the seed draws the split too)
    val_plain, val_aug = batches([], "val"), batches(FLIP, "val")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(val_aug, val_plain))        # validation: never augmented
    cfg = load_run_config(run_config(tmp_path, data, shuffle=False, augment=FLIP))
    evaluated = [x.numpy() for x, _ in prepare(load_splits(cfg).train, cfg, "train")]   # the train split's metrics
    assert all(np.array_equal(e, p[0]) for e, p in zip(evaluated, plain)) and len(evaluated) == len(plain)

    # Arrays: fit trains on a seeded, batched, augmented pipeline; the arrays themselves stay as they were.
    cfg = load_run_config(run_config(tmp_path, {"source": "digits"}, shuffle=False, augment=FLIP))
    cfg.train.epochs = 1
    x = np.stack([pixels(c, i)[..., None] / 255 for c in range(4) for i in range(3)]).astype("float32")
    y = {"class": np.repeat(np.arange(4), 3).astype("int32")}
    ds, steps = train_batches(Splits(Part(x, y), None, None), cfg, 0)
    got = [(b.numpy(), t["class"].numpy()) for b, t in ds]
    assert [len(b) for b, _ in got] == [4, 4, 4] and steps == 3
    mirror = flipped_or_not(np.concatenate([b for b, _ in got]), x)
    assert 0 < mirror.sum() < 12 and np.array_equal(np.concatenate([t for _, t in got]), y["class"])
    assert x[0, 0, 0, 0] == 0                                           # the arrays are not changed in place


def test_augment_errors_name_the_entry(tmp_path):
    write_folders(tmp_path / "images", per_class=2)
    bad = incremental_config(tmp_path, folder_data(tmp_path / "images"),
                             train={"augment": [{"random_flip": {"mode": "horizontal"}}, {"random_fip": None},
                                                {"random_translation": {"height_factor": 0.1, "widht_factor": 0.1}}]})
    (tmp_path / "inc.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(SpecError) as info:
        load_incremental_config(tmp_path / "inc.yaml")
    text = str(info.value)
    assert "train.augment.1.random_fip: unknown augmentation layer 'random_fip'; did you mean 'random_flip'" in text
    assert "train.augment.2.random_translation.widht_factor: unknown parameter 'widht_factor'; did you mean " \
           "'width_factor' or 'height_factor'?" in text
    assert "train.augment.2.random_translation: random_translation needs `width_factor`" in text
    # A crop smaller than the images would feed the model a size it never sees at evaluation.
    cfg = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"),
                                                     train={"augment": [{"random_crop": {"height": 6, "width": 6}}]}))
    with pytest.raises(SpecError, match=r"train.augment.0.random_crop: the augmentations turn inputs shaped "
                                        r"\(8, 8, 1\) into \(6, 6, 1\); they must keep the shape"):
        make_learner(cfg, Scenario(cfg), cfg.make_method())
    padded = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"),
                                                        train={"augment": [{"random_crop": {"padding": 2}}]}))
    augment = make_learner(padded, Scenario(padded), padded.make_method()).augment(0)
    ones = np.ones((16, 8, 8, 1), "float32")
    out = np.asarray(augment(ones))                      # pad 2 zeros, crop 8×8 back: zeros show at some edges
    assert out.shape == ones.shape and (out == 0).any() and set(np.unique(out)) <= {0.0, 1.0}


def test_incremental_batches_augmented_teacher_on_the_augmented_batch(tmp_path, monkeypatch):
    """Step 1 of LwF with every image mirrored: each batch is its rows mirrored, and the layout's old
    columns are the logits of the network as it was before the stage, on those mirrored images."""
    made = write_folders(tmp_path / "images")
    cfg = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"), memory=None,
                                                     method={"name": "lwf"}))
    scenario = Scenario(cfg)
    learner = make_learner(cfg, scenario, cfg.make_method())
    learner.augment = lambda seed: (lambda x: x[:, :, ::-1])      # a flip of every image, to check exactly
    learner.run_step(cfg.make_method(), scenario.step(0))
    learner.net.expand(4)
    before = [w.copy() for w in learner.net.get_weights()]
    made_batches = []
    real = learner_module.stage_batches

    def recording(*args, **kwargs):
        made_batches.append(real(*args, **kwargs))
        return made_batches[-1]

    monkeypatch.setattr(learner_module, "stage_batches", recording)
    x, labels = learner.train.of([2, 3])
    step = Step(1, (2, 2))
    learner.fit("train", cfg.make_method().spec(step), x, labels, step)
    assert any(not np.allclose(a, b) for a, b in zip(before, learner.net.get_weights()))   # it trained
    old = IncrementalNet(cnn(scenario.info, filters=[4], dense=8))     # the network before the stage, rebuilt
    old.expand(4)
    old.set_weights(before)
    rows_seen = []
    for xb, yb in made_batches[0].as_numpy_iterator():
        originals = np.stack([made[str(p)] for p in x["path"]])
        match = [int(np.flatnonzero([np.allclose(b[:, ::-1], o) for o in originals])[0]) for b in xb]
        rows_seen += match
        np.testing.assert_allclose(yb["target"][:, :2], np.asarray(old.logits(xb))[:, :2], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(yb["target"][:, 2:], np.eye(4)[labels[match]][:, 2:])
    assert sorted(rows_seen) == list(range(len(x)))                  # every row once an epoch


def test_herding_and_the_teacher_see_unaugmented_images(tmp_path):
    write_folders(tmp_path / "images")
    cfg = load_incremental_config(incremental_config(tmp_path, folder_data(tmp_path / "images"),
                                                     method={"name": "icarl"}, train={"epochs": 1, "batch_size": 4,
                                                                                     "augment": FLIP}))
    scenario = Scenario(cfg)
    learner = make_learner(cfg, scenario, cfg.make_method())
    learner.run_step(cfg.make_method(), scenario.step(0))
    x, y = scenario.parts["train"].x, scenario.parts["train"].y
    for c in (0, 1):                          # after training: herding on the clean images' features
        rows = np.flatnonzero(y == c)
        feats = np.asarray(learner.net.backbone(np.stack([read_png(p) for p in x["path"][rows]]), training=False))
        assert learner.memory.exemplars(c)["path"].tolist() == x["path"][rows[herding_order(normalize(feats), 2)]].tolist()


# --- end to end: folders, a saved backbone, model.keras in a fresh process ------------------------------------------

LOAD = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    import numpy as np
    import multiloss, keras
    from PIL import Image
    run, images = Path(sys.argv[1]), Path(sys.argv[2])
    model = keras.saving.load_model(run / "model.keras")
    names = json.loads((run / "classes.json").read_text())["class_names"]
    files = [Path(f) for f in json.loads((run / "test_files.json").read_text())]
    x = np.stack([np.asarray(Image.open(f), "float32")[..., None] / 255 for f in files])
    scores = np.asarray(model.predict(x, verbose=0))
    print(json.dumps({"shape": list(scores.shape), "predicted": [names[i] for i in scores.argmax(-1)]}))
""")


@pytest.mark.slow
def test_folders_and_a_saved_backbone_end_to_end(tmp_path):
    made = write_folders(tmp_path / "images", per_class=10)
    keras.utils.set_random_seed(0)
    model = two_head_model(filters=8, units=16)      # the user's network, trained on two of the classes first
    first = [p for p in made if Path(p).parent.name in ("cat", "ant")]
    model.compile("adam", {"class": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "score": "mse"})
    model.fit(np.stack([made[p] for p in first]), {"class": np.asarray([CLASSES.index(Path(p).parent.name)
                                                                        for p in first]),
                                                   "score": np.zeros(len(first))}, epochs=30, verbose=0)
    model.save(tmp_path / "mine.keras")
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"),
                             model={"path": str(tmp_path / "mine.keras"), "features": "embedding"},
                             method={"name": "icarl"}, memory={"per_class": 3},
                             train={"epochs": 15, "batch_size": 8, "augment": FLIP})
    (tmp_path / "inc.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    scenario = Scenario(load_incremental_config(tmp_path / "inc.yaml"))
    test_files = scenario.parts["test"].x["path"].tolist()
    truth = [Path(f).parent.name for f in test_files]
    run = tmp_path / "runs" / "mine"
    (tmp_path / "script.py").write_text(LOAD)
    for steps in (1, 2):      # after step 0 (2 classes), then after step 1 (4 classes)
        assert main(["incremental", str(tmp_path / "inc.yaml"), "--set", f"scenario.steps={steps}",
                     *(["--overwrite"] if steps == 2 else [])]) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        classes = json.loads((run / "classes.json").read_text())
        assert classes["class_names"] == ["cat", "ant", "dog", "bee"][: 2 * steps]
        assert classes["class_ids"] == [2, 0, 3, 1][: 2 * steps] and classes["classifier"] == "nme"
        (run / "test_files.json").write_text(json.dumps(test_files))
        out = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(run), str(tmp_path / "images")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        seen = [i for i, t in enumerate(truth) if t in classes["class_names"]]
        assert got["shape"] == [len(truth), 2 * steps]
        accuracy = np.mean([got["predicted"][i] == truth[i] for i in seen])
        assert accuracy == pytest.approx(metrics["last_accuracy"])       # the saved model is the evaluated one
    assert metrics["last_accuracy"] > 0.5
    memory = ExemplarMemory.load(run / "checkpoints" / json.loads((run / "checkpoints" / "state.json").read_text())
                                 ["memory"])
    assert all(Path(p).is_file() for c in memory.classes for p in memory.exemplars(c)["path"])


def test_resume_refuses_an_image_folder_whose_files_changed(tmp_path, monkeypatch):
    """An incremental run interrupted after step 0, its image folder then given one more image: the drawn
    splits would differ (a step-0 test image trained on), so --resume refuses; put back, it resumes."""
    from multiloss.incremental import runner
    from multiloss.spec.errors import RunError

    write_folders(tmp_path / "images")
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"))
    learn_step = runner.learn_step

    def interrupted(cfg, scenario, method, learner, t):
        if t == 1:
            raise KeyboardInterrupt
        return learn_step(cfg, scenario, method, learner, t)

    monkeypatch.setattr(runner, "learn_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_incremental(cfg, quiet=True)
    monkeypatch.setattr(runner, "learn_step", learn_step)
    extra = tmp_path / "images" / "ant" / "9.png"
    Image.fromarray(pixels(0, 9), "L").save(extra)
    with pytest.raises(RunError, match=r"the data differs from the run being resumed: the test, train splits hold "
                                       r"other examples than when the run began"):
        runner.run_incremental(cfg, resume=True, quiet=True)
    extra.unlink()
    summary = runner.run_incremental(cfg, resume=True, quiet=True)
    assert len(summary["steps"]) == 2


def test_class_order_by_the_folders_names(tmp_path):
    """`class_order: [cat, ant, dog, bee]` was "Input should be a valid integer"; a folder user knows the
    names, not the ids (the sorted folder names: ant 0, bee 1, cat 2, dog 3)."""
    write_folders(tmp_path / "images")
    cfg = incremental_config(tmp_path, folder_data(tmp_path / "images"),
                             scenario={"class_order": ["cat", "ant", "dog", 1], "initial": 2, "increment": 2})
    scenario = Scenario(load_incremental_config(cfg))
    assert scenario.order == [2, 0, 3, 1] and scenario.class_names == ["cat", "ant", "dog", "bee"]
    cfg["scenario"]["class_order"] = ["cat", "ant", "dgo", "bee"]
    with pytest.raises(SpecError, match=r"scenario\.class_order\.2: the data has no class named 'dgo'; did you mean "
                                        r"'dog'\? its classes \(name=id\): ant=0, bee=1, cat=2, dog=3"):
        Scenario(load_incremental_config(cfg))
