"""The registered names of the multiloss model subclasses, and ``fit``'s callbacks found by name.

* Keras's own model classes, and user classes registered with Keras, are saved
  under their own Keras names (the multiloss part is in the compile config), so
  their files load with ``compile=False`` where multiloss is not installed.  The
  names earlier releases saved (``multiloss>Model``, ``multiloss>Sequential``,
  ``multiloss>Functional``) still resolve.
* A user's class that Keras has not registered is saved as
  ``multiloss>{module}.{qualname}``: two classes named ``Net`` in two modules
  save and reload as themselves.
* A saved name resolves when the class is defined (its module imported), before
  any ``ml.compile`` of it; an earlier release's short name ``multiloss>{class
  name}`` resolves when one model class of that name is defined.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.core.keras_access import Functional
from multiloss.core.model import MultilossModel, multiloss_class, registered_name, saved_class
from multiloss.spec.errors import NonFiniteError

NET = textwrap.dedent("""\
    import keras


    class Net(keras.Model):
        def __init__(self, units={units}, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.trunk = keras.layers.Dense(units, activation="tanh", name="trunk")
            self.head = keras.layers.Dense({out}, name="out")

        def call(self, x):
            return {{"out": self.head(self.trunk(x))}}

        def get_config(self):
            return {{**super().get_config(), "units": self.units}}
""")

RELOAD = textwrap.dedent("""\
    import json, sys
    import numpy as np
    import multiloss  # and the user's modules, importable
    import keras
    import net_a, net_b

    x = np.load(sys.argv[2])
    out = {}
    for path in sys.argv[1].split(","):
        model = keras.saving.load_model(path)
        mine = [m.__name__ for m in (net_a, net_b) if isinstance(model, m.Net)]
        out[path] = {"module": mine, "loss": type(model.loss).__name__, "units": model.units,
                     "pred": np.asarray(model.predict(x, verbose=0)["out"]).tolist()}
    print("RELOADED " + json.dumps(out))
""")


def test_keras_model_classes_save_as_themselves_and_their_old_names_still_resolve():
    for cls, name in ((keras.Model, "Model"), (keras.Sequential, "Sequential"), (Functional, "Functional")):
        sub = multiloss_class(cls)
        assert (sub.__module__, sub.__name__) == (cls.__module__, cls.__name__)
        assert keras.saving.get_registered_name(sub) == keras.saving.get_registered_name(cls)
        assert keras.saving.get_registered_object(f"multiloss>{name}") is sub


@keras.saving.register_keras_serializable("mytests")
class Registered(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Dense(2, name="out")

    def call(self, x):
        return {"out": self.head(x)}


def _saved_config(path) -> dict:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def test_a_saved_file_names_the_keras_class_and_keeps_the_composite_in_its_compile_config(tmp_path):
    """What the file says, read from its config.json, and what a load with multiloss gives back."""
    inputs = keras.Input((4,))
    trunk = keras.layers.Dense(3, name="h")(inputs)
    functional = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(trunk),
                                      "b": keras.layers.Dense(2, name="b")(trunk)})
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    registered = Registered()
    registered(np.zeros((1, 4), "float32"))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    cases = [(functional, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mae", "weight": 0.5}}},
              {"a": x[:, :1], "b": x[:, 1:3]}, ("keras.src.models.functional", "Functional", "Functional")),
             (sequential, {"outputs": {"out": {"loss": "mse"}}}, x[:, :2], ("keras", "Sequential", None)),
             (registered, {"outputs": {"out": {"loss": "mse"}}}, {"out": x[:, :2]},
              (__name__, "Registered", "mytests>Registered"))]
    for model, spec, y, (module, class_name, registered_as) in cases:
        ml.compile(model, spec, optimizer="sgd")
        model.fit(x, y, epochs=1, verbose=0)
        path = tmp_path / f"{class_name}.keras"
        model.save(path)
        saved = _saved_config(path)
        assert (saved["module"], saved["class_name"], saved["registered_name"]) == (module, class_name,
                                                                                    registered_as)
        assert saved["compile_config"]["multiloss"]["spec"]["outputs"] == spec["outputs"]
        back = keras.saving.load_model(path)
        assert isinstance(back, MultilossModel) and type(back.loss).__name__ == "CompositeLoss"
        assert back.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
        plain = keras.saving.load_model(path, compile=False)
        assert not isinstance(plain, MultilossModel) and not plain.compiled


def test_a_user_class_is_registered_under_its_module_and_qualified_name():
    class Local(keras.Model):
        pass

    sub = multiloss_class(Local)
    assert sub.__name__ == "Local" and issubclass(sub, MultilossModel) and multiloss_class(sub) is sub
    name = keras.saving.get_registered_name(sub)
    assert name == f"multiloss>{__name__}.test_a_user_class_is_registered_under_its_module_and_qualified_name" \
                   "._locals_.Local"
    assert name == f"multiloss>{registered_name(Local)}"
    assert keras.saving.get_registered_object(name) is sub


def test_a_saved_name_resolves_to_a_defined_class_that_ml_compile_has_not_seen():
    """A fresh process: the user's class is imported, but no ml.compile has derived its subclass yet."""
    class NotCompiledYet(keras.Model):
        pass

    key = f"multiloss>{registered_name(NotCompiledYet)}"
    assert key not in dict(keras.saving.get_custom_objects())
    sub = keras.saving.get_registered_object(key)
    assert sub is multiloss_class(NotCompiledYet) and keras.saving.get_registered_name(sub) == key


def test_an_earlier_release_short_name_resolves_to_the_one_class_of_that_name():
    class OnlyOneOfMe(keras.Model):
        pass

    sub = keras.saving.get_registered_object("multiloss>OnlyOneOfMe")
    assert sub is multiloss_class(OnlyOneOfMe)
    assert "multiloss>OnlyOneOfMe" in keras.saving.get_custom_objects()
    assert "multiloss>OnlyOneOfMe" not in dict(keras.saving.get_custom_objects())   # looked up, not added
    assert keras.saving.get_registered_object("multiloss>NoSuchModelClass") is None
    assert saved_class("other>OnlyOneOfMe") is None


def test_an_ambiguous_short_name_resolves_to_nothing():
    def make():
        class Twice(keras.Model):
            pass
        return Twice

    first, second = make(), make()
    assert first is not second
    assert keras.saving.get_registered_object("multiloss>Twice") is None


def _user_modules(folder, **sources):
    """Write each source as ``folder/<name>.py`` and import it, as a user's own modules."""
    import importlib

    for name, text in sources.items():
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    try:
        return [importlib.import_module(name) for name in sources]
    finally:
        sys.path.remove(str(folder))


@pytest.mark.slow
def test_two_user_classes_named_net_save_and_reload_as_themselves(tmp_path):
    net_a, net_b = _user_modules(tmp_path, net_a=NET.format(units=3, out=2), net_b=NET.format(units=5, out=2))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    paths, preds = [], {}
    for module in (net_a, net_b):
        model = module.Net()
        model(x[:1])                         # built; it does not name its outputs (the spec does)
        ml.compile(model, {"outputs": {"out": {"loss": "mse"}}}, optimizer="sgd")
        model.fit(x, {"out": x[:, :2]}, epochs=1, verbose=0)
        path = str(tmp_path / f"{module.__name__}.keras")
        model.save(path)
        paths.append(path)
        preds[path] = (module.__name__, model.units, model.predict(x, verbose=0)["out"])
    assert keras.saving.get_registered_name(type(model)) == "multiloss>net_b.Net"
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    child = subprocess.run([sys.executable, str(script), ",".join(paths), str(tmp_path / "x.npy")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(tmp_path)})
    assert child.returncode == 0, child.stderr[-3000:]
    line = next(s for s in child.stdout.splitlines() if s.startswith("RELOADED "))
    got = json.loads(line.removeprefix("RELOADED "))
    for path, (module, units, pred) in preds.items():
        assert got[path]["module"] == [module] and got[path]["units"] == units
        assert got[path]["loss"] == "CompositeLoss"
        np.testing.assert_allclose(got[path]["pred"], pred, rtol=1e-5, atol=1e-6)


def _functional():
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    return keras.Model(x, {"a": keras.layers.Dense(1, name="a")(keras.layers.Dense(2, name="h")(x))})


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_fit_puts_the_guard_first_wherever_the_callbacks_are_passed(how):
    """fit's callbacks are found by name (``inspect.signature(...).bind``), positional or keyword."""
    model = _functional()
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}}}, optimizer="sgd")
    x = np.ones((4, 3), "float32")
    y = {"a": np.full((4, 1), np.nan, "float32")}
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    with pytest.raises(NonFiniteError):
        if how == "keyword":
            model.fit(x, y, epochs=1, verbose=0, callbacks=[Spy()])
        else:
            model.fit(x, y, 4, 1, 0, [Spy()])
    assert seen == []           # the guard ran first, and stopped fit before the user's callback


REGISTERED_NET = textwrap.dedent("""\
    import keras


    @keras.saving.register_keras_serializable("user")
    class RegNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.trunk = keras.layers.Dense(3, activation="tanh", name="trunk")
            self.head = keras.layers.Dense(2, name="out")

        def call(self, x):
            return {"out": self.head(self.trunk(x))}
""")

WITHOUT_MULTILOSS = textwrap.dedent("""\
    import json, sys
    sys.modules["multiloss"] = None          # `import multiloss` fails here
    import numpy as np, keras
    import reg_net                           # the user's class, importable
    x = np.load(sys.argv[2])
    out = {}
    for path in sys.argv[1].split(","):
        model = keras.saving.load_model(path, compile=False)
        pred = model.predict(x, verbose=0)
        out[path] = np.asarray(pred["out"] if isinstance(pred, dict) else pred).tolist()
    print("LOADED " + json.dumps(out))
""")


@pytest.mark.slow
def test_files_of_keras_and_registered_classes_load_with_compile_false_without_multiloss(tmp_path):
    (reg_net,) = _user_modules(tmp_path, reg_net=REGISTERED_NET)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, {"out": keras.layers.Dense(2, name="out")(keras.layers.Dense(3)(inputs))})
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2, name="out")])
    registered = reg_net.RegNet()
    registered(x[:1])
    preds = {}
    for name, model in (("functional", functional), ("sequential", sequential), ("registered", registered)):
        ml.compile(model, {"outputs": {"out": {"loss": "mse", "weight": 0.5}}}, optimizer="adam")
        model.fit(x, {"out": x[:, :2]} if name != "sequential" else x[:, :2], epochs=2, verbose=0)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        pred = model.predict(x, verbose=0)
        preds[path] = pred["out"] if isinstance(pred, dict) else pred
    child = subprocess.run([sys.executable, "-c", WITHOUT_MULTILOSS, ",".join(preds), str(tmp_path / "x.npy")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(tmp_path)})
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(next(s for s in child.stdout.splitlines() if s.startswith("LOADED ")).removeprefix("LOADED "))
    for path, pred in preds.items():
        np.testing.assert_allclose(got[path], pred, rtol=1e-5, atol=1e-6)
