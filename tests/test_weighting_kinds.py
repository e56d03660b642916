"""Strategy kinds as types: the mapping of every built-in, DB-MTL's two kinds, the flags of earlier
releases (read by the registry, and set by user subclasses of ``Strategy``), and compute hooks that
only compute (the step writes the state through ``update_state``)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import multiloss as ml
from multiloss.core.train_step import provider_for
from multiloss.weighting import STRATEGIES, Strategy
from multiloss.weighting.base import (
    KINDS,
    Context,
    GramWeighting,
    LayerGradientWeighting,
    LossWeighting,
    RowAggregator,
    StateUpdate,
    state_variable,
)
from multiloss.weighting.dbmtl import DBMTL
from multiloss.weighting.graddrop import graddrop_update
from multiloss.weighting.pcgrad import pcgrad_coefficients, random_order

KIND = {"static": LossWeighting, "uncertainty": LossWeighting, "dwa": LossWeighting, "rlw": LossWeighting,
        "famo": LossWeighting, "gradnorm": LayerGradientWeighting, "pcgrad": GramWeighting, "mgda": GramWeighting,
        "cagrad": GramWeighting, "nash_mtl": GramWeighting, "imtl_g": GramWeighting, "gradvac": GramWeighting,
        "aligned_mtl": GramWeighting, "upgrad": GramWeighting, "db_mtl": GramWeighting,
        "graddrop": RowAggregator}
#: The flags as earlier releases set them on each class.
FLAGS = {name: ("layer" if kind is LayerGradientWeighting else None if kind is LossWeighting else "shared",
                kind is RowAggregator) for name, kind in KIND.items()}


class _Term:
    def __init__(self, name):
        self.name = name


TERMS = [_Term("a"), _Term("b")]
CTX = Context(step=tf.constant(0, tf.int64), training=True, replicas=1)


def _strategy(name, **params):
    cls = STRATEGIES[name]
    strategy = cls(cls.Params(**params), TERMS)
    strategy.build()
    return strategy


@pytest.mark.parametrize("name", sorted(KIND))
def test_every_built_in_strategy_has_its_kind_and_the_flags_of_earlier_releases(name):
    cls = STRATEGIES[name]
    assert cls.kind() is KIND[name] and issubclass(cls, KIND[name]) and issubclass(cls, Strategy)
    assert (cls.gradients, cls.direct) == FLAGS[name]
    assert isinstance(cls.direct, bool)      # a class attribute, as the registry and the step read it


def test_db_mtl_is_a_gram_weighting_and_with_averages_a_row_aggregator():
    assert DBMTL.kind() is GramWeighting and issubclass(DBMTL, RowAggregator) and DBMTL.direct is False
    averaged = _strategy("db_mtl", beta=0.9)
    assert averaged.active_kind() is GramWeighting          # no rows bound yet: no buffer
    assert averaged.bind_rows(12, "parameters") is None
    assert averaged.active_kind() is RowAggregator and averaged.buffer.shape == (2, 12)
    plain = _strategy("db_mtl", beta=0.0)
    assert plain.bind_rows(12, "parameters") is None and plain.active_kind() is GramWeighting
    rep = _strategy("db_mtl", beta=0.9)
    assert rep.bind_rows(None, "representation") is None and rep.active_kind() is GramWeighting


def _model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    h = keras.layers.Dense(5, activation="tanh", name="trunk")(x)
    return keras.Model(x, {"a": keras.layers.Dense(2, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})


@pytest.mark.parametrize("beta, provider", [(0.9, "Parameters"), (0.0, "Parameters")])
def test_db_mtl_in_a_compiled_model_runs_as_its_params_choose(beta, provider):
    model = _model()
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse"}},
                       "weighting": {"strategy": "db_mtl", "params": {"beta": beta}}}, optimizer="sgd")
    strategy = model.loss.weighting.strategy
    assert strategy.active_kind() is (RowAggregator if beta else GramWeighting)
    assert type(provider_for(model.loss)).__name__ == provider
    assert ("buffer" in strategy.state) == (beta > 0)


def test_legacy_flags_name_the_kind_of_a_plain_strategy_subclass():
    class Loss(Strategy):
        pass

    class Gram(Strategy):
        gradients = "shared"

        def combine(self, gram, values, present, ctx):
            return tf.ones([self.num_terms])

    class Rows(Strategy):
        gradients = "shared"
        direct = True

    class OneLayer(Strategy):
        gradients = "layer"

    assert [c.kind() for c in (Loss, Gram, Rows, OneLayer)] == [LossWeighting, GramWeighting, RowAggregator,
                                                                LayerGradientWeighting]
    assert Strategy.kind() is LossWeighting and set(KINDS) == {LossWeighting, GramWeighting, RowAggregator,
                                                               LayerGradientWeighting}
    assert Gram([], TERMS).active_kind() is GramWeighting


def test_combine_only_computes_and_update_state_writes():
    pcgrad = _strategy("pcgrad", seed=3)
    gram = tf.constant([[1.0, -0.5], [-0.5, 2.0]], tf.float64)
    before = pcgrad.current.numpy().copy()
    lam = pcgrad.combine(gram, tf.ones(2), tf.ones(2), CTX)
    np.testing.assert_array_equal(pcgrad.current.numpy(), before)                  # nothing written
    assert pcgrad.update_state(lam) is lam
    np.testing.assert_array_equal(pcgrad.current.numpy(), lam.numpy())
    gradnorm = _strategy("gradnorm")
    out = gradnorm.combine(tf.linalg.diag(tf.constant([1.0, 4.0])), tf.constant([1.0, 2.0]), tf.ones(2), CTX)
    assert isinstance(out, StateUpdate) and set(out.state) == {"initial", "seen", "w"}
    np.testing.assert_array_equal(gradnorm.w.numpy(), [1.0, 1.0])                  # w(t) still
    np.testing.assert_array_equal(gradnorm.update_state(out).numpy(), [1.0, 1.0])   # returns w(t) ...
    np.testing.assert_allclose(gradnorm.w.numpy(), out.state["w"].numpy())           # ... and moved to w(t+1)
    gradvac = _strategy("gradvac")
    out = gradvac.combine(tf.constant([[1.0, -0.5], [-0.5, 2.0]]), tf.ones(2), tf.ones(2), CTX)
    assert not gradvac.targets.numpy().any()
    gradvac.update_state(out)
    assert gradvac.targets.numpy().any() and np.allclose(gradvac.current.numpy(), out.weights.numpy())


# --- user subclasses of Strategy written against the flags of earlier releases ------------------


class LegacyState(Strategy):
    """As users wrote a gradient strategy against the flags: its last λ in ``current``, read by ``weights``."""

    gradients = "shared"

    def build(self):
        self.current = state_variable(np.ones(self.num_terms), f"legacy_{type(self).__name__}_weights")
        self.state = {"current": self.current}

    def weights(self, values, present, ctx):
        return tf.convert_to_tensor(self.current)


class LegacyPCGrad(LegacyState):
    """PCGrad: combine computes λ and writes its state itself."""

    def combine(self, gram, values, present, ctx):
        order = random_order(self.num_terms, 3, ctx.step)
        lam = tf.cast(tf.reduce_sum(pcgrad_coefficients(tf.cast(gram, tf.float64), order), 0), tf.float32)
        self.current.assign(lam)
        return lam


class LegacyGradDrop(LegacyState):
    """GradDrop as a ``direct`` strategy: aggregate returns ``(update, λ)``."""

    direct = True

    def aggregate(self, rows, values, present, ctx):
        from multiloss.weighting import rng

        rows = rows * tf.cast(present, rows.dtype)[:, None]
        update, lam = graddrop_update(rows, rng.uniform(tf.shape(rows)[1], 0, ctx.step))
        self.current.assign(tf.cast(lam, tf.float32))
        return update, tf.cast(lam, tf.float32)


def _train(strategy, **params):
    model = _model()
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}},
                       "weighting": {"strategy": strategy, "params": params}},
               optimizer=keras.optimizers.SGD(0.1))
    r = np.random.default_rng(0)
    x = r.normal(size=(16, 4)).astype("float32")
    y = {"a": r.normal(size=(16, 2)).astype("float32"), "b": r.normal(size=(16, 1)).astype("float32")}
    hist = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    weighting = model.loss.weighting
    return hist, [v.numpy() for v in model.trainable_variables], weighting and weighting.strategy.get_state()


@pytest.mark.parametrize("legacy, builtin, params", [(LegacyPCGrad, "pcgrad", {"seed": 3}),
                                                     (LegacyGradDrop, "graddrop", {})])
def test_a_strategy_subclass_written_against_the_flags_trains_as_the_built_in(legacy, builtin, params):
    got, want = _train(f"{__name__}:{legacy.__name__}"), _train(builtin, **params)   # an import string
    assert got[0].keys() == want[0].keys()
    for key in want[0]:
        np.testing.assert_allclose(got[0][key], want[0][key], rtol=1e-6, err_msg=key)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[2]["current"], want[2]["current"], rtol=1e-6)


class SumOfGradients(GramWeighting):
    """The least a Gram strategy of one's own needs: ``combine``."""

    def combine(self, gram, values, present, ctx):
        return tf.ones([self.num_terms]) * tf.cast(present, tf.float32)


def test_a_gram_weighting_of_ones_trains_as_static_weights_and_logs_its_last_lambda():
    got, want = _train(f"{__name__}:SumOfGradients"), _train("static")
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0]["loss"], want[0]["loss"], rtol=1e-5)
    assert got[2] == {"current": [1.0, 1.0]}
