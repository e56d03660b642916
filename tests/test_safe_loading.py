"""Saved models load in a fresh process after `import multiloss` alone, and safely.

Every kind of model multiloss saves is reloaded in a subprocess that imports
nothing but ``multiloss`` (and keras/numpy to call it), and its predictions are
compared with the original's.  A crafted ``.keras`` whose loss names
``os:system``, ``subprocess:Popen`` or a module with import-time side effects
must run nothing under ``safe_mode=True``.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.incremental import IncrementalNet
from multiloss.incremental.network import cnn
from multiloss.run.models import mlp, multihead_cnn, siamese_cnn

RELOAD = textwrap.dedent("""\
    import json, sys
    import numpy as np
    import multiloss  # the only import the README asks for
    import keras

    out = {}
    for path, inputs in json.loads(sys.argv[1]).items():
        model = keras.saving.load_model(path)
        x = np.load(inputs, allow_pickle=False)
        x = {k: x[k] for k in x.files} if len(x.files) > 1 else x[x.files[0]]
        pred = model.predict(x, verbose=0)
        pred = pred if isinstance(pred, dict) else {"out": pred}
        out[path] = {"loss": type(model.loss).__name__,
                     "pred": {k: np.asarray(v).tolist() for k, v in sorted(pred.items())}}
    print(json.dumps(out))
""")


def _run(tmp_path: Path, code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, timeout=300)


def _save(model, tmp_path: Path, name: str, x) -> tuple[str, str, dict]:
    path = tmp_path / f"{name}.keras"
    model.save(path)
    inputs = tmp_path / f"{name}.npz"
    np.savez(inputs, **(x if isinstance(x, dict) else {"x": x}))
    pred = model.predict(x, verbose=0)
    return str(path), str(inputs), pred if isinstance(pred, dict) else {"out": pred}


@pytest.mark.slow
def test_every_saved_model_reloads_after_import_multiloss_alone(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(4, 8, 8, 1)).astype("float32")
    saved = {}
    heads = {"class": {"kind": "classification", "units": 10}, "image": {"kind": "reconstruction"}}
    model = mlp({"input_shape": (8, 8, 1)}, heads=heads, hidden=(8,))
    ml.compile(model, {"outputs": {"class": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
                                   "image": {"loss": "mse", "weight": 0.5}}}, optimizer="adam")
    saved["mlp"] = _save(model, tmp_path, "mlp", img)
    model = multihead_cnn({"input_shape": (8, 8, 1)}, heads=heads, filters=(4,), dense=8)
    ml.compile(model, {"outputs": {"class": {"loss": "sparse_categorical_crossentropy"},
                                   "image": {"loss": "mse"}}, "weighting": {"strategy": "uncertainty"}},
               optimizer="adam")
    saved["cnn_uncertainty"] = _save(model, tmp_path, "cnn_uncertainty", img)
    model = siamese_cnn({"input_shape": (8, 8, 1), "num_classes": 10}, filters=(4,), embedding=8)
    spec = ml.load_spec("configs/siamese.yaml")
    ml.compile(model, spec, optimizer="adam")
    pair = {"image_a": img, "image_b": img[::-1]}
    saved["siamese"] = _save(model, tmp_path, "siamese", pair)
    model = siamese_cnn({"input_shape": (8, 8, 1), "num_classes": 10}, filters=(4,), embedding=8)
    ml.compile(model, spec.model_dump(exclude_none=True) | {"weighting": {"strategy": "pcgrad"}}, optimizer="sgd")
    saved["siamese_pcgrad"] = _save(model, tmp_path, "siamese_pcgrad", pair)
    net = IncrementalNet(cnn({"input_shape": (8, 8, 1)}, filters=(4,), dense=8))
    net.expand(4)
    inc = net.model()
    ml.compile(inc, {"outputs": {"logits": {"loss": "sparse_categorical_crossentropy"}},
                     "terms": [{"name": "distillation", "outputs": ["logits"], "target": "target",
                                "loss": {"name": "incremental_distillation", "params": {"num_old": 2}}}]},
               optimizer="sgd")
    saved["incremental"] = _save(inc, tmp_path, "incremental", img)
    out = _run(tmp_path, RELOAD, json.dumps({p: i for p, i, _ in saved.values()}))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, (path, _, pred) in saved.items():
        assert result[path]["loss"] == "CompositeLoss", name
        for key, value in pred.items():
            np.testing.assert_allclose(result[path]["pred"][key], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_a_saved_multiloss_train_run_reloads_in_a_fresh_process(tmp_path):
    out = subprocess.run([sys.executable, "-m", "multiloss", "train", "--set", "train.epochs=1",
                          "--set", f"output_dir={tmp_path}", "--set", "train.verbose=0"],
                         capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    code = ("import multiloss, keras, sys\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "print(type(m).__name__, type(m.loss).__name__, sorted(m.output_names))\n")
    child = _run(tmp_path, code, str(tmp_path / "siamese_digits" / "model.keras"))
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split()[:2] == ["Functional", "CompositeLoss"]


def _crafted(tmp_path: Path, loss, name: str = "evil") -> Path:
    """A real saved model whose spec's loss is replaced by ``loss`` in its config.json."""
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, {"y": keras.layers.Dense(2, name="y")(inp)})
    ml.compile(model, {"outputs": {"y": {"loss": "mse"}}}, optimizer="sgd")
    good = tmp_path / "good.keras"
    model.save(good)
    evil = tmp_path / f"{name}.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["compile_config"]["multiloss"]["spec"]["outputs"]["y"]["loss"] = loss
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return evil


EVIL_MODULE = textwrap.dedent("""\
    from pathlib import Path
    Path("IMPORTED").write_text("the module ran at import")

    def loss(y_true, y_pred):
        return (y_true - y_pred) ** 2
""")

LOAD = textwrap.dedent("""\
    import sys
    import multiloss, keras
    for path in sys.argv[1:]:
        try:
            keras.saving.load_model(path)
        except Exception as exc:
            print("REFUSED", type(exc).__name__, str(exc).replace("\\n", " "))
        else:
            print("LOADED")
""")

CRAFTED = {
    "os-system": {"name": "os:system", "params": {"command": "touch RAN"}},
    "subprocess-popen": {"name": "subprocess:Popen", "params": {"args": ["touch", "RAN"]}},
    "module-side-effect": "evilmod:loss",
}


def test_crafted_models_run_nothing_in_safe_mode(tmp_path):
    """Each crafted file is refused, one after another in one fresh process: none of them ran anything."""
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    paths = [str(_crafted(tmp_path, loss, name)) for name, loss in CRAFTED.items()]
    out = _run(tmp_path, LOAD, *paths, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()[-len(CRAFTED):]
    for line, (case, loss) in zip(lines, CRAFTED.items()):
        assert line.startswith("REFUSED"), (case, line)
        name = loss if isinstance(loss, str) else loss["name"]
        assert f"import string {name!r} in a saved model was not imported" in line, case
        assert "safe_mode=False" in line and "allow_import" in line, case
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "IMPORTED").exists()


TRUSTED = textwrap.dedent("""\
    import sys
    import multiloss as ml, keras
    how = sys.argv[2]
    if how == "allow":
        ml.allow_import("mylosses:half_mse")
    elif how == "register":
        import mylosses
        ml.register_loss("half_mse")(mylosses.half_mse)
    model = keras.saving.load_model(sys.argv[1], safe_mode=(how != "unsafe"))
    print("LOADED", model.loss.term_names)
""")


@pytest.mark.parametrize("how", ["allow", "register", "unsafe"])
def test_trusted_user_losses_load_when_the_user_says_so(tmp_path, how):
    (tmp_path / "mylosses.py").write_text("def half_mse(y_true, y_pred):\n    return 0.5 * (y_true - y_pred) ** 2\n")
    path = _crafted(tmp_path, "mylosses:half_mse")
    out = _run(tmp_path, TRUSTED, str(path), how, env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("LOADED")
