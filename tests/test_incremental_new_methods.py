"""Replay, BiC, PODNet and DER: each loss formula against an independent numpy reference,
through the composite loss where the method builds a spec; their networks' growth."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.incremental import DER, BiC, DERNet, IncrementalNet, PODNet, Replay, Step, incremental_targets
from multiloss.incremental.losses import nca, pod_flat, pod_pool, pod_spatial
from multiloss.incremental.methods import BiCHead, aux_labels, fold_bias_correction
from multiloss.incremental.network import LocalSimilarityClassifier, cnn, expand_lsc, feature_maps

STEP2 = Step(2, (2, 2, 2))  # 4 old classes, 2 new


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def ce(s, labels):
    return -np.log(softmax(s)[np.arange(len(labels)), labels])


def kd(t, s, T):
    p, q = softmax(t / T), softmax(s[:, : t.shape[1]] / T)
    return T * T * (p * (np.log(p) - np.log(q))).sum(-1)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_pool(m):
    """POD pooling by loops: for each row h, Σ_w a²[h, w, c]; for each column w, Σ_h a²[h, w, c]."""
    b, h, w, c = m.shape
    a = m.astype("float64") ** 2
    rows = np.array([[[a[i, r, :, k].sum() for k in range(c)] for r in range(h)] for i in range(b)])
    cols = np.array([[[a[i, :, q, k].sum() for k in range(c)] for q in range(w)] for i in range(b)])
    return np.concatenate([rows.reshape(b, -1), cols.reshape(b, -1)], axis=1)


def test_pod_pool_and_spatial_distance_against_numpy():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(3, 4, 5, 2)), rng.normal(size=(3, 2, 3, 4))
    np.testing.assert_allclose(np.asarray(pod_pool(m1.astype("float32"))), np_pool(m1), rtol=1e-5)
    old = np.concatenate([np_pool(m1), np_pool(m2)], 1)
    new = old + rng.normal(size=old.shape)
    sizes = [(4 + 5) * 2, (2 + 3) * 4]
    ref = (np.linalg.norm(unit(old[:, :18]) - unit(new[:, :18]), axis=1)
           + np.linalg.norm(unit(old[:, 18:]) - unit(new[:, 18:]), axis=1)) / 2
    got = np.asarray(pod_spatial(old.astype("float32"), new.astype("float32"), sizes=sizes))
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    # Equal maps: no loss; a map scaled by a positive factor: still none (each part is normalised).
    assert np.abs(np.asarray(pod_spatial(old, 3 * old, sizes=sizes))).max() < 1e-4
    with pytest.raises(ValueError):
        pod_spatial(old, new, sizes=[])


def test_pod_flat_and_nca_against_numpy():
    rng = np.random.default_rng(1)
    h_old, h_new = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    ref = 1 - (unit(h_old) * unit(h_new)).sum(1)
    np.testing.assert_allclose(np.asarray(pod_flat(h_old, h_new)), ref, rtol=1e-5)
    z = rng.normal(size=(6, 4)) * 3
    y = np.array([0, 1, 2, 3, 0, 2])
    raw = np.array([-(z[i, y[i]] - 0.6) + np.log(np.exp(np.delete(z[i], y[i])).sum()) for i in range(6)])
    np.testing.assert_allclose(np.asarray(nca(y, z.astype("float32"), margin=0.6, hinge=False)), raw, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(nca(y, z.astype("float32"), margin=0.6)), np.maximum(raw, 0), rtol=1e-5,
                               atol=1e-6)
    assert (raw < 0).any() and (raw > 0).any()  # the hinge matters on this batch


def test_local_similarity_classifier_against_numpy_and_expansion():
    rng = np.random.default_rng(2)
    layer = LocalSimilarityClassifier(3, proxies=4, scale=2.5)
    layer.build((None, 5))
    theta = rng.normal(size=(5, 12)).astype("float32")
    layer.set_weights([theta, np.float32(2.5)])
    h = rng.normal(size=(7, 5)).astype("float32")
    s = (unit(h) @ unit(theta.T).T).reshape(7, 3, 4)  # cosine of h with each proxy, class-major
    ref = 2.5 * (softmax(s, axis=-1) * s).sum(-1)
    np.testing.assert_allclose(np.asarray(layer(h)), ref, rtol=1e-5, atol=1e-6)
    grown = expand_lsc(layer, 5, 5, 4)
    np.testing.assert_array_equal(np.asarray(grown.kernel)[:, :12], theta)
    assert float(np.asarray(grown.scale)) == 2.5
    np.testing.assert_allclose(np.asarray(grown(h))[:, :3], ref, rtol=1e-5, atol=1e-6)


def composite(spec, y, outputs):
    result = ml.build_loss(spec).compute(y, {k: np.asarray(v, "float32") for k, v in outputs.items()})
    return ({k: float(v) for k, v in result.losses.items()}, {k: float(v) for k, v in result.weights.items()},
            float(result.total))


def test_replay_and_bic_specs_against_numpy():
    rng = np.random.default_rng(3)
    labels = np.array([0, 1, 2, 3, 4, 5, 4, 5])
    teacher, s = rng.normal(size=(8, 4)) * 2, rng.normal(size=(8, 6)) * 2
    y = {"class": labels, "target": incremental_targets(teacher, labels, 4, 6)}
    losses, weights, total = composite(Replay().spec(STEP2), y, {"logits": s})
    assert weights == {"classification": 1.0} and total == pytest.approx(ce(s, labels).mean(), rel=1e-5)
    losses, weights, total = composite(BiC().spec(STEP2), y, {"logits": s})
    lam = 4 / 6
    assert weights["classification"] == pytest.approx(1 - lam) and weights["distillation"] == pytest.approx(lam)
    assert total == pytest.approx((1 - lam) * ce(s, labels).mean() + lam * kd(teacher, s, 2.0).mean(), rel=1e-5)


def test_bic_bias_layer_and_folding_against_numpy():
    rng = np.random.default_rng(4)
    head = keras.layers.Dense(6, name="logits")
    head.build((None, 3))
    feats = rng.normal(size=(5, 3)).astype("float32")
    z = np.asarray(head(feats))
    bias = BiCHead(4, 6)
    bias.layer.set_weights([np.float32(0.7), np.float32(-0.3)])
    expected = np.concatenate([z[:, :4], 0.7 * z[:, 4:] - 0.3], axis=1)
    np.testing.assert_allclose(np.asarray(bias.model(z)["logits"]), expected, rtol=1e-5, atol=1e-6)
    fold_bias_correction(head, 4, 0.7, -0.3)  # the same logits from the classifier alone
    np.testing.assert_allclose(np.asarray(head(feats)), expected, rtol=1e-5, atol=1e-6)


class _Memory:
    seed = 0

    def __init__(self, x, y):
        self.x, self.y = x, y

    def data(self):
        return self.x, self.y

    def counts(self):
        return {int(c): int((self.y == c).sum()) for c in np.unique(self.y)}


class _Train:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def of(self, classes):
        rows = np.isin(self.y, list(classes))
        return self.x[rows], self.y[rows]


def test_bic_holds_out_a_balanced_split():
    rng = np.random.default_rng(5)
    y_new = np.repeat([4, 5], 50)
    y_mem = np.repeat([0, 1, 2, 3], 20)
    x_new = np.arange(100, 200, dtype="float32")[:, None]  # each sample tagged by its value
    x_mem = np.arange(80, dtype="float32")[:, None]
    learner = type("L", (), {"train": _Train(x_new, y_new), "memory": _Memory(x_mem, y_mem)})()
    (xt, yt), (xv, yv) = BiC(val_fraction=0.1).split(learner, STEP2)
    assert {int(c): int((yv == c).sum()) for c in np.unique(yv)} == {c: 2 for c in range(6)}  # 10 % of 20
    assert len(yt) + len(yv) == 180 and not set(xt[:, 0]) & set(xv[:, 0])
    assert sorted(np.concatenate([xt, xv])[:, 0]) == sorted(np.concatenate([x_new, x_mem])[:, 0])
    del rng


def _pod_net(seed=0):
    keras.utils.set_random_seed(seed)
    method = PODNet(proxies=2)
    net = method.build_net(lambda: cnn({"input_shape": (8, 8, 1)}, filters=(3, 4), dense=6))
    return method, net


def test_feature_maps_are_the_last_layer_of_each_resolution():
    backbone = cnn({"input_shape": (8, 8, 1)}, filters=(3, 4), dense=6)
    maps = feature_maps(backbone)
    # conv 8×8×3 | pool 4×4×3, conv 4×4×4 (the last at 4×4) | pool 2×2×4
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 8, 3), (4, 4, 4), (2, 2, 4)]


def test_podnet_spec_through_the_composite_against_numpy():
    method, net = _pod_net()
    assert net.pod_sizes == [16 * 3, 8 * 4, 4 * 4]
    net.expand(4)
    rng = np.random.default_rng(6)
    x = rng.random((6, 8, 8, 1)).astype("float32")
    old_feats, old_pod = net.features(x), net.pooled_maps(x)
    net.expand(6)
    # The pooled output equals numpy pooling of the maps, read from an independent Keras model.
    maps = keras.Model(net.backbone.inputs[0], feature_maps(net.backbone))(x)
    np.testing.assert_allclose(net.pooled_maps(x), np.concatenate([np_pool(np.asarray(m)) for m in maps], 1),
                               rtol=1e-4, atol=1e-6)
    out = net.model()(x, training=False)
    outputs = {k: np.asarray(v) for k, v in out.items()}
    labels = np.array([0, 2, 3, 4, 5, 5])
    y = {"class": labels, "old_features": old_feats, "old_pod": old_pod}
    losses, weights, total = composite(method.spec(STEP2), y, outputs)
    f = np.sqrt(6 / 2)
    assert weights == pytest.approx({"classification": 1.0, "pod_flat": f, "pod_spatial": 3.0 * f})
    z = outputs["logits"]
    raw = np.array([-(z[i, c] - 0.6) + np.log(np.exp(np.delete(z[i], c)).sum()) for i, c in enumerate(labels)])
    assert losses["classification"] == pytest.approx(np.maximum(raw, 0).mean(), rel=1e-4, abs=1e-6)
    flat = 1 - (unit(old_feats) * unit(outputs["features"])).sum(1)
    assert losses["pod_flat"] == pytest.approx(flat.mean(), rel=1e-4, abs=1e-6)
    spatial, start = 0, 0
    for size in net.pod_sizes:
        a, b = old_pod[:, start:start + size], outputs["pod"][:, start:start + size]
        spatial = spatial + np.linalg.norm(unit(a) - unit(b), axis=1)
        start += size
    assert losses["pod_spatial"] == pytest.approx((spatial / 3).mean(), rel=1e-3, abs=1e-6)
    assert total == pytest.approx(losses["classification"] + f * losses["pod_flat"] + 3 * f * losses["pod_spatial"],
                                  rel=1e-5)


def test_der_network_grows_and_its_spec_against_numpy():
    keras.utils.set_random_seed(7)
    net = DER().build_net(lambda: cnn({"input_shape": (8, 8, 1)}, filters=(3,), dense=5))
    assert isinstance(net, DERNet)
    net.expand(2)
    x = np.random.default_rng(8).random((6, 8, 8, 1)).astype("float32")
    first = net.features(x)
    k0, b0 = (np.asarray(w) for w in net.head.get_weights())
    net.expand(5)
    assert len(net.backbones) == 2 and not net.backbones[0].trainable and net.backbones[1].trainable
    assert net.feature_dim == 10 and net.aux.units == 3 + 1
    feats = net.features(x)
    np.testing.assert_allclose(feats[:, :5], first, rtol=1e-6)  # the old extractor is kept as it was
    np.testing.assert_allclose(feats[:, 5:], net.backbones[1](x, training=False), rtol=1e-6)
    k1, b1 = (np.asarray(w) for w in net.head.get_weights())
    np.testing.assert_array_equal(k1[:5, :2], k0)
    np.testing.assert_array_equal(b1[:2], b0)
    np.testing.assert_allclose(net.logits(x), feats @ k1 + b1, rtol=1e-5, atol=1e-6)
    # The spec: CE over seen classes + λ_a · CE of the auxiliary classifier (old classes lumped into 0).
    step = Step(1, (2, 3))
    labels = np.array([0, 1, 2, 3, 4, 4])
    assert aux_labels(labels, 2).tolist() == [0, 0, 1, 2, 3, 3]
    out = {k: np.asarray(v) for k, v in net.model()(x, training=False).items()}
    y = {"class": labels, "aux_class": aux_labels(labels, 2)}
    losses, weights, total = composite(DER(aux_weight=0.5).spec(step), y, out)
    assert weights == {"classification": 1.0, "auxiliary": 0.5}
    assert losses["classification"] == pytest.approx(ce(out["logits"], labels).mean(), rel=1e-5)
    assert losses["auxiliary"] == pytest.approx(ce(out["aux_logits"], aux_labels(labels, 2)).mean(), rel=1e-5)
    np.testing.assert_allclose(out["aux_logits"], feats[:, 5:] @ np.asarray(net.aux.kernel) + np.asarray(net.aux.bias),
                               rtol=1e-5, atol=1e-6)
    assert DER().spec(Step(0, (2,)))["terms"][0]["name"] == "classification" and len(DER().spec(Step(0, (2,)))["terms"]) == 1


def test_podnet_network_keeps_old_proxies_on_expansion():
    _, net = _pod_net(3)
    assert isinstance(net, IncrementalNet) and net.head_kind == "lsc"
    net.expand(2)
    before = np.asarray(net.head.kernel).copy()
    net.expand(4)
    np.testing.assert_array_equal(np.asarray(net.head.kernel)[:, :4], before)
    assert net.head.units == 4 and np.asarray(net.head.kernel).shape == (6, 8)


def test_wa_without_t_squared_is_plain_kl():
    """PyCIL's scale: KL(p_t ‖ p_s) at T (its softened CE minus the teacher's entropy), ¼ of T²·KL at T = 2."""
    from multiloss.incremental import WA

    rng = np.random.default_rng(9)
    labels = np.array([0, 1, 2, 3, 4, 5])
    teacher, s = rng.normal(size=(6, 4)) * 2, rng.normal(size=(6, 6)) * 2
    y = {"class": labels, "target": incremental_targets(teacher, labels, 4, 6)}
    losses = composite(WA(t_squared=False).spec(STEP2), y, {"logits": s})[0]
    p, q = softmax(teacher / 2), softmax(s[:, :4] / 2)
    soft_ce = -(p * np.log(q)).sum(1)
    assert losses["distillation"] == pytest.approx((soft_ce + (p * np.log(p)).sum(1)).mean(), rel=1e-5)
    assert losses["distillation"] == pytest.approx(composite(WA().spec(STEP2), y, {"logits": s})[0]["distillation"] / 4,
                                                   rel=1e-5)
    from multiloss.incremental import EEIL, LwF

    for method in (LwF(t_squared=False), EEIL(t_squared=False, per_step_distillation=False), BiC(t_squared=False)):
        got = composite(method.spec(STEP2), y, {"logits": s})[0]["distillation"]
        assert got == pytest.approx((soft_ce + (p * np.log(p)).sum(1)).mean(), rel=1e-5), method
