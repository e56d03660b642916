"""FOSTER (Wang et al. 2022) and MEMO (Zhou et al. 2023): the losses against numpy written from the papers'
equations (and PyCIL's), their networks (boosting, compression, shared blocks), and a two-step run of each
through `multiloss incremental` whose saved model.keras reloads in a fresh process."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import yaml

import multiloss as ml
from multiloss.incremental import (
    FOSTER,
    MEMO,
    FOSTERNet,
    MEMONet,
    Step,
    check_incremental,
    evaluate_incremental,
    run_incremental,
)
from multiloss.incremental.config import load_incremental_config
from multiloss.incremental.learner import ClassData, Learner
from multiloss.incremental.losses import balanced_distillation, class_scaled_crossentropy
from multiloss.incremental.memory import ExemplarMemory
from multiloss.incremental.methods import aux_labels, class_balanced_weights, get_method
from multiloss.incremental.network import cnn, mlp, resnet32, split_backbone, stage_ends
from multiloss.incremental.runner import Scenario
from multiloss.spec.errors import SpecError


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(z):
    return np.log(softmax(z))


def ce(z, y):
    return -log_softmax(z)[np.arange(len(y)), y]


def composite(spec, y, outputs):
    result = ml.build_loss(spec).compute(y, {k: np.asarray(v, "float32") for k, v in outputs.items()})
    return ({k: float(v) for k, v in result.losses.items()}, {k: float(v) for k, v in result.weights.items()},
            float(result.total))


def effective_number_weights(counts, beta):
    """Cui et al. (2019): the effective number E_n = (1 − βⁿ) / (1 − β); a class weighs 1 / E_n,
    normalised (FOSTER) so that the weights sum to the number of classes."""
    inv = []
    for n in counts:
        effective = sum(beta ** j for j in range(int(n)))   # 1 + β + … + β^{n−1} = (1 − βⁿ) / (1 − β)
        inv.append(1.0 / effective)
    inv = np.asarray(inv)
    return inv * len(inv) / inv.sum()


def _tiny_cnn():
    return cnn({"input_shape": (8, 8, 1)}, filters=(3,), dense=5)


def _bn_backbone():
    """Two conv stages with batch norm (8×8 then 4×4) and global pooling: a stand-in for a small ResNet."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="relu1")(keras.layers.BatchNormalization(name="bn1")(h))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(keras.layers.BatchNormalization(name="bn2")(h))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(h), name="bn_net")


# --- FOSTER: the formulas ----------------------------------------------------------------------------------

def test_class_balanced_weights_against_the_effective_number():
    counts = [20, 20, 100, 100, 100]      # 2 old classes (exemplars), 3 new
    for beta in (0.96, 0.97, 0.5):
        got = class_balanced_weights(counts, beta)
        np.testing.assert_allclose(got, effective_number_weights(counts, beta), rtol=1e-10)
        assert got.sum() == pytest.approx(5) and got[0] > got[2]   # the rarer old classes weigh more
    np.testing.assert_allclose(class_balanced_weights(counts, 0.0), np.ones(5))
    np.testing.assert_allclose(class_balanced_weights([7, 7, 7], 0.96), np.ones(3))


def test_logits_alignment_and_balanced_kd_against_numpy():
    rng = np.random.default_rng(0)
    z, t = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
    y = np.array([0, 1, 2, 3, 4, 2])
    w = np.array([2.0, 1.5, 0.5, 0.5, 0.5])
    got = np.asarray(class_scaled_crossentropy(y, z.astype("float32"), scales=w.tolist()))
    e = np.exp(z / w)                                  # softmax(z_c / w_c), row by row
    ref = -np.log(e[np.arange(6), y] / e.sum(-1))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Balanced KD: q_c ∝ w_c·p_c(t/T), renormalised; −Σ q log softmax(s/T).
    T = 2.0
    p = np.exp(t / T) / np.exp(t / T).sum(-1, keepdims=True)
    q = p * w / (p * w).sum(-1, keepdims=True)
    ref = -(q * log_softmax(z / T)).sum(-1)
    got = np.asarray(balanced_distillation(t.astype("float32"), z.astype("float32"), weights=w.tolist(),
                                           temperature=T))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Uniform weights: the softened cross-entropy, i.e. KL(p ‖ softmax(s/T)) plus the teacher's entropy.
    flat = np.asarray(balanced_distillation(t.astype("float32"), z.astype("float32"), weights=[1.0] * 5,
                                            temperature=T))
    kl = (p * (np.log(p) - log_softmax(z / T))).sum(-1)
    np.testing.assert_allclose(flat, kl - (p * np.log(p)).sum(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="one value per class"):
        balanced_distillation(t.astype("float32"), z.astype("float32"), weights=[1.0] * 4)


def test_foster_boosting_network_and_spec_against_numpy():
    keras.utils.set_random_seed(1)
    method = FOSTER(aux_weight=0.5, kd_weight=2.0)
    net = method.build_net(_tiny_cnn)
    assert isinstance(net, FOSTERNet) and net.compressing
    net.expand(2)
    x = np.random.default_rng(1).random((8, 8, 8, 1)).astype("float32")
    old = net.logits(x)
    k0, b0 = (np.asarray(w) for w in net.head.get_weights())
    net.expand(5)
    assert len(net.backbones) == 2 and not net.backbones[0].trainable_weights
    assert len(net.backbones[1].trainable_weights) == 4      # conv and dense kernels and biases
    for a, b in zip(net.backbones[0].get_weights(), net.backbones[1].get_weights()):
        np.testing.assert_array_equal(a, b)                     # the new extractor starts as the old one
    assert net.feature_dim == 10 and net.aux.units == 5        # feature enhancement: every seen class
    np.testing.assert_allclose(net.old_logits(x), old, rtol=1e-5, atol=1e-6)  # the old model, as it was
    k1, b1 = (np.asarray(w) for w in net.head.get_weights())
    np.testing.assert_array_equal(k1[:5, :2], k0)
    np.testing.assert_array_equal(b1[:2], b0)
    step = Step(1, (2, 3))
    labels = np.array([0, 1, 2, 3, 4, 4, 2, 3])
    with pytest.raises(ValueError, match="class counts"):
        method.spec(step)
    method.counts = np.array([4, 4, 20, 20, 20])
    out = {k: np.asarray(v) for k, v in net.model()(x, training=False).items()}
    assert set(out) == {"logits", "aux_logits"}
    feats = net.features(x)
    np.testing.assert_allclose(out["aux_logits"], feats[:, 5:] @ np.asarray(net.aux.kernel) + np.asarray(net.aux.bias),
                               rtol=1e-5, atol=1e-6)
    losses, weights, total = composite(method.spec(step), {"class": labels, "old_logits": old}, out)
    assert weights == {"classification": 1.0, "feature_enhancement": 0.5, "distillation": 2.0}
    w = effective_number_weights([4, 4, 20, 20, 20], 0.96)
    la = ce(out["logits"] / w, labels)                                           # logits alignment
    fe = ce(out["aux_logits"], labels)                                           # feature enhancement
    p, s = softmax(old / 2), log_softmax(out["logits"][:, :2] / 2)
    kd = (p * (np.log(p) - s)).sum(-1)                                           # KD on the old classes, T = 2
    assert losses["classification"] == pytest.approx(la.mean(), rel=1e-5)
    assert losses["feature_enhancement"] == pytest.approx(fe.mean(), rel=1e-5)
    assert losses["distillation"] == pytest.approx(kd.mean(), rel=1e-4, abs=1e-6)
    assert total == pytest.approx(la.mean() + 0.5 * fe.mean() + 2.0 * kd.mean(), rel=1e-4)
    assert [t["name"] for t in method.spec(Step(0, (2,)))["terms"]] == ["classification"]
    assert get_method("foster") is FOSTER and get_method("memo") is MEMO


def test_foster_compression_student_and_its_balanced_kd():
    keras.utils.set_random_seed(2)
    method = FOSTER(beta_compress=0.9, temperature=3.0)
    net = method.build_net(_tiny_cnn)
    net.expand(2)
    x = np.random.default_rng(2).random((6, 8, 8, 1)).astype("float32")
    old_extractor = [np.asarray(w) for w in net.backbones[0].get_weights()]
    net.expand(4)
    net.backbones[1].set_weights([w + 0.1 for w in net.backbones[1].get_weights()])   # "boosted"
    old_k, old_b = (np.asarray(w) for w in net.old_head.get_weights())
    teacher = net.copy()
    t = teacher.logits(x)
    np.testing.assert_allclose(t, net.logits(x), rtol=1e-6)
    np.testing.assert_allclose(teacher.old_logits(x), net.old_logits(x), rtol=1e-6)   # augmented batches' teacher
    net.compress()
    assert len(net.backbones) == 1 and net.aux is None and len(net.backbones[0].trainable_weights) == 4
    assert net.feature_dim == 5 and net.num_classes == 4
    for a, b in zip(net.backbones[0].get_weights(), old_extractor):
        np.testing.assert_array_equal(a, b)                      # the student starts as the old extractor
    k, b = (np.asarray(w) for w in net.head.get_weights())
    np.testing.assert_array_equal(k[:, :2], old_k)              # and the old classifier
    np.testing.assert_array_equal(b[:2], old_b)
    np.testing.assert_allclose(teacher.logits(x), t, rtol=1e-6)  # the teacher is its own copy
    method.counts = np.array([3, 3, 30, 30])
    s = net.model()(x, training=False)["logits"]
    losses, _, _ = composite(method.compression_spec(Step(1, (2, 2))), {"class": np.zeros(6, "int32"),
                                                                       "teacher_logits": t}, {"logits": s})
    w = effective_number_weights([3, 3, 30, 30], 0.9)
    q = softmax(t / 3) * w
    q /= q.sum(-1, keepdims=True)
    ref = -(q * log_softmax(np.asarray(s) / 3)).sum(-1)
    assert losses["distillation"] == pytest.approx(ref.mean(), rel=1e-5)


def test_foster_checkpoint_rebuilds_the_compressed_network_and_no_compression_grows():
    keras.utils.set_random_seed(3)
    net = FOSTER().build_net(_tiny_cnn)
    net.expand(2)
    net.expand(4)
    net.compress()
    x = np.random.default_rng(3).random((4, 8, 8, 1)).astype("float32")
    twin = FOSTER().build_net(_tiny_cnn)   # as --resume: expanded step by step, then the saved weights
    twin.expand(2)
    twin.expand(4)
    twin.set_weights(net.get_weights())
    assert len(twin.backbones) == 1
    np.testing.assert_allclose(twin.logits(x), net.logits(x), rtol=1e-6)
    net.expand(6)                           # a third step: the rebuild compresses between expansions too
    net.compress()
    twin = FOSTER().build_net(_tiny_cnn)
    for n in (2, 4, 6):
        twin.expand(n)
    twin.set_weights(net.get_weights())
    assert len(twin.backbones) == 1 and twin.num_classes == 6
    np.testing.assert_allclose(twin.logits(x), net.logits(x), rtol=1e-6)
    grow = FOSTER(compression_epochs=0).build_net(_tiny_cnn)
    assert not grow.compressing
    for n in (2, 4, 6):
        grow.expand(n)
    assert len(grow.backbones) == 3 and grow.old_head.units == 4 and grow.old_logits(x).shape == (4, 4)
    with pytest.raises(SpecError, match="method.params.compression_epochs"):
        load_incremental_config({**yaml.safe_load(CONFIG), "method": {"name": "foster",
                                                                      "params": {"compression_epochs": -1}}})


# --- MEMO: the split and the shared blocks -------------------------------------------------------------------

def test_stage_ends_and_the_split_keep_the_backbone_function():
    keras.utils.set_random_seed(4)
    res = resnet32({"input_shape": (8, 8, 3)}, width=2)
    assert stage_ends(res) == ["stage1_block5_out", "stage2_block5_out", "stage3_block5_out"]
    shared, block = split_backbone(res)        # PyCIL's CIFAR split: stage 3 is specialised
    assert shared.outputs[0].shape[1:] == (4, 4, 4)
    assert {layer.name for layer in block.layers} >= {"stage3_block1_conv1", "pool"}
    assert not {layer.name for layer in shared.layers} & {"stage3_block1_conv1", "pool"}
    x = np.random.default_rng(4).random((3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(block(shared(x, training=False), training=False), res(x, training=False),
                               rtol=1e-5, atol=1e-6)
    assert split_backbone(res, specialized_stages=2)[0].outputs[0].shape[1:] == (8, 8, 2)
    small = mlp({"input_shape": (4,)}, hidden=(6, 5))
    dense = [layer.name for layer in small.layers if isinstance(layer, keras.layers.Dense)]
    assert stage_ends(small) == dense
    assert split_backbone(small)[0].outputs[0].shape[-1] == 6
    with pytest.raises(ValueError, match="method.params.split_layer: the backbone has no layer 'stage2_blok5_out'"):
        split_backbone(res, "stage2_blok5_out")
    with pytest.raises(ValueError, match="method.params.specialized_stages"):
        split_backbone(res, specialized_stages=3)
    with pytest.raises(ValueError, match="method.params.split_layer: the backbone cannot be cut"):
        split_backbone(res, "stage3_block1_relu1")    # inside a block: its shortcut reads the block's input


def test_memo_network_copies_the_deep_block_and_grows_its_features():
    keras.utils.set_random_seed(5)
    method = MEMO()
    net = method.build_net(_bn_backbone)
    assert isinstance(net, MEMONet)
    net.expand(2)
    assert [layer.name for layer in net.shared.layers][-1] == "relu1"   # one specialised stage: conv2 … pool
    x = np.random.default_rng(5).random((6, 8, 8, 1)).astype("float32")
    net.backbones[0].set_weights([w + 0.05 for w in net.backbones[0].get_weights()])   # not the fresh init
    first = net.features(x)
    assert first.shape == (6, 4) and net.shared.trainable
    net.expand(4)
    assert not net.shared.trainable and not net.backbones[0].trainable and net.backbones[1].trainable
    assert not net.shared.trainable_weights and not net.backbones[0].trainable_weights
    assert len(net.backbones[1].trainable_weights) == 4     # conv2 and bn2 train
    for a, b in zip(net.backbones[0].get_weights(), net.backbones[1].get_weights()):
        np.testing.assert_array_equal(a, b)                     # the new block starts as the previous one
    assert net.feature_dim == 8 and net.aux.units == 2 + 1
    feats = net.features(x)
    np.testing.assert_allclose(feats[:, :4], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[:, 4:], feats[:, :4], rtol=1e-5, atol=1e-6)
    net.expand(6)
    assert net.feature_dim == 12 and len(net.backbones) == 3
    out = {k: np.asarray(v) for k, v in net.model()(x, training=False).items()}
    np.testing.assert_allclose(out["logits"], net.features(x) @ np.asarray(net.head.kernel) + np.asarray(net.head.bias),
                               rtol=1e-5, atol=1e-5)
    labels = np.array([0, 1, 2, 3, 4, 5])
    losses, weights, _ = composite(method.spec(Step(2, (2, 2, 2))),
                                   {"class": labels, "aux_class": aux_labels(labels, 4)}, out)
    assert weights == {"classification": 1.0, "auxiliary": 1.0}
    assert losses["auxiliary"] == pytest.approx(ce(out["aux_logits"], np.array([0, 0, 0, 0, 1, 2])).mean(), rel=1e-5)
    fresh = MEMO(extractor_init="random").build_net(_bn_backbone)
    fresh.expand(2)
    fresh.expand(4)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.backbones[0].get_weights(),
                                                         fresh.backbones[1].get_weights()))


def test_memo_step_leaves_the_shared_blocks_and_old_block_unchanged():
    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(4), 12).astype("int32")
    x = (rng.random((48, 8, 8, 1)) + y[:, None, None, None] * 0.3).astype("float32")
    method = MEMO(align=True)
    net = method.build_net(_bn_backbone)
    learner = Learner(net, ExemplarMemory(12, seed=0), ClassData(x, y), epochs=2, batch_size=8,
                      optimizer=lambda s, n: keras.optimizers.SGD(0.05 * s, momentum=0.9, global_clipnorm=1.0))
    learner.run_step(method, Step(0, (2,)))
    shared = [np.asarray(w).copy() for w in net.shared.weights]    # kernels and batch-norm statistics
    block = [np.asarray(w).copy() for w in net.backbones[0].weights]
    learner.run_step(method, Step(1, (2, 2)))
    assert len(shared) == 6
    for a, b in zip(shared, net.shared.weights):
        np.testing.assert_array_equal(a, np.asarray(b))
    for a, b in zip(block, net.backbones[0].weights):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert any(not np.allclose(a, np.asarray(b)) for a, b in zip(block, net.backbones[1].weights))  # it trained
    assert "gamma" in learner.notes and "auxiliary_loss" in learner.history[-1]
    with pytest.raises(ValueError, match="method.params.split_layer: the backbone has no layer 'relu3'"):
        MEMO(split_layer="relu3").build_net(_bn_backbone)      # reported when the network is made
    assert MEMO(split_layer="conv2").build_net(_bn_backbone).shared.outputs[0].shape[1:] == (4, 4, 4)
    trained = MEMO(train_shared=True)
    net2 = trained.build_net(_bn_backbone)
    net2.expand(2)
    net2.expand(4)
    assert net2.shared.trainable


def test_foster_and_memo_steps_with_augmented_batches():
    """With train.augment the teachers (the old model's logits, the boosted network in the compression) see
    each augmented batch through frozen copies of the networks."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 10).astype("int32")
    x = (rng.random((40, 8, 8, 1)) + y[:, None, None, None] * 0.3).astype("float32")
    for method in (FOSTER(), MEMO()):
        keras.utils.set_random_seed(7)
        net = method.build_net(_bn_backbone)
        learner = Learner(net, ExemplarMemory(8, seed=0), ClassData(x, y), epochs=1, batch_size=8,
                          optimizer=lambda s, n: keras.optimizers.SGD(0.05 * s, global_clipnorm=1.0),
                          augment=lambda seed: (lambda xb: xb[:, :, ::-1]))
        learner.run_step(method, Step(0, (2,)))
        learner.run_step(method, Step(1, (2, 2)))
        stages = [(r["step"], r["stage"]) for r in learner.history]
        assert all(np.isfinite(r["loss"]) for r in learner.history)
        if method.name == "foster":
            assert stages == [(0, "train"), (1, "train"), (1, "compression")] and len(net.backbones) == 1
            assert "distillation_loss" in learner.history[1] and net.logits(x).shape == (40, 4)
        else:
            assert stages == [(0, "train"), (1, "train")] and net.feature_dim == 8


# --- end to end through `multiloss incremental` ---------------------------------------------------------------

CONFIG = textwrap.dedent("""\
    name: tiny
    seed: 0
    data: {source: digits}
    model:
      builder: cnn
      params: {filters: [8, 8], dense: 16}
    scenario: {initial: 4, increment: 3, steps: 2}
    memory: {budget: 40}
    method: {name: foster}
    optimizer: {name: sgd, params: {learning_rate: 0.05, momentum: 0.9, global_clipnorm: 1.0}}
    train: {epochs: 4, batch_size: 32}
""")

LOAD = textwrap.dedent("""\
    import json, sys
    import numpy as np
    import multiloss, keras
    out = {}
    for run in sys.argv[2:]:
        data = np.load(sys.argv[1])
        scores = np.asarray(keras.saving.load_model(run + "/model.keras").predict(data["x"], verbose=0))
        out[run] = [list(scores.shape), float((scores.argmax(-1) == data["y"]).mean())]
    print(json.dumps(out))
""")


def test_foster_and_memo_two_steps_end_to_end_and_model_keras_in_a_fresh_process(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "inc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    runs = {"foster": ["method.name=foster", "name=foster"],
            "memo": ["method.name=memo", "name=memo", "method.params.specialized_stages=2"]}
    with pytest.raises(ValueError, match="method.params.split_layer: the backbone has no layer 'dense_x'"):
        check_incremental(path, ["method.name=memo", "method.params.split_layer=dense_x"])
    results = {m: run_incremental(path, o, quiet=True) for m, o in runs.items()}
    for m, summary in results.items():
        assert summary["complete"] and len(summary["accuracy"]) == 2, m
        assert sum(summary["steps"][-1]["memory"]) == 40, m
        assert summary["last_accuracy"] > 0.5, (m, summary["accuracy"])   # fine-tuning keeps ≤ 3 of 7 classes
        rows = json.loads((tmp_path / "runs" / m / "history.json").read_text())
        for row in rows:   # the composite's total is Σ weight · term
            terms = [k[:-5] for k in row if k.endswith("_loss")]
            assert row["loss"] == pytest.approx(sum(row[f"{t}_weight"] * row[f"{t}_loss"] for t in terms), rel=1e-4)
        again = evaluate_incremental(tmp_path / "runs" / m)     # the checkpoint rebuilt step by step
        assert again["accuracy"] == pytest.approx(summary["last_accuracy"])
    foster = json.loads((tmp_path / "runs" / "foster" / "history.json").read_text())
    assert [(r["step"], r["stage"]) for r in foster].count((1, "compression")) == 4
    assert {"classification_loss", "feature_enhancement_loss", "distillation_loss"} <= set(
        next(r for r in foster if r["step"] == 1 and r["stage"] == "train"))
    memo = json.loads((tmp_path / "runs" / "memo" / "history.json").read_text())
    assert all("auxiliary_loss" in r for r in memo if r["step"] == 1)
    assert "gamma" in results["memo"]["steps"][1]
    scenario = Scenario(load_incremental_config(path))
    x, y = scenario.parts["test"].of(range(7))
    np.savez(tmp_path / "test.npz", x=x, y=y)
    (tmp_path / "load.py").write_text(LOAD)
    dirs = [str(tmp_path / "runs" / m) for m in runs]
    out = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "test.npz"), *dirs],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for m, d in zip(runs, dirs):
        assert got[d][0] == [len(y), 7]
        assert got[d][1] == pytest.approx(results[m]["last_accuracy"])   # the saved model is the evaluated one
