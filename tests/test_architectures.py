"""The multi-task architectures (``mmoe``, ``ple``, ``cross_stitch``, ``mtan``) against numpy, with the
weighting strategies, and saved as plain Keras models."""

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.core.shared_params import infer_shared
from multiloss.run.models import get_builder

HEADS = {"a": {"kind": "regression", "units": 2}, "b": {"kind": "binary"}}
RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 6)).astype("float32")


def relu(z):
    return np.maximum(z, 0.0)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def dense(model, name, h, act=lambda z: z):
    kernel, *bias = model.get_layer(name).get_weights()
    return act(h @ kernel + (bias[0] if bias else 0.0))


def heads_from(model, features):
    return {"a": dense(model, "a", features["a"]), "b": dense(model, "b", features["b"], sigmoid)}


def assert_outputs(model, expected):
    got = model.predict(X, verbose=0)
    for name in HEADS:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_mmoe_mixes_shared_experts_with_one_softmax_gate_per_task():
    model = get_builder("mmoe")({"input_shape": (6,)}, HEADS, experts=3, expert_units=(4,), tower_units=())
    experts = np.stack([dense(model, f"expert_{i}_0", X, relu) for i in range(3)], axis=1)     # [B, 3, 4]
    mixed = {n: np.einsum("be,bed->bd", dense(model, f"{n}_mixture_gate", X, softmax), experts) for n in HEADS}
    assert_outputs(model, heads_from(model, mixed))


def test_ple_gates_own_and_shared_experts_level_by_level():
    model = get_builder("ple")({"input_shape": (6,)}, HEADS, levels=2, shared_experts=2, task_experts=1,
                               expert_units=(3,), tower_units=())

    def experts(prefix, h, count):
        return [dense(model, f"{prefix}_{i}_0", h, relu) for i in range(count)]

    def mix(name, h, pool):
        return np.einsum("be,bed->bd", dense(model, f"{name}_gate", h, softmax), np.stack(pool, axis=1))

    task_in, shared_in = {n: X for n in HEADS}, X
    for level in range(2):
        shared = experts(f"ple{level}_shared", shared_in, 2)
        own = {n: experts(f"ple{level}_{n}", task_in[n], 1) for n in HEADS}
        if level == 0:
            shared_in = mix("ple0_shared_mix", shared_in, own["a"] + own["b"] + shared)
        task_in = {n: mix(f"ple{level}_{n}_mix", task_in[n], own[n] + shared) for n in HEADS}
    assert_outputs(model, heads_from(model, task_in))


def test_cross_stitch_units_start_at_the_papers_alpha_and_mix_the_columns():
    model = get_builder("cross_stitch")({"input_shape": (6,)}, HEADS, hidden=(4, 3), alpha_self=0.9)
    assert model.get_layer("stitch0_0").get_weights()[0].ravel().tolist() == pytest.approx([0.9, 0.1])
    assert model.get_layer("stitch1_1").get_weights()[0].ravel().tolist() == pytest.approx([0.1, 0.9])
    for layer in ("stitch0_0", "stitch0_1", "stitch1_0", "stitch1_1"):    # a learned alpha: not the start
        model.get_layer(layer).set_weights([RNG.normal(size=(2, 1)).astype("float32")])
    columns = [X, X]
    for block in range(2):
        made = [dense(model, f"{n}_dense{block}", c, relu) for n, c in zip(HEADS, columns)]
        alpha = np.stack([model.get_layer(f"stitch{block}_{i}").get_weights()[0].ravel() for i in range(2)])
        columns = [sum(alpha[i, j] * made[j] for j in range(2)) for i in range(2)]
    assert_outputs(model, heads_from(model, dict(zip(HEADS, columns))))


def test_mtan_attends_each_tasks_copy_of_the_shared_features():
    model = get_builder("mtan")({"input_shape": (8, 8, 1)}, HEADS, filters=(4, 6), dense=5)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in
                                      ("a_att1_mask", "shared1_p", "a_att1", "b_att1")])
    images = RNG.random((3, 8, 8, 1)).astype("float32")
    mask, shared, attended_a, attended_b = (np.asarray(t) for t in probe.predict(images, verbose=0))
    assert mask.shape == shared.shape == (3, 4, 4, 6) and 0 < mask.min() and mask.max() < 1
    np.testing.assert_allclose(attended_a, mask * shared, rtol=1e-6)
    assert not np.allclose(attended_a, attended_b)              # each task has its own mask
    with pytest.raises(ValueError, match=r"mtan needs image inputs \[H, W, C\]"):
        get_builder("mtan")({"input_shape": (6,)}, HEADS)


@pytest.mark.parametrize("builder,info,params,shared_prefixes", [
    ("mmoe", {"input_shape": (6,)}, {"experts": 2, "expert_units": (4,)}, ("expert_",)),
    ("ple", {"input_shape": (6,)}, {"levels": 1, "expert_units": (4,)}, ("ple0_shared_",)),
    ("cross_stitch", {"input_shape": (6,)}, {"hidden": (4, 3)}, ("a_dense", "b_dense", "stitch0_")),
    ("mtan", {"input_shape": (8, 8, 1)}, {"filters": (4,), "dense": 4}, ("shared0_",)),
])
def test_the_strategies_see_the_right_shared_variables_and_train(builder, info, params, shared_prefixes):
    """Shared: what two tasks' losses depend on.  Cross-stitch: both columns and every unit's alpha but
    the last one's (row i of the last unit feeds task i alone)."""
    model = get_builder(builder)(info, HEADS, **params)
    ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "binary_crossentropy"}},
                       "weighting": {"strategy": "pcgrad"}}, optimizer="adam")
    x = RNG.random((8, *info["input_shape"])).astype("float32")
    y = {"a": RNG.normal(size=(8, 2)).astype("float32"), "b": RNG.integers(0, 2, (8, 1)).astype("float32")}
    shared = {v.path.split("/")[0] for v in infer_shared(model, model.loss.terms)}
    expected = {layer.name for layer in model.layers if layer.weights and layer.name.startswith(shared_prefixes)}
    assert shared == expected
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_saved_architectures_are_keras_layers_only_and_reload(tmp_path):
    for builder, info in (("mmoe", {"input_shape": (6,)}), ("cross_stitch", {"input_shape": (6,)})):
        model = get_builder(builder)(info, HEADS)
        assert all(type(layer).__module__.startswith("keras.") for layer in model.layers)
        ml.compile(model, {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "binary_crossentropy"}}})
        model.save(tmp_path / f"{builder}.keras")
        back = keras.saving.load_model(tmp_path / f"{builder}.keras", compile=False)
        for name, value in model.predict(X, verbose=0).items():
            np.testing.assert_allclose(back.predict(X, verbose=0)[name], value, rtol=1e-6)


def test_a_run_config_names_an_architecture_and_its_params_are_checked(tmp_path):
    from multiloss.run.config import load_run_config
    from multiloss.run.train import train

    rng = np.random.default_rng(0)
    arrays = {f"{split}/{k}": v for split in ("train", "val")
              for k, v in {"x": rng.normal(size=(16, 6)), "a": rng.normal(size=(16, 2)),
                           "b": rng.integers(0, 2, (16, 1))}.items()}
    np.savez(tmp_path / "d.npz", **{k: v.astype("float32") for k, v in arrays.items()})
    config = {"name": "mmoe", "data": {"source": "npz", "params": {"path": str(tmp_path / "d.npz"), "inputs": ["x"]}},
              "model": {"builder": "mmoe", "params": {"heads": HEADS, "experts": 2, "expert_units": [4]}},
              "loss": {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "binary_crossentropy"}}},
              "train": {"epochs": 1, "verbose": 0}, "output_dir": str(tmp_path / "runs")}
    with pytest.raises(ml.SpecError, match=r"model\.params\.expert: .*did you mean 'experts'"):
        load_run_config({**config, "model": {"builder": "mmoe", "params": {"heads": HEADS, "expert": 2}}})
    metrics = train(config)
    assert np.isfinite(metrics["val"]["loss"])
