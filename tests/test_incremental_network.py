"""Classifier expansion keeps the old weights exactly; weight aligning; non-negative clipping."""

import keras
import numpy as np
import pytest

from multiloss.incremental import IncrementalNet, align_weights, expand_classifier
from multiloss.incremental.network import cnn, get_backbone


def _net(nonnegative=False):
    keras.utils.set_random_seed(0)
    return IncrementalNet(cnn({"input_shape": (8, 8, 1)}, filters=(4,), dense=12), nonnegative)


def test_expansion_keeps_old_weights_exactly():
    net = _net()
    net.expand(3)
    k = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    b = np.array([0.5, -1.25, 2.0], "float32")
    net.head.set_weights([k, b])
    x = np.random.default_rng(1).random((16, 8, 8, 1)).astype("float32")
    before = net.logits(x)
    net.expand(5)
    kernel, bias = net.head.get_weights()
    assert kernel.shape == (12, 5) and bias.shape == (5,)
    np.testing.assert_array_equal(kernel[:, :3], k)  # bit for bit
    np.testing.assert_array_equal(bias[:3], b)
    assert np.abs(kernel[:, 3:]).sum() > 0  # the new units are initialised, not copies or zeros
    after = net.logits(x)
    np.testing.assert_allclose(after[:, :3], before, rtol=1e-6, atol=1e-6)
    assert after.shape == (16, 5)
    with pytest.raises(ValueError, match="expanding needs more"):
        expand_classifier(net.head, 5, 12)


def test_model_outputs_logits_and_rebuilds_on_expansion():
    net = _net()
    with pytest.raises(ValueError, match="call expand"):
        net.model()
    net.expand(2)
    first = net.model()
    assert first.output_names == ["logits"] or list(first.output.keys()) == ["logits"]
    net.expand(4)
    assert net.model() is not first and net.num_classes == 4
    # The backbone is shared: the expanded model has the same feature weights.
    np.testing.assert_array_equal(net.model().get_weights()[0], first.get_weights()[0])


def test_weight_aligning_formula():
    head = expand_classifier(None, 5, 4)
    k = np.abs(np.random.default_rng(2).normal(size=(4, 5))).astype("float32")
    k[:, 3:] *= 3.0  # new classes with larger weight vectors
    head.set_weights([k, np.zeros(5, "float32")])
    gamma = align_weights(head, num_old=3)
    norms = np.linalg.norm(k, axis=0)
    assert gamma == pytest.approx(norms[:3].mean() / norms[3:].mean(), rel=1e-6)
    kernel = head.get_weights()[0]
    np.testing.assert_array_equal(kernel[:, :3], k[:, :3])
    np.testing.assert_allclose(kernel[:, 3:], k[:, 3:] * gamma, rtol=1e-6)
    new_norms = np.linalg.norm(kernel, axis=0)
    assert new_norms[3:].mean() == pytest.approx(new_norms[:3].mean(), rel=1e-5)
    with pytest.raises(ValueError, match="needs old and new classes"):
        align_weights(head, 0)


def test_nonnegative_head_without_bias_stays_nonnegative_through_training():
    keras.utils.set_random_seed(0)
    net = IncrementalNet(cnn({"input_shape": (8, 8, 1)}, filters=(4,), dense=12), nonnegative_head=True,
                         head_bias=False)
    net.expand(3)
    assert len(net.head.get_weights()) == 1 and (net.head.get_weights()[0] >= 0).all()
    model = net.model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 8, 8, 1)).astype("float32"), {"logits": rng.integers(0, 3, 64)},
              epochs=2, verbose=0)
    assert (net.head.get_weights()[0] >= 0).all()
    kernel = net.head.get_weights()[0]
    net.expand(4)
    assert (net.head.get_weights()[0] >= 0).all()
    np.testing.assert_array_equal(net.head.get_weights()[0][:, :3], kernel)
    with pytest.raises(ValueError, match="has no bias; cannot expand it into one with"):
        expand_classifier(net.head, 5, 12, bias=True)


def test_backbone_lookup():
    assert get_backbone("mlp")({"input_shape": (8, 8, 1)}, hidden=(5,)).outputs[0].shape[-1] == 5
    with pytest.raises(LookupError, match="unknown backbone 'cnnn'; did you mean 'cnn'"):
        get_backbone("cnnn")
    with pytest.raises(ValueError, match="one feature vector"):
        IncrementalNet(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3)]))
