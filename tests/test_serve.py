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


def test_predict_on_an_incremental_runs_model_names_its_classes(tmp_path):
    """An incremental run folder: model.keras (inputs -> one score per seen class) and classes.json."""
    folder = tmp_path / "inc"
    folder.mkdir()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="scores")])
    model.save(folder / "model.keras")
    (folder / "classes.json").write_text(json.dumps({"class_names": ["cat", "dog", "owl"]}))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    main(["predict", str(folder), "--input", str(tmp_path / "x.npz")])
    with np.load(folder / "predictions.npz") as got:
        ids = model.predict(x, verbose=0).argmax(-1)
        np.testing.assert_array_equal(got["scores_class"], ids)
        assert got["scores_class_name"].tolist() == [["cat", "dog", "owl"][i] for i in ids]
