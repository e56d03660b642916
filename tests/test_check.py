"""``multiloss check`` without --data: synthetic targets each loss accepts, or a SpecError."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.cli.commands import main
from multiloss.run.synthetic import synthetic_targets


def ctc_model():
    """Frames [B, 12, 5] -> per-frame logits over 6 symbols (0 = blank) and a score."""
    x = keras.Input((12, 5), name="frames")
    h = keras.layers.Dense(8, activation="relu")(x)
    score = keras.layers.Dense(1, name="score")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(x, {"text": keras.layers.Dense(6, name="text")(h), "score": score})


def embedding_model():
    x = keras.Input((4,), name="x")
    emb = keras.layers.UnitNormalization(name="emb")(keras.layers.Dense(8)(x))
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(x)
    return keras.Model(x, {"emb": emb, "cls": cls})


def needs_seven(y_true, y_pred):
    """A custom loss no synthetic target fits: it wants 7 target columns."""
    if y_true.shape[-1] != 7:
        raise ValueError("this loss needs 7 target columns")
    return keras.ops.mean(y_pred, axis=-1)


def _write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


def test_check_ctc_and_keras_class_import_string(tmp_path, capsys):
    """The two crashes of issue 10: CTC, and keras.losses:MeanSquaredError."""
    spec = _write(tmp_path, "outputs:\n  text: {loss: CTC}\n"
                            "  score: {loss: keras.losses:MeanSquaredError, weight: 0.5}\n")
    assert main(["check", spec, "--model", "test_check:ctc_model", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if not line.startswith("total")}
    assert rows["text"][1:5] == ["(3,", "12,", "6)", "(3,)"]
    assert rows["score"][1:4] == ["(3,", "1)", "(3,)"]
    text, score = float(rows["text"][-1]), float(rows["score"][-1])
    assert np.isfinite(text) and text > 0 and np.isfinite(score)
    total = float(out.split("total = Σ weight·value = ")[1].split()[0])
    assert total == pytest.approx(text + 0.5 * score, rel=1e-4)


def test_synthetic_targets_fit_each_loss():
    spec = ml.load_spec("""
outputs:
  text: {loss: ctc}
  score: {loss: mse}
  cls:
    loss: [categorical_generalized_cross_entropy, {loss: SparseCategoricalCrossentropy, name: cls_ce}]
    class_weight: {1: 2.0}
  emb: {loss: {name: Circle, params: {gamma: 10}}}
""")
    rng = np.random.default_rng(0)
    y_pred = {"text": rng.normal(size=(4, 12, 6)).astype("float32"),
              "score": rng.normal(size=(4, 1)).astype("float32"),
              "cls": np.full((4, 3), 1 / 3, "float32"),
              "emb": np.eye(8, dtype="float32")[:4]}
    composite = ml.build_loss(spec)
    y = synthetic_targets(composite, y_pred, 4, rng)
    # CTC: label sequences, no blank (0), at most as long as the frames.
    assert y["text"].shape == (4, 6) and y["text"].dtype.kind == "i"
    assert y["text"].min() >= 1 and y["text"].max() <= 5
    # Sparse losses share one target: class ids in range.
    assert y["cls"].shape == (4,) and set(np.unique(y["cls"])) <= {0, 1, 2}
    # Regression: reals shaped like the prediction; Circle: one id per sample.
    assert y["score"].shape == (4, 1) and y["score"].dtype == np.float32
    assert y["emb"].shape == (4,) and y["emb"].dtype.kind == "i"
    result = composite.compute(y, y_pred)
    # Uniform predictions: GCE is (1 - (1/3)^0.5) / 0.5 for every label, CE is log 3; class 1 counts twice.
    cw = np.where(y["cls"] == 1, 2.0, 1.0).mean()
    assert float(result.losses["cls_categorical_generalized_cross_entropy"]) == pytest.approx(
        cw * (1 - (1 / 3) ** 0.5) / 0.5, rel=1e-5)
    assert float(result.losses["cls_ce"]) == pytest.approx(cw * np.log(3), rel=1e-5)
    assert all(np.isfinite(float(v)) for v in result.losses.values())


def test_check_circle_gce_and_class_names(tmp_path, capsys):
    spec = _write(tmp_path, "outputs:\n  emb: {loss: Circle}\n"
                            "  cls: {loss: {name: CategoricalFocalCrossentropy, params: {gamma: 1.0}}}\n")
    assert main(["check", spec, "--model", "test_check:embedding_model", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "emb" in out and "(4, 8)" in out and "(4, 3)" in out


def test_check_without_a_fitting_target_names_the_term_and_says_data(tmp_path, capsys):
    spec = _write(tmp_path, "outputs:\n  score: {loss: test_check:needs_seven}\n")
    assert main(["check", spec, "--model", "test_check:ctc_model"]) == 1
    err = capsys.readouterr().err
    assert "term 'score'" in err and "--data" in err and "no synthetic target fits" in err
    assert "Traceback" not in err


class _TokenIds(keras.layers.Layer):
    """Stands for an embedding lookup: random floats are not token ids."""

    def call(self, x):
        import tensorflow as tf

        if tf.executing_eagerly() and not bool(keras.ops.all(x == keras.ops.round(x))):
            raise ValueError("expected integer token ids")
        return x

    def compute_output_shape(self, shape):
        return shape


def token_model():
    x = keras.Input((5,), name="tokens")
    return keras.Model(x, {"out": keras.layers.Dense(1, name="out")(_TokenIds()(x))})


def test_check_model_that_random_inputs_cannot_feed(tmp_path, capsys):
    spec = _write(tmp_path, "outputs:\n  out: {loss: mse}\n")
    assert main(["check", spec, "--model", "test_check:token_model"]) == 1
    err = capsys.readouterr().err
    assert "does not run on random inputs shaped (2, 5)" in err and "expected integer token ids" in err
    assert "--data" in err and "Traceback" not in err
