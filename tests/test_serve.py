"""`multiloss export` and `multiloss predict`: a trained run served where multiloss cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from multiloss.cli.commands import main
from multiloss.run.train import default_config_path, train

SERVE = textwrap.dedent("""\
    import json, sys
    sys.modules["multiloss"] = None          # `import multiloss` fails here
    try:
        import multiloss
    except ImportError:
        pass
    else:
        raise SystemExit("multiloss was importable")
    import numpy as np, keras, tensorflow as tf
    x = dict(np.load(sys.argv[3]))
    plain = keras.saving.load_model(sys.argv[1])
    loaded = tf.saved_model.load(sys.argv[2])    # kept: its variables must outlive the call
    served = loaded.serve({k: tf.constant(v) for k, v in x.items()})
    print(json.dumps({"keras": {k: np.asarray(v).tolist() for k, v in plain.predict(x, verbose=0).items()},
                      "saved_model": {k: np.asarray(v).tolist() for k, v in served.items()}}))
""")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    train(default_config_path(), [f"output_dir={out}", "train.epochs=1", "train.verbose=0",
                                  "data.params.pairs_per_image=0.25"])
    return out / "siamese_digits"


def _inputs(path, n=5):
    rng = np.random.default_rng(0)
    x = {k: rng.random((n, 8, 8, 1)).astype("float32") for k in ("image_a", "image_b")}
    np.savez(path, **x)
    return x


def _plain_run(folder):
    """A run folder holding a Functional model of Keras's own layers, compiled with ml.compile."""
    import multiloss as ml

    keras.utils.set_random_seed(0)
    a, b = keras.Input((8, 8, 1), name="image_a"), keras.Input((8, 8, 1), name="image_b")
    h = keras.layers.Dense(6, activation="relu")(keras.layers.Flatten()(keras.layers.Concatenate()([a, b])))
    model = keras.Model([a, b], {"ctg_out_1": keras.layers.Dense(10, activation="softmax", name="ctg_out_1")(h),
                                 "score": keras.layers.Dense(1, name="score")(h)})
    ml.compile(model, "outputs: {ctg_out_1: {loss: sparse_categorical_crossentropy}, score: {loss: mse}}",
               optimizer="adam")
    folder.mkdir()
    model.save(folder / "model.keras")
    return folder


def test_exported_models_serve_without_multiloss(run, tmp_path, capsys):
    plain = _plain_run(tmp_path / "plain")
    assert main(["export", str(run)]) == 0                              # the Siamese run: a SavedModel
    assert main(["export", str(plain), "--format", "keras"]) == 0
    printed = capsys.readouterr().out
    assert "input  image_a: [B, 8, 8, 1] float32" in printed and "output ctg_out_1: [B, 10]" in printed
    keras_file, saved_model = plain / "export" / "model.keras", run / "export" / "saved_model"
    assert keras_file.is_file() and (saved_model / "saved_model.pb").is_file()
    assert "multiloss" not in zipfile.ZipFile(keras_file).read("config.json").decode()
    # The Siamese network has a layer of multiloss's own: its .keras form would need multiloss.
    assert main(["export", str(run), "--format", "keras"]) == 1
    assert "not Keras's own (AbsDifference)" in capsys.readouterr().err
    x = _inputs(tmp_path / "x.npz")
    (tmp_path / "serve.py").write_text(SERVE)
    child = subprocess.run([sys.executable, str(tmp_path / "serve.py"), str(keras_file), str(saved_model),
                            str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    for way, folder in (("keras", plain), ("saved_model", run)):
        want = keras.saving.load_model(folder / "model.keras").predict(x, verbose=0)
        assert set(got[way]) == set(want), way
        for head, value in want.items():
            np.testing.assert_allclose(got[way][head], value, rtol=1e-5, atol=1e-6, err_msg=f"{way} {head}")


def test_predict_writes_named_outputs_classes_and_class_names(run, tmp_path):
    x = _inputs(tmp_path / "x.npz")
    assert main(["predict", str(run), "--input", str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.npz")]) == 0
    want = keras.saving.load_model(run / "model.keras").predict(x, verbose=0)
    got = np.load(tmp_path / "p.npz")
    for head, value in want.items():
        np.testing.assert_allclose(got[head], value, rtol=1e-6)
    np.testing.assert_array_equal(got["ctg_out_1_class"], want["ctg_out_1"].argmax(-1))
    np.testing.assert_array_equal(got["ctg_out_1_class_name"], [str(i) for i in want["ctg_out_1"].argmax(-1)])
    np.testing.assert_array_equal(got["bin_out_class"], want["bin_out"].argmax(-1))
    assert "bin_out_class_name" not in got.files          # 2 classes: the digits' names do not apply


def test_predict_names_a_missing_input_and_export_a_folder_without_a_model(run, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", image_a=np.zeros((2, 8, 8, 1), "float32"), other=np.zeros(2))
    assert main(["predict", str(run), "--input", str(tmp_path / "bad.npz")]) == 1
    assert "has no array 'image_b'; the model's inputs are ['image_a', 'image_b']" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) != 0
    assert "has no model.keras" in capsys.readouterr().err
    # A `seeds:` incremental run: the folder holds one run per seed, each with its model.
    parent = tmp_path / "seeds"
    for s in (0, 1):
        (parent / f"seed-{s}").mkdir(parents=True)
        (parent / f"seed-{s}" / "model.keras").write_bytes(b"")
    (parent / "config.yaml").write_text("name: seeds\n")
    assert main(["predict", str(parent), "--input", str(tmp_path / "bad.npz")]) == 1
    assert f"is a `seeds:` run: each seed's run has its own model.keras; give one of {parent / 'seed-0'}, " \
           f"{parent / 'seed-1'}" in capsys.readouterr().err


def test_predict_on_an_incremental_runs_model_names_its_classes(tmp_path):
    """An incremental run folder: model.keras (inputs -> one score per seen class) and classes.json."""
    folder = tmp_path / "inc"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="scores")])
    model.save(folder / "model.keras")
    # Learnt in the order 7, 2, 5 (the data's class ids): score 0 is class 7's.  scores_class was the
    # score's position (0, 1, 2), not the class id.
    (folder / "classes.json").write_text(json.dumps({"class_names": ["cat", "dog", "owl"], "class_ids": [7, 2, 5]}))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    main(["predict", str(folder), "--input", str(tmp_path / "x.npz")])
    with np.load(folder / "predictions.npz") as got:
        best = model.predict(x, verbose=0).argmax(-1)
        assert got["scores_class"].tolist() == [[7, 2, 5][i] for i in best]
        assert got["scores_class_name"].tolist() == [["cat", "dog", "owl"][i] for i in best]
    # Its SavedModel names the one output as predict does: TF Serving answers with "scores", not
    # Keras's "output_0"; `serve` still returns the tensor.
    assert main(["export", str(folder)]) == 0
    script = tmp_path / "serve_default.py"
    script.write_text(textwrap.dedent("""\
        import json, sys
        sys.modules["multiloss"] = None
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        x = tf.constant(np.load(sys.argv[2])["x"])
        named = loaded.signatures["serving_default"](x)
        print(json.dumps({"names": sorted(named), "named": np.asarray(named["scores"]).tolist(),
                          "serve": np.asarray(loaded.serve(x)).tolist()}))
    """))
    child = subprocess.run([sys.executable, str(script), str(folder / "export" / "saved_model"),
                            str(tmp_path / "x.npz")], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    served = json.loads(child.stdout.strip().splitlines()[-1])
    assert served["names"] == ["scores"]
    np.testing.assert_allclose(served["named"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["serve"], served["named"], rtol=0, atol=0)


def _table_run(tmp_path, folder_name="table"):
    """A run on a csv with a text class target (kind) and an integer one (grade): two heads, two name lists."""
    rng = np.random.default_rng(0)
    lines = ["a,b,kind,grade"] + [f"{rng.normal():.3f},{rng.normal():.3f},{['apple', 'banana', 'cherry'][i % 3]},"
                                  f"{(i // 3) % 3}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    cfg = {"name": folder_name, "output_dir": str(tmp_path / "runs"), "seed": 0,
           "data": {"source": "csv", "params": {"path": "t.csv", "inputs": ["a", "b"],
                                                "targets": ["kind", "grade"]}},
           "model": {"builder": "mlp", "params": {"hidden": [4], "heads": {
               "kind": {"kind": "classification"}, "grade": {"kind": "classification", "units": 3}}}},
           "loss": {"outputs": {"kind": {"loss": "sparse_categorical_crossentropy"},
                                "grade": {"loss": "sparse_categorical_crossentropy"}}},
           "train": {"epochs": 1, "batch_size": 16, "verbose": 0}}
    train(cfg)
    return tmp_path / "runs" / folder_name


def test_predict_names_each_heads_classes_from_its_own_target(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                       # the csv path is relative, as users write it
    run = _table_run(tmp_path)
    x = np.random.default_rng(1).normal(size=(7, 2)).astype("float32")
    np.savez(tmp_path / "x.npz", inputs=x)
    assert main(["predict", str(run), "--input", "x.npz", "--out", "p.npz"]) == 0
    want = keras.saving.load_model(run / "model.keras").predict(x, verbose=0)
    with np.load(tmp_path / "p.npz") as got:
        assert got["kind_class_name"].tolist() == [["apple", "banana", "cherry"][i] for i in want["kind"].argmax(-1)]
        assert got["grade_class_name"].tolist() == [str(i) for i in want["grade"].argmax(-1)]   # not the kinds
    # From another folder the relative csv path does not resolve: said, and the names are left out.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.warns(UserWarning, match=r"no class names written: the run's data source does not load here"):
        assert main(["predict", str(run), "--input", str(tmp_path / "x.npz"), "--out", "p.npz"]) == 0
    with np.load(elsewhere / "p.npz") as got:
        assert "kind_class" in got.files and "kind_class_name" not in got.files


@pytest.mark.parametrize("arrays, message", [
    ({"image_a": np.zeros((2, 64), "float32"), "image_b": np.zeros((2, 8, 8, 1), "float32")},
     r"array 'image_a' has shape \[2, 64\]; the model's input 'image_a' takes \[B, 8, 8, 1\] float32"),
    ({"image_a": np.zeros((8, 8, 1), "float32"), "image_b": np.zeros((8, 8, 1), "float32")},
     r"array 'image_a' has shape \[8, 8, 1\]; .* \(B: any number of rows\)"),
    ({"image_a": np.full((2, 8, 8, 1), "x"), "image_b": np.zeros((2, 8, 8, 1), "float32")},
     r"array 'image_a' holds <U1 values; the model's input 'image_a' takes"),
    ({"image_a": np.zeros((5, 8, 8, 1), "float32"), "image_b": np.zeros((3, 8, 8, 1), "float32")},
     r"different numbers of rows \{'image_a': 5, 'image_b': 3\}"),
    ({"image_a": np.zeros((5, 8, 8, 1), "float32")}, r"has no array 'image_b'"),
    ({"image_a": np.zeros((0, 8, 8, 1), "float32"), "image_b": np.zeros((0, 8, 8, 1), "float32")},
     r"no rows to predict \(its arrays have shapes \{'image_a': \[0, 8, 8, 1\], 'image_b': \[0, 8, 8, 1\]\}\)"),
    (None, r"is not an \.npz \(a zip of \.npy arrays\)"),
    ("missing", r"no such file; give an \.npz of the model's inputs"),
])
def test_predict_refuses_inputs_that_do_not_fit_the_model(run, tmp_path, capsys, arrays, message):
    path = tmp_path / "in.npz"
    if arrays is None:
        path.write_text("a,b\n1,2\n")
    elif isinstance(arrays, dict):
        np.savez(path, **arrays)
    assert main(["predict", str(run), "--input", str(path), "--out", str(tmp_path / "p.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --input {path}") and len(err.splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "p.npz").exists()


def test_export_of_a_sequential_model_and_where_export_may_write(tmp_path, capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    import multiloss as ml

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3, name="label")])
    ml.compile(model, "outputs: {label: {loss: mse}}", optimizer="adam")
    model.save(folder / "model.keras")
    assert main(["export", str(folder), "--format", "keras"]) == 0
    printed = capsys.readouterr().out
    assert "input  input_layer: [B, 6] float32" in printed and "output label: [B, 3] float32" in printed
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    plain = keras.saving.load_model(folder / "export" / "model.keras")
    assert type(plain) is keras.Sequential and not plain.get_compile_config()
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # The SavedModel's signature is printed as TF Serving sees it: its single output named as predict names it.
    assert main(["export", str(folder)]) == 0
    assert "output label: [B, 3] float32" in capsys.readouterr().out
    # --out: a .keras path for --format keras; an existing file that is no SavedModel is never replaced.
    assert main(["export", str(folder), "--format", "keras", "--out", str(tmp_path / "plainfile")]) == 1
    assert "give a path ending in .keras" in capsys.readouterr().err
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    assert main(["export", str(folder), "--out", str(keep)]) == 1
    assert "exists and is not a SavedModel folder" in capsys.readouterr().err and keep.read_text() == "mine"
    assert main(["export", str(folder), "--out", str(tmp_path / "again")]) == 0     # a new folder, and
    assert main(["export", str(folder), "--out", str(tmp_path / "again")]) == 0     # an earlier export: replaced


SUBCLASS_MODULE = textwrap.dedent("""\
    import keras
    from keras import ops


    def scaled_l1(y_true, y_pred, scale=1.0):
        return scale * ops.mean(ops.abs(ops.cast(y_true, y_pred.dtype) - y_pred), axis=-1)


    class Net(keras.Model):
        def __init__(self, num_classes=10, **kw):
            super().__init__(**kw)
            self.num_classes = num_classes
            self.flat = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.cls = keras.layers.Dense(num_classes, activation="softmax")
            self.img = keras.layers.Dense(64)

        def call(self, x):
            h = self.hidden(self.flat(x))
            return {"class": self.cls(h), "image": ops.reshape(self.img(h), (-1, 8, 8, 1))}

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes}


    def build(info):
        return Net(info["num_classes"])
""")


@pytest.mark.slow
def test_export_and_predict_trust_the_runs_own_config_in_a_fresh_process(tmp_path):
    """A run whose loss and model are the user's code (an import-string loss, a subclassed model from a
    builder module): export and predict, each in a new process, load it as evaluate does."""
    (tmp_path / "usercode.py").write_text(SUBCLASS_MODULE)
    (tmp_path / "run.yaml").write_text(textwrap.dedent("""\
        name: user
        data: {source: digits}
        model: {builder: 'usercode:build'}
        loss:
          outputs:
            class: {loss: sparse_categorical_crossentropy}
            image: {loss: {name: 'usercode:scaled_l1', params: {scale: 2.0}}}
        train: {epochs: 1, batch_size: 64, verbose: 0}
    """))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "multiloss", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    done = cli("train", "run.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    np.savez(tmp_path / "x.npz", inputs=x)
    exported, predicted = cli("export", "runs/user"), cli("predict", "runs/user", "--input", "x.npz")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "input  args_0: [B, 8, 8, 1] float32" in exported.stdout   # the served signature, as TF names it
    refused = cli("export", "runs/user", "--format", "keras")
    assert refused.returncode == 1 and "a Net (a subclassed model) has no plain Keras form" in refused.stderr
    serve = tmp_path / "serve_sm.py"
    serve.write_text(textwrap.dedent("""\
        import json, sys
        sys.modules["multiloss"] = None
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        out = loaded.serve(tf.constant(np.load(sys.argv[2])["inputs"]))
        print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
    """))
    child = subprocess.run([sys.executable, str(serve), "runs/user/export/saved_model", "x.npz"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    served = json.loads(child.stdout.strip().splitlines()[-1])
    with np.load(tmp_path / "runs" / "user" / "predictions.npz") as got:
        np.testing.assert_allclose(served["class"], got["class"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served["image"], got["image"], rtol=1e-5, atol=1e-6)
        assert got["class_class_name"].tolist() == [str(i) for i in got["class"].argmax(-1)]
    # The run's model itself, loaded here with the user's module importable and trusted.
    sys.path.insert(0, str(tmp_path))
    try:
        __import__("usercode")
        model = keras.saving.load_model(tmp_path / "runs" / "user" / "model.keras", safe_mode=False)
        want = model.predict(x, verbose=0)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("usercode", None)
    np.testing.assert_allclose(served["class"], want["class"], rtol=1e-5, atol=1e-6)


def test_predict_in_a_folder_with_a_model_and_no_config(tmp_path):
    """model.keras alone (no run config, so no data source): the classes, and no names."""
    import multiloss as ml

    folder = tmp_path / "alone"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="label")])
    ml.compile(model, "outputs: {label: {loss: sparse_categorical_crossentropy}}", optimizer="sgd")
    model.save(folder / "model.keras")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["predict", str(folder), "--input", str(tmp_path / "x.npz")]) == 0
    with np.load(folder / "predictions.npz") as got:
        np.testing.assert_array_equal(got["label_class"], model.predict(x, verbose=0).argmax(-1))
        assert "label_class_name" not in got.files


def test_predict_takes_a_channels_first_heads_classes_from_its_loss_axis(tmp_path):
    """`categorical_crossentropy` with `axis: 1` on [B, C, H, W] (written `cce`): the class per pixel is the
    argmax over C, as the loss and the head's metrics read it; predict took it over W ([B, C, H])."""
    import multiloss as ml

    folder = tmp_path / "cf"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    x = keras.Input((3, 5, 2))
    scores = keras.layers.Softmax(axis=1, name="seg")(keras.layers.Permute((3, 1, 2))(
        keras.layers.Conv2D(4, 1)(x)))                                  # [B, 4, 3, 5]
    model = keras.Model(x, scores)
    ml.compile(model, "outputs: {seg: {loss: {name: cce, params: {axis: 1}}}}", optimizer="sgd")
    model.save(folder / "model.keras")
    xs = np.random.default_rng(0).normal(size=(6, 3, 5, 2)).astype("float32")
    np.savez(tmp_path / "x.npz", x=xs)
    assert main(["predict", str(folder), "--input", str(tmp_path / "x.npz")]) == 0
    with np.load(folder / "predictions.npz") as got:
        assert got["seg_class"].shape == (6, 3, 5)
        np.testing.assert_array_equal(got["seg_class"], model.predict(xs, verbose=0).argmax(1))


def test_export_of_a_model_with_variable_sized_inputs(tmp_path):
    """A fully convolutional model (inputs [B, None, None, 1]) exported before the named-output change;
    calling it on zeros of its input shape to count its outputs raised a TypeError."""
    folder = tmp_path / "fcn"
    folder.mkdir()
    x = keras.Input((None, None, 1))
    model = keras.Model(x, keras.layers.Conv2D(2, 1, name="mask")(x))
    model.save(folder / "model.keras")
    assert main(["export", str(folder)]) == 0
    assert (folder / "export" / "saved_model" / "saved_model.pb").is_file()
