"""The one registry type (multiloss.spec.registry): its conflict policy, look-ups, safe-loading
membership and providers, and the six registries built on it."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import multiloss as ml
from multiloss.incremental import Method, register_method
from multiloss.incremental.network import BACKBONES, get_backbone, register_backbone
from multiloss.run.data import SOURCES, get_source, register_data
from multiloss.run.models import MODELS, get_builder, register_model
from multiloss.spec import imports
from multiloss.spec.registry import Registry, UnknownNameError, qualified_name
from multiloss.weighting import STRATEGIES, Strategy

ROOT = Path(__file__).resolve().parents[1]


def alpha(x):
    return x


def beta(x):
    return -x


def gamma(x):
    """Registered only by the safe-mode test (registries of other tests still hold alpha and beta)."""
    return 2 * x


def _definition():
    """A fresh function object each call, with the same module and qualified name (a cell run again)."""
    def again(x):
        return x

    return again


# --- the policy ------------------------------------------------------------------------------

def test_register_get_and_the_mapping_interface():
    things = Registry("thing")
    assert things.register("alpha", alpha, aliases=("a",)) is alpha

    @things.register("beta")
    def b(x):
        return x

    assert things.get("alpha") is alpha and things["a"] is alpha and things.get("beta") is b
    assert "alpha" in things and "gamma" not in things and len(things) == 3
    assert list(things) == ["alpha", "a", "beta"] and things.names() == ["a", "alpha", "beta"]
    assert dict(things.items()) == {"alpha": alpha, "a": alpha, "beta": b}
    assert things.name_of(alpha) == "alpha" and things.name_of(beta) is None
    things.unregister("a", "never_registered")
    assert "a" not in things and things.get("alpha") is alpha


def test_the_same_object_again_is_a_no_op():
    things = Registry("thing")
    things.register("alpha", alpha)
    assert things.register("alpha", alpha) is alpha
    assert dict(things) == {"alpha": alpha}


def test_a_different_object_under_a_taken_name_is_refused_naming_the_holder():
    things = Registry("thing")
    things.register("alpha", alpha)
    holder = qualified_name(alpha)
    assert holder.endswith("test_registry.alpha")
    with pytest.raises(ValueError, match=rf"thing name 'alpha' is taken by {re.escape(holder)}; register it "
                                         r"under another name \(or unregister 'alpha' first\)"):
        things.register("alpha", beta)
    # Nothing of a refused registration is kept, its free names neither.
    with pytest.raises(ValueError, match="'alpha' is taken"):
        things.register("free", beta, aliases=("alpha",))
    assert "free" not in things and things.get("alpha") is alpha


def test_the_same_definition_run_again_replaces_the_holder():
    things = Registry("thing")
    first, second = _definition(), _definition()
    assert first is not second and qualified_name(first) == qualified_name(second)
    things.register("again", first)
    things.register("again", second)
    assert things.get("again") is second


@pytest.mark.parametrize("name", ["", "pkg.mod:attr", 3, None])
def test_names_are_non_empty_strings_without_a_colon(name):
    with pytest.raises(ValueError, match="a thing name must be a non-empty string without ':'"):
        Registry("thing").register(name, alpha)


def test_unknown_names_get_a_did_you_mean_and_the_valid_names():
    things = Registry("thing")
    things.register("alpha", alpha)
    things.register("beta", beta)
    with pytest.raises(UnknownNameError) as info:
        things.get("alpah")
    assert isinstance(info.value, LookupError)
    assert str(info.value) == ("unknown thing 'alpah'; did you mean 'alpha'? valid: alpha, beta; "
                               "or an import string 'package.module:function'")
    hinted = Registry("thing", hint="see {valid} or write your own")
    hinted.register("alpha", alpha)
    with pytest.raises(LookupError, match=r"^unknown thing 'zzz'; see alpha or write your own$"):
        hinted.get("zzz")


def test_check_refuses_registrations_and_what_import_strings_name():
    def problem(obj):
        return None if isinstance(obj, type) else f"{obj!r} is not a class"

    classes = Registry("class", check=problem)
    classes.register("dict", dict)
    with pytest.raises(TypeError, match="is not a class"):
        classes.register("alpha", alpha)
    assert classes.get("collections:OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(LookupError, match=r"class 'os.path:join': .* is not a class"):
        classes.get("os.path:join")


def test_import_strings_resolve_under_the_safe_mode_trust_model():
    things = Registry("thing")
    assert things.get("os.path:join") is os.path.join
    with pytest.raises(LookupError, match="does not import"):
        things.get("no_such_module_for_tests:f")
    # A misspelt attribute gets a did-you-mean, a wrongly cased one first (`ReplayKd` for `ReplayKD`).
    with pytest.raises(LookupError, match=r"'collections' has no attribute 'ordereddict'; did you mean 'OrderedDict'\?"):
        things.get("collections:ordereddict")
    with pytest.raises(LookupError, match=r"'os\.path' has no attribute 'joinn'; did you mean 'join'\?"):
        things.get("os.path:joinn")
    ref = f"{__name__}:gamma"
    with imports.restricted():
        with pytest.raises(imports.UnsafeImportError):
            things.get(ref)
        things.register("gamma", gamma)     # a registered object is trusted: its import string resolves
        assert things.get(ref) is gamma
    assert things.holds(gamma) and not things.holds(alpha)
    assert imports.registered(gamma)


def test_providers_are_imported_on_first_read_or_write(tmp_path, monkeypatch):
    (tmp_path / "reg_home.py").write_text(textwrap.dedent("""\
        from multiloss.spec.registry import Registry
        THINGS = Registry("thing", providers=("reg_provider",))
    """))
    (tmp_path / "reg_provider.py").write_text(textwrap.dedent("""\
        from reg_home import THINGS

        @THINGS.register("provided")
        def provided(x):
            return x
        assert "provided" in THINGS   # a read while the providers load does not recurse
    """))
    (tmp_path / "reg_broken.py").write_text("raise RuntimeError('broken provider')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import reg_home

    assert "reg_provider" not in sys.modules
    assert not reg_home.THINGS.holds(alpha)           # holds() imports nothing
    assert "reg_provider" not in sys.modules
    assert reg_home.THINGS.names() == ["provided"] and "reg_provider" in sys.modules
    # A user's registration loads the providers first, so that a clash is refused at once.
    late = Registry("thing", providers=("reg_provider_late",))
    (tmp_path / "reg_provider_late.py").write_text(textwrap.dedent("""\
        import test_registry_late_home
        test_registry_late_home.LATE.register("dice", test_registry_late_home.own)
    """))
    home = type(sys)("test_registry_late_home")
    home.LATE, home.own = late, alpha
    monkeypatch.setitem(sys.modules, "test_registry_late_home", home)
    with pytest.raises(ValueError, match=r"thing name 'dice' is taken by .*test_registry\.alpha"):
        late.register("dice", beta)
    # A provider that fails says so, and is tried again on the next read.
    broken = Registry("thing", providers=("reg_broken",))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="broken provider"):
            broken.names()
    for module in ("reg_home", "reg_provider", "reg_provider_late", "reg_broken"):
        sys.modules.pop(module, None)


def test_the_loss_registry_is_filled_by_its_providers_without_tensorflow():
    """Spec-only: `multiloss.losses.names()` knows the incremental losses, and nothing imported TensorFlow
    or the incremental package before the registry was read."""
    code = textwrap.dedent("""\
        import json, sys
        import multiloss
        before = sorted(m for m in sys.modules if m.startswith("multiloss.incremental"))
        names = multiloss.losses.names()
        print(json.dumps({"before": before, "names": names, "tf": "tensorflow" in sys.modules,
                          "keras": "keras" in sys.modules}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "MULTILOSS_SPEC_ONLY": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == []
    assert {"incremental_distillation", "nca", "dice", "Dice", "mse", "kd"} <= set(got["names"])
    assert not got["tf"] and not got["keras"]


# --- the six registries -------------------------------------------------------------------------

class _Halves(Strategy):
    name = "registry_test_strategy"


class _Mine(Method):
    name = "registry_test_method"

    def spec(self, step):
        return {"terms": []}


def _builder(*args, **params):
    return None


# kind, register(name, obj), get(name), a new object, a built-in name and its holder
SIX = {
    "loss": (lambda n, o: ml.register_loss(n)(o), lambda n: ml.losses.get(n).fn, alpha,
             "dice", "multiloss.losses.builtin.dice", ml.losses.LOSSES),
    "strategy": (lambda n, o: ml.register_strategy(o, name=n), lambda n: STRATEGIES.get(n), _Halves,
                 "pcgrad", "multiloss.weighting.pcgrad.PCGrad", STRATEGIES),
    "method": (lambda n, o: register_method(o, name=n), ml.incremental.get_method, _Mine,
               "replay", "multiloss.incremental.methods.Replay", ml.incremental.METHODS),
    "model": (lambda n, o: register_model(n)(o), get_builder, _builder,
              "mlp", "multiloss.run.models.mlp", MODELS),
    "data source": (lambda n, o: register_data(n)(o), get_source, _builder,
                    "digits", "multiloss.run.data.digits", SOURCES),
    "backbone": (register_backbone, get_backbone, _builder,
                 "cnn", "multiloss.incremental.network.cnn", BACKBONES),
}


@pytest.mark.parametrize("kind", SIX)
def test_each_registry_takes_a_user_registration_and_refuses_a_clash(kind):
    register, get, obj, taken, holder, registry = SIX[kind]
    name = "registry_test_" + kind.replace(" ", "_")
    try:
        assert register(name, obj) is obj and get(name) is obj
        assert register(name, obj) is obj                           # again: a no-op
        assert registry.holds(obj) and name in registry.names()
        with pytest.raises(ValueError, match=rf"^{kind} name '{taken}' is taken by {re.escape(holder)}; "
                                             "register it under another name"):
            register(taken, obj)
        with pytest.raises(LookupError, match=rf"^unknown {kind} '{name}x'; did you mean '{name}'\?"):
            get(name + "x")
    finally:
        registry.unregister(name)
    assert name not in registry


def test_a_registered_loss_is_checked_against_how_terms_call_it():
    """A user's registered loss must take (y_true, y_pred, **params), as one named by import string."""
    ml.register_loss("probe_unary")(alpha)       # alpha(x): one argument
    try:
        with pytest.raises(ml.SpecError, match=r"outputs\.a\.loss: loss 'probe_unary' cannot be called as "
                                               r"f\(y_true, y_pred\): too many positional arguments"):
            ml.load_spec("outputs: {a: {loss: probe_unary}}")
    finally:
        ml.losses.LOSSES.unregister("probe_unary")
