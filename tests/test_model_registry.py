"""The registered names of the multiloss model subclasses, and ``fit``'s callbacks found by name.

* Keras's own model classes keep ``multiloss>Model``, ``multiloss>Sequential``
  and ``multiloss>Functional`` (files saved by every release name them).
* A user's class is registered as ``multiloss>{module}.{qualname}``: two
  classes named ``Net`` in two modules save and reload as themselves.
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


def test_keras_model_classes_keep_their_registered_names():
    for cls, name in ((keras.Model, "Model"), (keras.Sequential, "Sequential"), (Functional, "Functional")):
        sub = multiloss_class(cls)
        assert keras.saving.get_registered_name(sub) == f"multiloss>{name}"
        assert keras.saving.get_registered_object(f"multiloss>{name}") is sub


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


@pytest.mark.slow
def test_two_user_classes_named_net_save_and_reload_as_themselves(tmp_path):
    (tmp_path / "net_a.py").write_text(NET.format(units=3, out=2))
    (tmp_path / "net_b.py").write_text(NET.format(units=5, out=2))
    sys.path.insert(0, str(tmp_path))
    try:
        import net_a
        import net_b
    finally:
        sys.path.remove(str(tmp_path))
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
