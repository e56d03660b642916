"""``ml.compile`` on every kind of Keras model: Functional, Sequential, and subclasses returning a dict, a
list or one tensor.

Each is checked against native ``model.compile`` on a twin with the same
initial weights: the per-epoch losses must be equal.
"""

import keras
import numpy as np
import pytest

import multiloss as ml

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
YA = RNG.normal(size=(32, 3)).astype("float32")
YB = RNG.normal(size=(32, 1)).astype("float32")


def _fit(model, y, epochs=2):
    return model.fit(X, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0).history["loss"]


def _sequential(seed=0, build=True):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(8, activation="tanh", name="hidden"), keras.layers.Dense(3, name="out")]
    return keras.Sequential(([keras.Input((8,))] if build else []) + layers)


@pytest.mark.parametrize("head", ["out", "y"], ids=["last-layer-name", "the-one-head"])
@pytest.mark.parametrize("build", [True, False], ids=["built", "unbuilt"])
def test_sequential_trains_like_native(head, build):
    native = _sequential()
    native.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ours = _sequential(build=build)
    ml.compile(ours, f"outputs: {{{head}: {{loss: mse, metrics: [mae]}}}}", optimizer=keras.optimizers.SGD(0.1))
    h = ours.fit(X, YA, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h["loss"], _fit(native, YA), rtol=1e-6)
    assert h[f"{head}_loss"] == pytest.approx(h["loss"]) and f"{head}_mae" in h


def test_sequential_with_a_wrong_head_name_is_refused_naming_the_output():
    with pytest.raises(ml.SpecError, match=r"outputs\.nope.*the model has no output 'nope'; its outputs are \['out'\]"):
        ml.compile(_sequential(), "outputs: {nope: {loss: mse}, other: {loss: mse}}", optimizer="sgd")


def test_a_saved_sequential_reloads_and_evaluates_the_same(tmp_path):
    model = _sequential()
    ml.compile(model, "outputs: {out: {loss: mse, weight: 2.0}}", optimizer="sgd")
    _fit(model, YA, epochs=1)
    model.save(tmp_path / "seq.keras")
    back = keras.saving.load_model(tmp_path / "seq.keras")
    assert isinstance(back, keras.Sequential) and type(back.loss).__name__ == "CompositeLoss"
    np.testing.assert_allclose(back.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)
    assert back.evaluate(X, YA, verbose=0) == pytest.approx(model.evaluate(X, YA, verbose=0), rel=1e-6)


class DictHeads(keras.Model):
    """A subclassed two-head model returning a dict; it does not name its outputs."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.trunk = keras.layers.Dense(8, activation="tanh")
        self.head_a = keras.layers.Dense(3)
        self.head_b = keras.layers.Dense(1)

    def call(self, x):
        h = self.trunk(x)
        return {"a": self.head_a(h), "b": self.head_b(h)}


class ListHeads(DictHeads):
    def call(self, x):
        out = super().call(x)
        return [out["a"], out["b"]]


class OneHead(DictHeads):
    def call(self, x):
        return self.head_a(self.trunk(x))


def _subclassed(cls, seed=0):
    keras.utils.set_random_seed(seed)
    model = cls()
    model(X[:1])
    return model


@pytest.mark.parametrize("cls", [DictHeads, ListHeads], ids=["dict", "list"])
@pytest.mark.parametrize("strategy", [None, "pcgrad"])
def test_subclassed_models_train_like_native(cls, strategy):
    native = _subclassed(cls)
    y = {"a": YA, "b": YB} if cls is DictHeads else [YA, YB]
    native.compile(optimizer=keras.optimizers.SGD(0.1), loss={"a": "mse", "b": "mse"} if cls is DictHeads
                   else ["mse", "mse"], loss_weights={"a": 1.0, "b": 0.5} if cls is DictHeads else [1.0, 0.5])
    spec = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}}}
    if strategy:
        spec["weighting"] = {"strategy": strategy}
    ours = _subclassed(cls)
    ml.compile(ours, spec, optimizer=keras.optimizers.SGD(0.1))
    h = ours.fit(X, {"a": YA, "b": YB}, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    assert {"a_loss", "b_loss", "a_weight", "b_weight"} <= set(h)
    if strategy is None:
        np.testing.assert_allclose(h["loss"], _fit(native, y), rtol=1e-6)
    else:       # PCGrad's weighted sum is logged; the update differs from the plain sum's
        assert np.isfinite(h["loss"]).all()


def test_a_subclassed_models_class_weight_ids_are_checked_against_its_classes():
    """A subclass has no static outputs for ml.compile to read: `class_weight: {7: 2.0}` on its 3 classes
    trained and weighted nothing. Now refused when the step is traced; the ids it has still weigh."""
    labels = (np.arange(32) % 3).astype("int32")
    spec = ("outputs:\n  a: {loss: {name: sparse_categorical_crossentropy, params: {from_logits: true}}, "
            "class_weight: {%d: 2.0}}\n  b: {loss: mse}\n")
    model = _subclassed(DictHeads)
    ml.compile(model, spec % 7, optimizer="sgd")
    with pytest.raises(ml.SpecError, match=r"<string>:2: outputs\.a\.class_weight: class id\(s\) \[7\] out of range: "
                                           r"output 'a' has 3 classes \(ids 0\.\.2\)"):
        model.evaluate(X, {"a": labels, "b": YB}, verbose=0)
    ml.compile(model, spec % 2, optimizer="sgd")
    got = model.evaluate(X, {"a": labels, "b": YB}, batch_size=32, verbose=0, return_dict=True)["a_loss"]
    logits = np.asarray(model(X)["a"], "float64")
    ce = -(logits[np.arange(32), labels] - np.log(np.exp(logits).sum(1)))
    w = np.where(labels == 2, 2.0, 1.0)
    assert got == pytest.approx((w * ce).mean(), rel=1e-5)      # sum_over_batch_size: Σ W·L / B


def test_fit_class_weight_on_several_heads_points_to_the_spec():
    """Keras alone says only "class_weight is only supported for Models with a single output"."""
    model = _subclassed(DictHeads)
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse"}}}, optimizer="sgd")
    with pytest.raises(ValueError, match=r"fit\(class_weight=\.\.\.\) weighs the classes of one output, and this "
                                         r"model has 2 \(a, b\): give each head its own in the loss spec, "
                                         r"`outputs: \{a: \{class_weight: \{3: 5\.0\}\}\}`"):
        model.fit(X, {"a": YA, "b": YB}, class_weight={0: 1.0, 1: 2.0}, verbose=0)


def test_a_subclassed_single_tensor_model_takes_the_specs_one_head():
    native = _subclassed(OneHead)
    native.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ours = _subclassed(OneHead)
    ml.compile(ours, "outputs: {score: {loss: mse}}", optimizer=keras.optimizers.SGD(0.1))
    np.testing.assert_allclose(_fit(ours, YA), _fit(native, YA), rtol=1e-6)
