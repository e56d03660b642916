"""`weighting:` in the spec: every strategy selectable from YAML, errors that name the YAML path."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.weighting import STRATEGIES

HEADS = "outputs:\n  cls: {loss: categorical_crossentropy}\n  reg: {loss: mse, weight: 0.5}\n"


def _model():
    x = keras.Input((4,))
    h = keras.layers.Dense(5, name="trunk")(x)
    return keras.Model(x, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                           "reg": keras.layers.Dense(2, name="reg")(h)})


def _error(text: str) -> str:
    with pytest.raises(ml.SpecError) as info:
        ml.load_spec(text)
    return str(info.value)


def test_the_twenty_seven_strategies_are_registered_and_load_from_yaml():
    assert sorted(STRATEGIES) == sorted(["static", "uncertainty", "dwa", "gradnorm", "pcgrad", "rlw",
                                         "mgda", "cagrad", "nash_mtl", "imtl_g", "gradvac", "aligned_mtl",
                                         "upgrad", "famo", "db_mtl", "graddrop", "gls", "fairgrad", "stch",
                                         "imtl_l", "imtl", "config", "dual_proj", "excess_mtl", "moco",
                                         "modo", "sdmgrad"])
    for name in STRATEGIES:
        spec = ml.load_spec(HEADS + f"weighting: {{strategy: {name}}}\n")
        composite = ml.build_loss(spec)
        if name == "static":
            assert composite.weighting is None          # nothing dynamic: the plain static path
        else:
            assert composite.weighting.strategy.name == name
        assert ml.load_spec(spec.to_dict()).weighting.strategy == name


def test_a_spec_without_weighting_keeps_the_static_path():
    composite = ml.build_loss(HEADS)
    assert composite.weighting is None
    assert composite.spec.to_dict().keys() == {"outputs"}


@pytest.mark.parametrize("tail,where,message", [
    ("weighting: {strategy: gradnrom}", "weighting.strategy",
     "unknown strategy 'gradnrom'; did you mean 'gradnorm' or 'graddrop'? valid: static, uncertainty, dwa, gradnorm, "
     "pcgrad, rlw, mgda, cagrad, nash_mtl, imtl_g, gradvac, aligned_mtl, upgrad, famo, db_mtl, graddrop, gls, "
     "fairgrad, stch, imtl_l, imtl, config, dual_proj, excess_mtl, moco, modo, sdmgrad "
     "(or 'package.module:Class', or register your own with multiloss.register_strategy)"),
    ("weighting: {strategy: gradnorm, params: {alph: 1.5}}", "weighting.params.alph",
     "strategy 'gradnorm' has no parameter 'alph'; valid: alpha, lr, layer"),
    ("weighting: {strategy: static, params: {x: 1}}", "weighting.params.x",
     "strategy 'static' has no parameter 'x'; valid: none (it takes no params)"),
    ("weighting: {strategy: gradnorm, params: {alpha: -1}}", "weighting.params.alpha",
     "must be ≥ 0.0, got -1"),
    ("weighting: {strategy: dwa, params: {temperature: hot}}", "weighting.params.temperature",
     "valid number"),
    ("weighting: {strategy: mgda, params: {solver: newton}}", "weighting.params.solver",
     "'auto', 'exact' or 'frank_wolfe'"),
    ("weighting: {strategy: uncertainty, params: {kinds: {clss: classification}}}",
     "weighting.params.kinds.clss", "no term named 'clss'; did you mean 'cls'? terms: ['cls', 'reg']"),
    ("weighting: {strategy: stch, params: {ideal: {rg: 0.1}}}",
     "weighting.params.ideal.rg", "no term named 'rg'; did you mean 'reg'? terms: ['cls', 'reg']"),
    ("weighting: {strategy: uncertainty, params: {kinds: {cls: ordinal}}}",
     "weighting.params.kinds.cls", "'regression' or 'classification', got 'ordinal'"),
    ("weighting: {strategy: uncertainty, params: {kinds: {cls: clasification}}}",
     "weighting.params.kinds.cls", "got 'clasification'; did you mean 'classification'?"),
    ("weighting: pcgrd", "weighting.strategy", "unknown strategy 'pcgrd'; did you mean 'pcgrad'"),
    ("weighting: {strategy: dwa, vectorize: true}", "weighting.vectorize", "'dwa' has nothing to vectorize"),
    ("weighting: {strategy: rlw, shared: [trunk]}", "weighting.shared", "has no use for shared parameters"),
    ("weighting: {strategy: pcgrad, params: {seed: 1}, sharde: [trunk]}", "weighting.sharde", "unknown key"),
    # A quoted number or a boolean was read as a number (pydantic's lax mode), as head weights are not.
    ("weighting: {strategy: dwa, params: {temperature: '2.0'}}", "weighting.params.temperature",
     "Input should be a valid number, got '2.0'"),
    ("weighting: {strategy: pcgrad, params: {seed: true}}", "weighting.params.seed",
     "Input should be a valid integer, got True"),
])
def test_weighting_errors_name_the_yaml_path_and_the_valid_choices(tail, where, message):
    rendered = _error(HEADS + tail + "\n")
    assert f":4: {where}:" in rendered, rendered
    assert message in rendered, rendered


def test_a_number_field_that_also_takes_words_keeps_them():
    """A user strategy's `t: float | Literal["auto"]` takes "auto"; an optional constrained float does not
    take "2.0" (pydantic nests it one level down)."""
    from typing import Annotated, Literal

    from pydantic import Field

    from multiloss.spec.validation import plain_number

    assert plain_number("auto", float | Literal["auto"]) == "auto"
    assert plain_number(2, float) == 2 and plain_number(None, float | None) is None
    for value, annotation in (("2.0", Annotated[float, Field(gt=0)] | None), (True, int | None), ("5", int)):
        with pytest.raises(Exception, match="Input should be a valid"):
            plain_number(value, annotation)


def test_a_nan_param_is_one_problem():
    """`init: .nan` was told "must be a finite number" and "must be ≤ 80.0, got nan"."""
    assert _error(HEADS + "weighting: {strategy: uncertainty, params: {init: .nan}}\n") == \
        "<string>:4: weighting.params.init: must be a finite number"


def test_a_strategy_name_alone_is_the_strategy_with_its_defaults():
    short = ml.load_spec(HEADS + "weighting: pcgrad\n")
    assert short.weighting == ml.load_spec(HEADS + "weighting: {strategy: pcgrad}\n").weighting
    assert short.weighting.strategy == "pcgrad" and short.weighting.params == {}
    assert ml.load_spec(HEADS + "weighting: null\n").weighting is None


def test_shared_layers_and_gradnorm_layer_are_checked_against_the_model():
    with pytest.raises(ml.SpecError, match=r"weighting\.shared\.0: the model has no layer 'trunc'.*"
                                           r"did you mean 'trunk'\?.*layers: \['trunk', 'cls', 'reg'\]"):
        ml.compile(_model(), HEADS + "weighting: {strategy: pcgrad, shared: [trunc]}\n")
    with pytest.raises(ml.SpecError, match=r"weighting\.params\.layer: the model has no layer 'trnk'"):
        ml.compile(_model(), HEADS + "weighting: {strategy: gradnorm, params: {layer: trnk}}\n")
    model = ml.compile(_model(), HEADS + "weighting: {strategy: gradnorm, params: {layer: trunk}}\n")
    assert [v.path for v in model.loss.weighting.layer] == ["trunk/kernel", "trunk/bias"]


def _two_towers():
    x = keras.Input((4,))
    return keras.Model(x, {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(keras.layers.Dense(5, name="ta")(x)),
                           "reg": keras.layers.Dense(2, name="reg")(keras.layers.Dense(5, name="tb")(x))})


@pytest.mark.parametrize("strategy", ["pcgrad", "mgda", "cagrad", "nash_mtl"])
def test_a_gradient_strategy_without_shared_parameters_is_refused(strategy):
    """Two towers share nothing: a strategy that combines gradients on shared parameters would silently
    train as static weights."""
    with pytest.raises(ml.SpecError, match=rf"weighting\.strategy: {strategy} combines the terms' gradients on "
                                           r"the parameters they share, but no trainable variable is used by two"):
        ml.compile(_two_towers(), HEADS + f"weighting: {{strategy: {strategy}}}\n", optimizer="sgd")
    ml.compile(_two_towers(), HEADS + "weighting: {strategy: uncertainty}\n", optimizer="sgd")   # a loss weighting
    ml.compile(_two_towers(), HEADS + "weighting: {strategy: imtl}\n", optimizer="sgd")   # learns its loss scales


def test_a_layer_named_shared_must_feed_two_terms():
    with pytest.raises(ml.SpecError, match=r"weighting\.shared\.1: layer 'reg' is used by only term 'reg', so it is "
                                           r"not shared: .* the model's shared layers: \['trunk'\]"):
        ml.compile(_model(), HEADS + "weighting: {strategy: pcgrad, shared: [trunk, reg]}\n")
    with pytest.raises(ml.SpecError, match=r"weighting\.params\.layer: layer 'cls' is used by only term 'cls'"):
        ml.compile(_model(), HEADS + "weighting: {strategy: gradnorm, params: {layer: cls}}\n")


def test_shared_parameters_are_inferred_from_the_layer_graph():
    from multiloss.run.examples import siamese_model

    model = ml.compile(siamese_model(), "configs/siamese.yaml", optimizer="sgd")
    assert model.loss.weighting is None
    from multiloss.weighting import infer_shared

    shared = {v.path for v in infer_shared(model, model.loss.terms)}
    # The CNN feeds every term; the classifier feeds ctg_out_1 and ctg_out_2; bin_out's Dense only bin_out.
    want = {v.path for v in model.get_layer("shared_cnn").trainable_variables}
    want |= {v.path for v in model.get_layer("classifier").trainable_variables}
    assert shared == want
    spec = ml.load_spec("configs/siamese.yaml").to_dict()
    spec["weighting"] = {"strategy": "gradnorm"}
    model = ml.compile(siamese_model(), spec, optimizer="sgd")
    # GradNorm's W: the last layer holding shared variables.
    assert [v.path for v in model.loss.weighting.layer] == ["classifier/kernel", "classifier/bias"]


class SubclassedTwoHeads(keras.Model):
    """A subclassed model: no layer graph to read (it names its outputs for ml.compile)."""

    def __init__(self):
        super().__init__()
        self.output_names = ["a", "b"]
        self.trunk = keras.layers.Dense(5)
        self.a = keras.layers.Dense(1)
        self.b = keras.layers.Dense(1)

    def call(self, x):
        h = self.trunk(x)
        return {"a": self.a(h), "b": self.b(h)}


def test_subclassed_models_use_gradient_connectivity_or_named_layers():
    spec = "outputs: {a: {loss: mse}, b: {loss: mse}}\nweighting: {strategy: gradnorm}\n"
    model = SubclassedTwoHeads()
    model(np.zeros((2, 3), "float32"))
    with pytest.raises(ml.SpecError, match=r"weighting\.params\.layer: GradNorm needs its layer W"):
        ml.compile(model, spec, optimizer="sgd")
    # PCGrad finds the shared variables from which per-task gradients are not None.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = {"a": rng.normal(size=(8, 1)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    model = SubclassedTwoHeads()
    model(x)
    ml.compile(model, "outputs: {a: {loss: mse}, b: {loss: mse}}\nweighting: {strategy: pcgrad}\n",
               optimizer="sgd")
    assert model.loss.weighting.shared is None
    hist = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert {"a_weight", "b_weight"} <= set(hist)


def test_an_uncertainty_init_that_overflows_float32_is_refused_at_its_key():
    """init −100 makes exp(−s) = e¹⁰⁰, inf in float32: the first step stopped on a non-finite total,
    blamed on the regularization."""
    text = _error(HEADS + "weighting: {strategy: uncertainty, params: {init: -100}}\n")
    assert "weighting.params.init" in text and "-80" in text, text
    assert ml.load_spec(HEADS + "weighting: {strategy: uncertainty, params: {init: -80}}\n").weighting.params == {
        "init": -80}
