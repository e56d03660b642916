"""CompositeLoss's public ways to read per-term values: ``compute``, ``elementwise`` (all or some terms),
``parts`` (numerators, denominators, presence) and ``term_index``; they agree with each other."""

import numpy as np
import pytest

import multiloss as ml
from multiloss.core.composite import TermParts

SPEC = {"outputs": {"a": {"loss": "mse", "weight": 0.5, "mask_value": -1.0},
                    "b": {"loss": "mae", "reduction": "sum"}}}


def _data():
    r = np.random.default_rng(0)
    y_true = {"a": r.normal(size=(4, 2)).astype("float32"), "b": r.normal(size=(4, 1)).astype("float32")}
    y_true["a"][1] = -1.0                                              # one masked row
    y_pred = {"a": r.normal(size=(4, 2)).astype("float32"), "b": r.normal(size=(4, 1)).astype("float32")}
    return y_true, y_pred


def test_parts_values_and_stacked_equal_compute():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    parts = composite.parts(y_true, y_pred)
    assert isinstance(parts, TermParts) and len(parts.numerators) == 2
    np.testing.assert_array_equal(np.asarray(parts.present), [1.0, 1.0])
    result = composite.compute(y_true, y_pred)
    want = [float(result.losses[n]) for n in composite.term_names]
    np.testing.assert_allclose([float(v) for v in parts.values()], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(parts.stacked()), want, rtol=1e-6)
    np.testing.assert_allclose(float(parts.numerators[0]) / float(parts.denominators[0]), want[0], rtol=1e-6)
    assert composite.parts(y_true, y_pred, present=False).present is None


def test_a_term_absent_from_the_batch_is_not_present():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    y_true["a"][:] = -1.0
    np.testing.assert_array_equal(np.asarray(composite.parts(y_true, y_pred).present), [0.0, 1.0])


def test_elementwise_of_some_terms_needs_only_their_targets():
    composite = ml.build_loss(SPEC)
    y_true, y_pred = _data()
    every = composite.elementwise(y_true, y_pred)
    some = composite.elementwise({"b": y_true["b"]}, y_pred, terms=["b"])
    assert list(some) == ["b"]
    np.testing.assert_array_equal(np.asarray(some["b"][0]), np.asarray(every["b"][0]))
    with pytest.raises(KeyError, match="unknown term 'c'"):
        composite.elementwise(y_true, y_pred, terms=["c"])
    assert [composite.term_index(n) for n in composite.term_names] == [0, 1]
