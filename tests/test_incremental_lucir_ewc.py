"""LUCIR (Hou et al. 2019) and EWC (Kirkpatrick et al. 2017): each term against numpy written from the
papers' equations, through the composite loss; the penalty's statistics for both EWC variants."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.incremental import Step
from multiloss.incremental.learner import ClassData, Learner
from multiloss.incremental.losses import margin_ranking
from multiloss.incremental.methods import EWC, LUCIR, diagonal_fisher, get_method
from multiloss.incremental.network import PenaltyNet, QuadraticPenalty, cnn


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _backbone():
    return cnn({"input_shape": (8, 8, 1)}, filters=(3,), dense=5)


def np_ranking(cos, y, num_old, k, m):
    """Eq. 8, by loops: for an old-class sample, the K new classes with the largest cosines."""
    out = np.zeros(len(y))
    for i, c in enumerate(y):
        if c < num_old:
            hard = np.sort(cos[i, num_old:])[::-1][:k]
            out[i] = np.mean([max(0.0, m - cos[i, c] + h) for h in hard])
    return out


def test_margin_ranking_against_numpy():
    rng = np.random.default_rng(0)
    cos, eta = np.tanh(rng.normal(size=(8, 7))), 9.0
    y = np.array([0, 1, 2, 3, 4, 5, 6, 1])
    scaled = np.concatenate([eta * cos, np.full((8, 1), eta)], 1).astype("float32")
    got = np.asarray(margin_ranking(y, scaled, num_old=4, k=2, margin=0.5))
    ref = np_ranking(cos, y, 4, 2, 0.5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert (ref[:4] > 0).any() and (ref[4:7] == 0).all()


def test_lucir_spec_through_the_composite_against_numpy():
    keras.utils.set_random_seed(1)
    method = LUCIR()
    net = method.build_net(_backbone)
    net.expand(4)
    x = np.random.default_rng(1).random((8, 8, 8, 1)).astype("float32")
    old = net.features(x)
    net.expand(6)
    step = Step(2, (2, 2, 2))
    out = {k: np.asarray(v) for k, v in net.model()(x, training=False).items()}
    y = np.array([0, 1, 2, 3, 4, 5, 5, 0])
    result = ml.build_loss(method.spec(step)).compute({"class": y, "old_features": old},
                                                      {k: v.astype("float32") for k, v in out.items()})
    lam = 5.0 * np.sqrt(4 / 2)                                    # Eq. 7: λ_base·√(|C_o| / |C_n|)
    assert float(result.weights["less_forget"]) == pytest.approx(lam)
    sigma = float(np.asarray(net.head.scale))
    w = unit(np.asarray(net.head.kernel).T)
    cos = unit(out["features"]) @ w.T                               # cosine normalisation, Eq. 5
    np.testing.assert_allclose(out["logits"], sigma * cos, rtol=1e-4, atol=1e-5)
    ce = -np.log(np.exp(sigma * cos)[np.arange(8), y] / np.exp(sigma * cos).sum(1))
    forget = 1 - (unit(old) * unit(out["features"])).sum(1)        # Eq. 6
    rank = np_ranking(cos, y, 4, 2, 0.5)                            # Eq. 8
    losses = {k: float(v) for k, v in result.losses.items()}
    assert losses["classification"] == pytest.approx(ce.mean(), rel=1e-4)
    assert losses["less_forget"] == pytest.approx(forget.mean(), rel=1e-4, abs=1e-6)
    assert losses["margin_ranking"] == pytest.approx(rank.mean(), rel=1e-4, abs=1e-6)
    assert float(result.total) == pytest.approx(ce.mean() + lam * forget.mean() + rank.mean(), rel=1e-4)
    assert [t["name"] for t in method.spec(Step(0, (4,)))["terms"]] == ["classification"]
    assert get_method("lucir") is LUCIR and get_method("ewc") is EWC


def test_quadratic_penalty_online_and_per_task_against_numpy():
    rng = np.random.default_rng(2)
    v = [keras.Variable(rng.normal(size=(3, 2)).astype("float32")), keras.Variable(rng.normal(size=(4,)).astype("float32"))]
    for online in (True, False):
        layer = QuadraticPenalty(v)
        layer.build(None)
        tasks = []
        for _ in range(3):
            for var in v:
                var.assign(rng.normal(size=var.shape).astype("float32"))
            f = [rng.random(var.shape) for var in v]
            tasks.append(([np.asarray(var, "float64") for var in v], f))
            layer.consolidate(f, online=online, gamma=0.5)
        theta = [rng.normal(size=var.shape) for var in v]
        for var, t in zip(v, theta):
            var.assign(t.astype("float32"))
        if online:   # F = γ(γF_1 + F_2) + F_3, anchored at the last θ*
            fisher = [0.25 * tasks[0][1][i] + 0.5 * tasks[1][1][i] + tasks[2][1][i] for i in range(2)]
            ref = sum((fisher[i] * (theta[i] - tasks[2][0][i]) ** 2).sum() for i in range(2))
        else:        # Σ_t F_t (θ − θ*_t)²
            ref = sum((f[i] * (theta[i] - star[i]) ** 2).sum() for star, f in tasks for i in range(2))
        assert layer.value() == pytest.approx(ref, rel=1e-4)


def test_diagonal_fisher_against_numpy_and_the_ewc_term():
    keras.utils.set_random_seed(3)
    net = EWC().build_net(lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)]))
    assert isinstance(net, PenaltyNet)
    net.expand(3)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 3)).astype("float32"), np.array([0, 1, 2, 0, 1, 2])
    w, head = np.asarray(net.backbone.trainable_variables[0]), [np.asarray(a) for a in net.head.get_weights()]

    def grad(xb, yb):   # ∂ mean NLL / ∂W of softmax((x W) K + b), by hand
        h = xb @ w
        z = h @ head[0] + head[1]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        return xb.T @ (p @ head[0].T) / len(yb)

    ref = (4 * grad(x[:4], y[:4]) ** 2 + 2 * grad(x[4:], y[4:]) ** 2) / 6   # FACIL: Σ b·g² / N
    got = diagonal_fisher(net, x, y, batch_size=4, labels_from="true")[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-8)
    pred = net.logits(x).argmax(1)
    ref_pred = (4 * grad(x[:4], pred[:4]) ** 2 + 2 * grad(x[4:], pred[4:]) ** 2) / 6
    np.testing.assert_allclose(diagonal_fisher(net, x, y, 4)[0], ref_pred, rtol=1e-4, atol=1e-8)
    # The term: (λ/2)·penalty, the penalty output equal in every row.
    net.penalty.consolidate([ref], online=True)
    net.backbone.trainable_variables[0].assign(w + 0.1)
    out = {k: np.asarray(v) for k, v in net.model()(x).items()}
    assert np.allclose(out["penalty"], (ref * 0.01).sum(), rtol=1e-4)
    spec = EWC(strength=10).spec(Step(1, (2, 1)))
    result = ml.build_loss(spec).compute({"class": y}, {k: v.astype("float32") for k, v in out.items()})
    assert float(result.weights["ewc"]) == 5.0
    assert float(result.losses["ewc"]) == pytest.approx((ref * 0.01).sum(), rel=1e-4)


def test_ewc_and_lucir_run_a_step_and_checkpoint_the_penalty():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), 10).astype("int32")
    x = (rng.random((40, 8, 8, 1)) + y[:, None, None, None] * 0.2).astype("float32")
    for method in (EWC(strength=10), LUCIR()):
        keras.utils.set_random_seed(4)
        from multiloss.incremental.memory import ExemplarMemory

        net = method.build_net(_backbone)
        learner = Learner(net, ExemplarMemory(8, seed=0) if method.replay else None, ClassData(x, y), epochs=1,
                          batch_size=8, optimizer=lambda s, n: keras.optimizers.SGD(0.05 * s, global_clipnorm=1.0))
        learner.run_step(method, Step(0, (2,)))
        learner.run_step(method, Step(1, (2, 2)))
        last = learner.history[-1]
        assert np.isfinite(last["loss"])
        if method.name == "ewc":
            assert "ewc_loss" in last and np.asarray(net.penalty.fisher[0]).max() > 0
            twin = method.build_net(_backbone)   # a checkpoint's weights hold the Fisher and the anchor
            twin.expand(2)
            twin.expand(4)
            twin.set_weights(net.get_weights())
            assert twin.penalty.value() == pytest.approx(net.penalty.value(), rel=1e-5, abs=1e-9)
        else:
            assert {"less_forget_loss", "margin_ranking_loss"} <= set(last)
