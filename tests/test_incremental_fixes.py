"""PODNet and DER as the reference code does them (issue 19): frozen old proxies, imprinted new ones,
pre-ReLU features, the NCA margin's units; DER's extractor copied from the previous one, its classifier
re-initialised and re-trained at T = 5.  Each against numpy or an exact property."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.incremental import DER, PODNet, Step
from multiloss.incremental.learner import ClassData, Learner
from multiloss.incremental.losses import nca, tempered_crossentropy
from multiloss.incremental.memory import ExemplarMemory
from multiloss.incremental.network import (
    LocalSimilarityClassifier,
    cnn,
    imprint_proxies,
    kmeans,
    pre_relu_backbone,
)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _backbone():
    return cnn({"input_shape": (8, 8, 1)}, filters=(3, 4), dense=6)


def _learner(method, seed=0, epochs=2):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 12).astype("int32")
    x = (rng.random((48, 8, 8, 1)) + y[:, None, None, None] * 0.2).astype("float32")
    net = method.build_net(_backbone)
    return Learner(net, ExemplarMemory(8, "herding", seed=seed), ClassData(x, y), epochs=epochs, batch_size=8,
                   optimizer=lambda scale, steps: keras.optimizers.SGD(0.1 * scale, momentum=0.9), seed=seed)


@pytest.mark.parametrize("freeze", [True, False])
def test_podnet_freezes_the_old_proxies_in_the_main_stage_only(freeze):
    method = PODNet(proxies=2, balanced_epochs=0, freeze_old_proxies=freeze)
    learner = _learner(method, epochs=1)
    learner.run_step(method, Step(0, (2,)))
    before = np.asarray(learner.net.head.kernel).copy()
    learner.run_step(method, Step(1, (2, 2)))
    after = np.asarray(learner.net.head.kernel)
    if freeze:
        np.testing.assert_array_equal(after[:, :4], before)   # 2 old classes × 2 proxies: untouched
    else:
        assert np.abs(after[:, :4] - before).max() > 1e-4
        return
    # The class-balanced fine-tuning tunes every proxy (the reference code's `tuning: classifier`).
    method = PODNet(proxies=2, balanced_epochs=2)
    learner = _learner(method, epochs=1)
    learner.run_step(method, Step(0, (2,)))
    before = np.asarray(learner.net.head.kernel).copy()
    learner.run_step(method, Step(1, (2, 2)))
    assert [r["stage"] for r in learner.history].count("balanced") == 2
    assert np.abs(np.asarray(learner.net.head.kernel)[:, :4] - before).max() > 1e-4


def test_frozen_units_get_no_gradient_and_the_output_is_unchanged():
    layer = LocalSimilarityClassifier(3, proxies=2, scale=4.0)
    layer.build((None, 5))
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    free = np.asarray(layer(x))
    layer.frozen_units = 2
    np.testing.assert_allclose(np.asarray(layer(x)), free, rtol=1e-6)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad = np.asarray(tape.gradient(loss, layer.kernel))
    assert np.abs(grad[:, :4]).max() == 0 and np.abs(grad[:, 4:]).max() > 0


def test_imprinting_against_numpy():
    rng = np.random.default_rng(1)
    head = LocalSimilarityClassifier(3, proxies=1)
    head.build((None, 4))
    kernel = np.asarray(head.kernel).copy()
    feats = rng.normal(size=(30, 4)) + 2
    labels = np.repeat([1, 2], 15)
    imprint_proxies(head, feats, labels, [1, 2])
    norm = np.linalg.norm(kernel[:, 0])        # the one class not imprinted
    new = np.asarray(head.kernel)
    np.testing.assert_array_equal(new[:, 0], kernel[:, 0])
    for c in (1, 2):
        ref = unit(unit(feats[labels == c]).mean(0)) * norm
        np.testing.assert_allclose(new[:, c], ref, rtol=1e-5)
    # K proxies: the centres of a k-means of the normalised features, × the mean norm of the others.
    head = LocalSimilarityClassifier(2, proxies=3)
    head.build((None, 4))
    kernel = np.asarray(head.kernel).copy()
    blobs = np.concatenate([rng.normal(loc, 0.05, size=(10, 4)) for loc in ([3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0])])
    imprint_proxies(head, blobs, np.ones(30, int), [1], seed=3)
    centres = np.asarray(head.kernel)[:, 3:].T / np.linalg.norm(kernel[:, :3], axis=0).mean()
    pts = unit(blobs)
    assign = ((pts[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    assert sorted(np.bincount(assign, minlength=3)) == [10, 10, 10]   # one centre per blob
    for j in range(3):   # Lloyd's fixed point: each centre is the mean of its points
        np.testing.assert_allclose(centres[j], pts[assign == j].mean(0), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(head.kernel)[:, :3], kernel[:, :3])
    assert kmeans(pts[:2], 3).shape == (3, 4)   # fewer points than clusters: the points, repeated


def test_podnet_imprints_new_proxies_before_the_main_stage():
    method = PODNet(proxies=1, balanced_epochs=0)
    learner = _learner(method)
    learner.run_step(method, Step(0, (2,)))
    learner.net.expand(4)
    kernel = np.asarray(learner.net.head.kernel).copy()
    method.prepare(learner, Step(1, (2, 2)))
    x, y = learner.train.of([2, 3])
    feats = learner.net.features(x)
    norm = np.linalg.norm(kernel[:, :2], axis=0).mean()
    for c in (2, 3):
        np.testing.assert_allclose(np.asarray(learner.net.head.kernel)[:, c], unit(unit(feats[y == c]).mean(0)) * norm,
                                   rtol=1e-4, atol=1e-6)
    assert learner.net.head.frozen_units == 2
    none = PODNet(proxies=1, imprint="none")
    none.prepare(learner, Step(1, (2, 2)))   # leaves the kernel alone
    assert learner.net.head.frozen_units == 2


def test_pre_relu_features_against_numpy():
    keras.utils.set_random_seed(2)
    backbone = _backbone()
    cut = pre_relu_backbone(backbone)
    assert [w.shape for w in cut.get_weights()] == [w.shape for w in backbone.get_weights()]
    x = np.random.default_rng(2).random((5, 8, 8, 1)).astype("float32")
    dense = backbone.layers[-1]
    flat = keras.Model(backbone.inputs[0], dense.input)(x)
    pre = np.asarray(flat) @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(np.asarray(cut(x)), pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.maximum(pre, 0), np.asarray(backbone(x)), rtol=1e-5, atol=1e-6)
    assert (pre < 0).any()
    # A global pooling after a ReLU (the ResNets): pooled before the ReLU.
    inputs = keras.Input((4, 4, 2))
    h = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h)))
    conv = keras.Model(inputs, h)(x[:, :4, :4, :1].repeat(2, -1))
    np.testing.assert_allclose(np.asarray(pre_relu_backbone(model)(x[:, :4, :4, :1].repeat(2, -1))),
                               np.asarray(conv).mean((1, 2)), rtol=1e-5, atol=1e-6)
    tanh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
    with pytest.raises(ValueError, match="post_relu"):
        pre_relu_backbone(tanh)
    # PODNet's default network reads the pre-ReLU features; post_relu the backbone's own.
    net = PODNet(proxies=1).build_net(lambda: backbone)
    np.testing.assert_allclose(net.features(x), pre, rtol=1e-5, atol=1e-6)
    net = PODNet(proxies=1, features="post_relu").build_net(lambda: backbone)
    np.testing.assert_allclose(net.features(x), np.maximum(pre, 0), rtol=1e-5, atol=1e-6)


def test_nca_margin_in_similarity_units_against_numpy():
    rng = np.random.default_rng(3)
    sims, eta = np.tanh(rng.normal(size=(6, 4))), 7.0
    y = np.array([0, 1, 2, 3, 0, 2])
    z = eta * sims
    paper = np.array([-eta * (sims[i, c] - 0.6) + np.log(np.exp(eta * np.delete(sims[i], c)).sum())
                      for i, c in enumerate(y)])
    with_eta = np.concatenate([z, np.full((6, 1), eta)], 1).astype("float32")
    got = np.asarray(nca(y, with_eta, margin=0.6, hinge=False, margin_units="similarity"))
    np.testing.assert_allclose(got, paper, rtol=1e-5)
    # In logit units the same δ is η times weaker.
    logit = np.asarray(nca(y, z.astype("float32"), margin=0.6, hinge=False))
    np.testing.assert_allclose(paper - logit, 0.6 * (eta - 1), rtol=1e-5)
    with pytest.raises(ValueError):
        nca(y, z, margin_units="degrees")
    # Through PODNet's spec: the `scaled` output is [η·ŷ | η].
    method = PODNet(proxies=2, margin_units="similarity")
    net = method.build_net(_backbone)
    net.expand(4)
    x = rng.random((6, 8, 8, 1)).astype("float32")
    out = {k: np.asarray(v) for k, v in net.model()(x, training=False).items()}
    np.testing.assert_allclose(out["scaled"][:, :-1], out["logits"], rtol=1e-6)
    np.testing.assert_allclose(out["scaled"][:, -1], float(np.asarray(net.head.scale)), rtol=1e-6)
    term = method.spec(Step(0, (4,)))["terms"][0]
    result = ml.build_loss({"terms": [term]}).compute({"class": y}, {"scaled": out["scaled"]})
    ref = np.asarray(nca(y, out["scaled"], margin=0.6, margin_units="similarity")).mean()
    assert float(result.total) == pytest.approx(float(ref), rel=1e-5)


def test_der_extractor_starts_from_the_previous_one():
    for init in ("previous", "random"):
        keras.utils.set_random_seed(4)
        net = DER(extractor_init=init).build_net(_backbone)
        net.expand(2)
        net.expand(4)
        same = all(np.array_equal(a, b) for a, b in zip(net.backbones[0].get_weights(), net.backbones[1].get_weights()))
        assert same == (init == "previous")
        assert not net.backbones[0].trainable and net.backbones[1].trainable
    copy = net.copy()
    assert copy.copy_previous is False


def test_der_retraining_resets_the_classifier_and_uses_t5():
    rng = np.random.default_rng(5)
    z, y = rng.normal(size=(6, 5)) * 3, np.array([0, 1, 2, 3, 4, 4])
    ref = -np.log(np.exp(z / 5)[np.arange(6), y] / np.exp(z / 5).sum(1))
    np.testing.assert_allclose(np.asarray(tempered_crossentropy(y, z.astype("float32"), temperature=5.0)), ref,
                               rtol=1e-5)
    spec = DER().balanced_spec()
    result = ml.build_loss(spec).compute({"class": y}, {"logits": z.astype("float32")})
    assert float(result.total) == pytest.approx(ref.mean(), rel=1e-5)
    assert DER(balanced_temperature=1).balanced_spec()["terms"][0]["loss"]["name"] == "sparse_categorical_crossentropy"
    keras.utils.set_random_seed(6)
    net = DER().build_net(_backbone)
    net.expand(2)
    net.expand(4)
    before = [np.asarray(w).copy() for w in net.head.get_weights()]
    net.reset_classifier()
    after = net.head.get_weights()
    assert [a.shape for a in after] == [b.shape for b in before]
    assert not np.allclose(after[0], before[0]) and np.abs(after[1]).max() == 0   # fresh kernel, zero bias
    # In a step: the re-training stage runs from the re-initialised classifier, at T = 5.
    method = DER(balanced_epochs=1)
    learner = _learner(method)
    learner.run_step(method, Step(0, (2,)))
    learner.run_step(method, Step(1, (2, 2)))
    assert [r["stage"] for r in learner.history] == ["train"] * 4 + ["balanced"]


def test_a_checkpoint_saved_before_the_new_defaults_keeps_its_own():
    """A PODNet or DER run saved before issue 19 (no `method_params` in its state) is resumed and
    evaluated with the defaults it was trained with; a newer one with the parameters it recorded."""
    from multiloss.incremental.config import load_incremental_config
    from multiloss.incremental.runner import method_for

    def cfg(name, params):
        return load_incremental_config({"name": "x", "data": {"source": "digits"}, "scenario": {"initial": 2,
                                        "increment": 2}, "memory": {"budget": 20},
                                        "method": {"name": name, "params": params}})

    old = method_for(cfg("podnet", {"imprint": "kmeans"}), {"step": 0})
    assert (old.params.features, old.params.freeze_old_proxies, old.params.imprint) == ("post_relu", False, "kmeans")
    assert method_for(cfg("podnet", {}), None).params.features == "pre_relu"
    saved = PODNet(margin=0.3).params.model_dump(mode="json")
    assert method_for(cfg("podnet", {}), {"step": 0, "method_params": saved}).params.margin == 0.3
    der = method_for(cfg("der", {}), {"step": 1})
    assert (der.params.extractor_init, der.params.reset_classifier, der.params.balanced_epochs) == ("random", False, 20)
    assert method_for(cfg("icarl", {}), {"step": 1}).params.classifier == "nme"
