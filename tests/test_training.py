"""ml.compile with plain Keras fit/evaluate: logging, exactness, variables, saving."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import multiloss as ml

SPEC = """
metrics: [accuracy]
outputs:
  cls: {loss: {name: categorical_crossentropy, params: {label_smoothing: 0.1}}, weight: 1.0}
  reg: {loss: mse, weight: 0.5, metrics: [mae]}
"""


def _model(l2=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(2, name="reg")(h)
    return keras.Model(x, {"cls": cls, "reg": reg})


def _data(n=50, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {"cls": np.eye(3, dtype="float32")[rng.integers(0, 3, n)],
         "reg": rng.normal(size=(n, 2)).astype("float32")}
    return x, y


def _per_sample(model, x, y):
    p = model.predict(x, verbose=0)
    smooth = y["cls"] * 0.9 + 0.1 / 3
    ce = -(smooth * np.log(np.clip(p["cls"], 1e-7, 1 - 1e-7))).sum(-1)
    mse = ((y["reg"] - p["reg"]) ** 2).mean(-1)
    return ce, mse


def test_history_keys_and_exact_epoch_means_with_a_short_last_batch():
    model = _model(l2=0.01)
    ml.compile(model, SPEC, optimizer=keras.optimizers.SGD(0.0))  # lr 0: the model stays fixed
    x, y = _data(50)
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history  # batches 16,16,16,2
    assert set(hist) == {"loss", "cls_loss", "cls_weight", "reg_loss", "reg_weight",
                         "cls_accuracy", "reg_accuracy", "reg_mae"}
    ce, mse = _per_sample(model, x, y)
    assert hist["cls_loss"][0] == pytest.approx(ce.mean(), rel=1e-5)
    assert hist["reg_loss"][0] == pytest.approx(mse.mean(), rel=1e-5)
    assert (hist["cls_weight"][0], hist["reg_weight"][0]) == (1.0, 0.5)
    kernel = model.layers[1].kernel.numpy()
    reg_penalty = 0.01 * (kernel ** 2).sum()
    assert hist["loss"][0] == pytest.approx(ce.mean() + 0.5 * mse.mean() + reg_penalty, rel=1e-5)


def test_compiling_again_logs_only_the_new_specs_terms_and_metrics():
    """A second ml.compile without the metrics kept the first one's keys, logged as 0.0."""
    model = _model()
    ml.compile(model, SPEC, optimizer=keras.optimizers.SGD(0.0))
    x, y = _data(50)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    ml.compile(model, "outputs: {cls: {loss: categorical_crossentropy}, reg: {loss: mse}}",
               optimizer=keras.optimizers.SGD(0.0))
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert set(hist) == {"loss", "cls_loss", "cls_weight", "reg_loss", "reg_weight"}
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == set(hist)
    ce = -(y["cls"] * np.log(np.clip(model.predict(x, verbose=0)["cls"], 1e-7, 1))).sum(-1)
    assert hist["cls_loss"][0] == pytest.approx(ce.mean(), rel=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_a_metric_that_cannot_take_its_heads_targets_is_named_at_the_metric(masked):
    """A sparse metric on one-hot targets was TensorFlow's "Dimensions must be equal" naming no head."""
    model = _model()
    mask = ", mask_value: -1" if masked else ""
    ml.compile(model, "outputs: {cls: {loss: categorical_crossentropy, metrics: [accuracy, "
                      f"sparse_categorical_accuracy]{mask}}}, reg: {{loss: mse}}}}")
    x, y = _data(32)
    with pytest.raises(ml.SpecError, match=r"outputs\.cls\.metrics\.1: metric 'sparse_categorical_accuracy' of "
                                           r"head 'cls' cannot take its target shaped \(16, 3\) and prediction "
                                           r"shaped \(16, 3\): .*a sparse metric takes class ids"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_one_per_pixel_weight_array_weights_every_head_in_fit_and_evaluate_on_arrays():
    """Keras's array adapter refused one [B, H, W] array for a model with several outputs ("one
    scalar score per sample"); the README says one array weights every term."""
    keras.utils.set_random_seed(0)
    r = np.random.default_rng(0)
    x = r.normal(size=(8, 4, 4, 1)).astype("float32")
    y = {"a": r.normal(size=(8, 4, 4, 2)).astype("float32"), "b": r.normal(size=(8, 4, 4, 1)).astype("float32")}
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(3, 1)(inp)
    model = keras.Model(inp, {"a": keras.layers.Conv2D(2, 1, name="a")(h), "b": keras.layers.Conv2D(1, 1, name="b")(h)})
    ml.compile(model, "outputs: {a: {loss: mse}, b: {loss: mse, weight: 0.5}}", optimizer=keras.optimizers.SGD(0.0))
    w = r.uniform(size=(8, 4, 4)).astype("float32")
    p = model.predict(x, verbose=0)
    a, b = ((((y[k] - p[k]) ** 2).mean(-1) * w).mean() for k in ("a", "b"))
    got = model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    assert (got["a_loss"], got["b_loss"]) == (pytest.approx(a, rel=1e-5), pytest.approx(b, rel=1e-5))
    hist = model.fit(x, y, sample_weight=w, validation_data=(x, y, w), batch_size=8, epochs=1, verbose=0).history
    assert hist["loss"][0] == pytest.approx(a + 0.5 * b, rel=1e-5)
    assert hist["val_b_loss"][0] == pytest.approx(b, rel=1e-5)


def test_a_dict_of_sample_weights_that_leaves_a_head_out_or_misspells_one_on_arrays():
    """On arrays Keras's adapter wants one weight per target ("You should provide one `sample_weight`
    array per output in `y`", then every array printed); as from a tf.data pipeline, a head left out is
    unweighted and a misspelt key is named with a did-you-mean."""
    keras.utils.set_random_seed(0)
    r = np.random.default_rng(1)
    x = r.normal(size=(8, 4, 4, 1)).astype("float32")
    y = {"a": r.normal(size=(8, 4, 4, 2)).astype("float32"), "b": r.normal(size=(8, 1)).astype("float32")}
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(3, 1)(inp)
    model = keras.Model(inp, {"a": keras.layers.Conv2D(2, 1, name="a")(h),
                              "b": keras.layers.Dense(1, name="b")(keras.layers.Flatten()(h))})
    ml.compile(model, "outputs: {a: {loss: mse}, b: {loss: mse}}", optimizer=keras.optimizers.SGD(0.0))
    w = r.uniform(size=(8, 4, 4)).astype("float32")
    p = model.predict(x, verbose=0)
    a = (((y["a"] - p["a"]) ** 2).mean(-1) * w).mean()
    b = ((y["b"] - p["b"]) ** 2).mean()
    got = model.evaluate(x, y, sample_weight={"a": w}, batch_size=8, verbose=0, return_dict=True)
    assert (got["a_loss"], got["b_loss"]) == (pytest.approx(a, rel=1e-5), pytest.approx(b, rel=1e-5))
    hist = model.fit(x, y, sample_weight={"a": w}, validation_data=(x, y, {"a": w}), batch_size=8, epochs=1,
                     verbose=0).history
    assert hist["val_a_loss"][0] == pytest.approx(a, rel=1e-5)
    with pytest.raises(ml.SpecError, match=r"sample_weight: unknown key 'aa'; did you mean 'a'\? valid: a, b"):
        model.evaluate(x, y, sample_weight={"aa": w}, verbose=0)


def test_weights_are_variables_changed_between_steps():
    model = _model()
    ml.compile(model, SPEC, optimizer="sgd")
    x, y = _data(32)
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    traced = model.test_function
    model.loss.set_weights({"cls": 0.0, "reg": 3.0})
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    assert model.test_function is traced
    assert after["reg_weight"] == 3.0 and after["cls_weight"] == 0.0
    assert after["loss"] == pytest.approx(3.0 * before["reg_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="finite number ≥ 0"):
        model.loss.set_weights({"reg": -1.0})
    with pytest.raises(KeyError, match="unknown term"):
        model.loss.set_weights({"nope": 1.0})


def test_jit_compile_gives_the_same_training():
    x, y = _data(48)
    runs = []
    for jit in (False, True):
        model = _model(seed=3)
        ml.compile(model, SPEC, optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        runs.append(model.fit(x, y, batch_size=16, epochs=2, verbose=0).history)
    for key in runs[0]:
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-4, err_msg=key)


def test_compile_form_trains_like_the_canonical_form():
    compile_form = """
    loss: {cls: {name: categorical_crossentropy, params: {label_smoothing: 0.1}}, reg: mse}
    loss_weights: {cls: 1.0, reg: 0.5}
    metrics: {cls: [accuracy], reg: [accuracy, mae]}
    """
    x, y = _data(40)
    runs = []
    for spec in (SPEC, textwrap.dedent(compile_form)):
        model = _model(seed=5)
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.1))
        runs.append(model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history)
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-6, err_msg=key)


def test_compile_kwargs_reproduce_the_spec_in_plain_keras():
    x, y = _data(40)
    a, b = _model(seed=7), _model(seed=7)
    ml.compile(a, SPEC, optimizer="sgd")
    b.compile(optimizer="sgd", **ml.compile_kwargs(SPEC))
    ra = a.evaluate(x, y, verbose=0, return_dict=True)
    rb = b.evaluate(x, y, verbose=0, return_dict=True)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6)
    assert ra["cls_accuracy"] == rb["cls_accuracy"]
    with pytest.raises(ml.SpecError, match="class_weight.*single-output"):
        ml.compile_kwargs({"outputs": {"c": {"loss": "mse", "class_weight": {3: 5.0}}}})
    with pytest.raises(ml.SpecError, match="cross-output terms"):
        ml.compile_kwargs("configs/siamese.yaml")


def test_compile_refuses_a_loss_argument():
    with pytest.raises(TypeError, match="from the spec"):
        ml.compile(_model(), SPEC, optimizer="sgd", loss="mse")


def test_siamese_example_with_cross_output_term_trains():
    from multiloss.run.examples import siamese_model

    rng = np.random.default_rng(0)
    n = 24
    xa, xb = rng.random((n, 8, 8, 1), "float32"), rng.random((n, 8, 8, 1), "float32")
    ca, cb = rng.integers(0, 10, n), rng.integers(0, 10, n)
    same = (ca == cb).astype("float32")
    y = {"ctg_out_1": np.eye(10)[ca], "ctg_out_2": np.eye(10)[cb],
         "bin_out": np.eye(2)[same.astype(int)], "same": same}
    model = siamese_model()
    ml.compile(model, "configs/siamese.yaml", optimizer="adam")
    hist = model.fit({"image_a": xa, "image_b": xb}, y, batch_size=8, epochs=1, verbose=0).history
    assert {"contrastive_loss", "contrastive_weight", "bin_out_accuracy", "ctg_out_1_accuracy"} <= set(hist)
    total = sum(hist[f"{t}_weight"][0] * hist[f"{t}_loss"][0] for t in model.loss.term_names)
    assert hist["loss"][0] == pytest.approx(total, rel=1e-5)


@pytest.mark.slow
def test_saved_model_loads_in_a_fresh_process_with_loss_params(tmp_path):
    model = _model(seed=11)
    ml.compile(model, SPEC, optimizer="adam")
    x, y = _data(30)
    model.fit(x, y, epochs=1, verbose=0)
    model.loss.set_weights({"reg": 0.25})
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    path = tmp_path / "m.keras"
    model.save(path)
    np.savez(tmp_path / "data.npz", x=x, cls=y["cls"], reg=y["reg"])
    script = textwrap.dedent(f"""
        import json, numpy as np, keras, multiloss
        m = keras.saving.load_model({str(path)!r})
        d = np.load({str(tmp_path / 'data.npz')!r})
        r = m.evaluate(d["x"], {{"cls": d["cls"], "reg": d["reg"]}}, verbose=0, return_dict=True)
        params = [t.loss.params for t in m.loss.terms]
        m.fit(d["x"], {{"cls": d["cls"], "reg": d["reg"]}}, epochs=1, verbose=0)
        print(json.dumps({{"result": r, "params": params}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["params"] == [{"label_smoothing": 0.1}, {}]
    for key, value in expected.items():
        assert got["result"][key] == pytest.approx(value, rel=1e-6), key
    assert got["result"]["reg_weight"] == 0.25


def test_masked_head_metrics_skip_missing_pixels_and_missing_target_is_named():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4, 4, 2))
    depth = keras.layers.Conv2D(1, 1, name="depth")(x_in)
    model = keras.Model(x_in, {"depth": depth})
    spec = "outputs:\n  depth: {loss: mae, mask_value: 0.0, reduction: weighted_mean, metrics: [mae]}\n"
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 4, 2)).astype("float32")
    y = rng.uniform(1, 2, size=(6, 4, 4, 1)).astype("float32")
    y[rng.random((6, 4, 4)) < 0.4] = 0.0  # missing depth
    res = model.evaluate(x, {"depth": y}, batch_size=6, verbose=0, return_dict=True)
    err = np.abs(model.predict(x, verbose=0)["depth"] - y)[..., 0]
    valid = y[..., 0] != 0
    assert res["depth_mae"] == pytest.approx(err[valid].mean(), rel=1e-5)
    assert res["depth_loss"] == pytest.approx(err[valid].mean(), rel=1e-5)
    siamese = ml.build_loss("configs/siamese.yaml")
    from multiloss.run.examples import siamese_model

    preds = siamese_model()({"image_a": x[:, :, :, :1].repeat(2, 1).repeat(2, 2)[:, :8, :8],
                             "image_b": x[:, :, :, 1:].repeat(2, 1).repeat(2, 2)[:, :8, :8]})
    y_no_same = {k: np.eye(preds[k].shape[-1])[np.zeros(6, int)] for k in ("ctg_out_1", "ctg_out_2", "bin_out")}
    with pytest.raises(ml.SpecError, match=r"terms\.0\.loss: term 'contrastive': y has no target 'same'"):
        siamese.compute(y_no_same, preds)


def test_out_of_range_label_inside_fit_names_the_term():
    model = _model()
    ml.compile(model, "outputs:\n  cls: {loss: sparse_categorical_crossentropy}\n", optimizer="sgd")
    x, _ = _data(16)
    # One SpecError line (not TensorFlow's assert traceback), with the first bad label.
    with pytest.raises(ml.SpecError) as info:
        model.fit(x, {"cls": np.array([0, 1, 2, 5] * 4)}, verbose=0)
    assert str(info.value) == ("<string>:2: outputs.cls.loss: term 'cls': label 5 out of range for sparse loss "
                               "'sparse_categorical_crossentropy': valid class ids are 0..2")
    with pytest.raises(ml.SpecError, match=r"term 'cls': label -1 out of range"):
        model.evaluate(x, {"cls": np.array([0, 1, -1, 2] * 4)}, verbose=0)
