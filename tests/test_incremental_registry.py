"""The method registry (by name or import string, did-you-mean) and the backbones (Keras
Applications, ResNet-18/32, local weights only: nothing is downloaded)."""

import textwrap

import keras
import numpy as np
import pytest

from multiloss.incremental import METHODS, Method, Replay, get_method, register_method
from multiloss.incremental.config import load_incremental_config
from multiloss.incremental.methods import classification_term
from multiloss.incremental.network import BACKBONES, get_backbone, keras_application, resnet18, resnet32
from multiloss.spec.errors import SpecError

BASE = {"name": "r", "data": {"source": "digits"}, "scenario": {"initial": 2, "increment": 2},
        "memory": {"budget": 20}, "method": {"name": "replay"}}


@pytest.fixture
def clean_registry():
    saved = set(METHODS)
    yield
    METHODS.unregister(*(set(METHODS) - saved))


def test_builtin_methods_and_did_you_mean():
    for name in ("finetune", "joint", "replay", "lwf", "icarl", "eeil", "wa", "bic", "podnet", "der"):
        assert get_method(name).name == name
    with pytest.raises(LookupError, match="unknown method 'podnt'; did you mean 'podnet'"):
        get_method("podnt")
    with pytest.raises(SpecError, match=r"method.name: unknown method 'bicc'; did you mean 'bic'"):
        load_incremental_config({**BASE, "method": {"name": "bicc"}})
    with pytest.raises(SpecError, match=r"method.params.proxies"):
        load_incremental_config({**BASE, "method": {"name": "podnet", "params": {"proxies": 0}}})


def test_a_user_methods_params_refuse_a_misspelt_key(clean_registry):
    """A user's `class Params(BaseModel)` ignores unknown keys (pydantic's default): `temprature: 3` was
    dropped without a word and the method ran with its default temperature."""
    from pydantic import BaseModel, ConfigDict

    @register_method
    class Soft(Method):
        name = "soft"
        replay = True

        class Params(BaseModel):
            temperature: float = 2.0

        def spec(self, step):
            return {"terms": [classification_term()]}

    with pytest.raises(SpecError, match=r"method\.params\.temprature: unknown key 'temprature'; did you mean "
                                        r"'temperature'\?"):
        load_incremental_config({**BASE, "method": {"name": "soft", "params": {"temprature": 3}}})
    assert load_incremental_config({**BASE, "method": {"name": "soft", "params": {"temperature": 3}}})

    class Open(Soft):                    # extra keys allowed on purpose: left to the method
        name = "open"

        class Params(BaseModel):
            model_config = ConfigDict(extra="allow")
            temperature: float = 2.0

    register_method(Open)
    assert load_incremental_config({**BASE, "method": {"name": "open", "params": {"anything": 1}}})


def test_register_by_class_name_and_import_string(clean_registry, tmp_path, monkeypatch):
    @register_method
    class Mine(Method):
        name = "mine"
        replay = True

        def spec(self, step):
            return {"terms": [classification_term(0.5)]}

    assert get_method("mine") is Mine
    register_method("mine_too")(Mine)
    assert get_method("mine_too") is Mine
    with pytest.raises(ValueError, match="method name 'replay' is taken by multiloss.incremental.methods.Replay"):
        register_method(Mine, name="replay")
    with pytest.raises(TypeError, match="not a subclass"):
        register_method(dict, name="d")

    class NoSpec(Method):
        name = "nospec"

    with pytest.raises(TypeError, match="does not define spec"):
        register_method(NoSpec)
    # A user's module: registered by import string, or named by import string in a config.
    (tmp_path / "my_cil.py").write_text(textwrap.dedent("""\
        from multiloss.incremental import Method
        from multiloss.incremental.methods import classification_term

        class Half(Method):
            name = "half"
            replay = True

            def spec(self, step):
                return {"terms": [classification_term(0.5)]}

        def not_a_method():
            return 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = register_method("my_cil:Half")
    assert cls.__name__ == "Half" and get_method("half") is cls
    cfg = load_incremental_config({**BASE, "method": {"name": "my_cil:Half"}})
    assert type(cfg.make_method()) is cls and cfg.make_method().spec(None)["terms"][0]["weight"] == 0.5
    with pytest.raises(SpecError, match="not a subclass of multiloss.incremental.Method"):
        load_incremental_config({**BASE, "method": {"name": "my_cil:not_a_method"}})
    with pytest.raises(SpecError, match="keeps exemplars"):
        load_incremental_config({k: v for k, v in BASE.items() if k != "memory"} | {"method": {"name": "my_cil:Half"}})
    assert get_method("replay") is Replay


def _no_download(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(keras.utils, "get_file", refuse)


def test_small_resnets_and_local_weights(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    info = {"input_shape": (28, 28, 1)}
    net = resnet32(info, width=4)
    assert net.outputs[0].shape[-1] == 16
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D) and "down" not in layer.name]
    assert len(convs) == 1 + 3 * 5 * 2  # stem + 3 stages × 5 blocks × 2 convs: 31 convs (+ the FC = 32)
    r18 = resnet18(info, width=4)
    convs = [layer for layer in r18.layers if isinstance(layer, keras.layers.Conv2D) and "down" not in layer.name]
    assert len(convs) == 1 + 4 * 2 * 2 and r18.outputs[0].shape[-1] == 32
    assert r18.get_layer("stage4_block1_conv1").output.shape[1:3] == (4, 4)  # 28 → 14 → 7 → 4
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    path = tmp_path / "r18.weights.h5"
    r18.save_weights(path)
    again = resnet18(info, width=4, weights=str(path))
    np.testing.assert_allclose(np.asarray(again(x, training=False)), np.asarray(r18(x, training=False)), rtol=1e-5)
    fresh = resnet18(info, width=4)
    assert not np.allclose(np.asarray(fresh(x, training=False)), np.asarray(r18(x, training=False)))
    with pytest.raises(ValueError, match="nothing is downloaded"):
        resnet18(info, weights="imagenet")
    with pytest.raises(ValueError, match="local weights file"):
        resnet32(info, weights=str(tmp_path / "missing.h5"))


@pytest.mark.slow
def test_keras_applications_on_small_images_without_downloads(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    info = {"input_shape": (28, 28, 1)}
    assert {"resnet50", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "resnet32"} <= set(BACKBONES)
    x = np.random.default_rng(1).random((2, 28, 28, 1)).astype("float32")
    mob = get_backbone("mobilenet_v2")(info, alpha=0.35)
    assert mob.get_layer("resize").output.shape[1:3] == (32, 32)
    assert tuple(mob(x).shape) == (2, 1280)
    res = keras_application(info, "resnet50")
    assert tuple(res(x).shape) == (2, 2048)
    path = tmp_path / "mob.weights.h5"
    mob.save_weights(path)
    again = get_backbone("mobilenet_v2")(info, alpha=0.35, weights=str(path))
    np.testing.assert_allclose(np.asarray(again(x, training=False)), np.asarray(mob(x, training=False)),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown family 'resnet5'; did you mean 'resnet50'"):
        keras_application(info, "resnet5")


def test_a_user_methods_broken_spec_is_named_at_the_method_and_step(clean_registry, tmp_path):
    """A registered method whose step-1 spec names an unknown loss passed validate; the run then failed at
    step 1 with `<dict>: terms.1.loss`, naming neither the method nor the step.  A spec that needs what
    training makes (here: `prepare` ran) is checked when its step runs."""
    from multiloss.incremental.runner import IncrementalKind, run_incremental

    bad = {"name": "kd", "outputs": ["logits"], "target": "class", "loss": "msee"}

    @register_method
    class Broken(Method):
        name = "broken"

        def spec(self, step):
            return {"terms": [classification_term(), *([bad] if step.num_old else [])]}

    @register_method
    class Late(Broken):
        name = "late"

        def prepare(self, learner, step):
            self.ready = True

        def spec(self, step):
            if not getattr(self, "ready", False):
                raise ValueError("the spec needs prepare")
            return super().spec(step)

    cfg = {**BASE, "name": "b", "method": {"name": "broken"}, "memory": None, "output_dir": str(tmp_path),
           "model": {"builder": "mlp", "params": {"hidden": [4]}}, "scenario": {"initial": 2, "increment": 2,
                                                                               "steps": 2},
           "train": {"epochs": 1, "batch_size": 64}}
    message = r"method\.name: method '{}': its loss spec for step 1 \(train stage\): terms\.1\.loss: .*'msee'"
    with pytest.raises(SpecError, match=message.format("broken")):
        IncrementalKind().check(cfg)
    with pytest.raises(SpecError, match=message.format("broken")):
        run_incremental(cfg, quiet=True)
    assert not (tmp_path / "b").exists()                   # refused before the run folder is made
    cfg["method"] = {"name": "late"}
    IncrementalKind().check(cfg)                           # its specs need training: checked when they run
    with pytest.raises(SpecError, match=message.format("late")):
        run_incremental(cfg, quiet=True)
