"""Multi-task architectures as model builders: ``mmoe``, ``ple``, ``cross_stitch`` and ``mtan``.

Each is ``(info, heads, ...) -> keras.Model`` like the other builders (``heads: {name: {kind,
units}}``, the head kinds of :mod:`multiloss.run.models`), and is made of Keras's own layers
only, so a saved model loads without multiloss and exports as a plain Keras model.

* ``mmoe`` — Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): ``experts`` MLP experts on the
  (flattened) input, shared by all tasks; task k mixes them with its own gate,
  fᵏ(x) = Σᵢ softmax(Wₖx + bₖ)ᵢ · eᵢ(x), then a tower and its head.
* ``ple`` — Progressive Layered Extraction (Tang et al., RecSys 2020): ``levels`` of Customized
  Gate Control; at each level task k's gate mixes its own ``task_experts`` and the
  ``shared_experts``, and (below the top level) a shared gate mixes all experts as the shared
  experts' next input.
* ``cross_stitch`` — Cross-stitch networks (Misra et al., CVPR 2016): one column per task (conv
  blocks on images, dense layers on vectors), and after each block a cross-stitch unit
  x̃ᵢ = Σⱼ αᵢⱼ xⱼ with a learned α per block, started at αᵢᵢ = ``alpha_self`` and
  αᵢⱼ = (1 − ``alpha_self``)/(T − 1), the paper's (0.9, 0.1) for two tasks.
* ``mtan`` — Multi-Task Attention Network (Liu, Johns and Davison, CVPR 2019): a shared CNN and,
  per task and block, a soft attention mask aᵢʲ = σ(BN(conv₁ₓ₁(ReLU(BN(conv₁ₓ₁([uʲ; âᵢʲ⁻¹]))))))
  on the block's output pʲ, âᵢʲ = aᵢʲ ⊙ pʲ, passed through a task 3×3 conv and pooling to
  the next block's attention; the last attended features, pooled, feed the task's head.

The weighting strategies infer the shared variables from the layer graph: the experts (MMoE,
PLE), the columns below the last cross-stitch unit (each feeds every task through α), and the
shared CNN (MTAN); gates, towers, attention modules and heads are per task.
"""

from __future__ import annotations

import keras
from keras import layers

from .models import output_head, register_model


def _flat_input(info: dict) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    x = keras.Input(tuple(info["input_shape"]), name="inputs")
    return x, (layers.Flatten()(x) if len(x.shape) > 2 else x)


def _dense_stack(h, units, name: str):
    for i, u in enumerate(units):
        h = layers.Dense(int(u), activation="relu", name=f"{name}_{i}")(h)
    return h


def _experts(h, count: int, units, name: str) -> list:
    """``count`` MLP experts on ``h``, each as ``[B, 1, d]`` (ready to stack along axis 1)."""
    if not units:
        raise ValueError(f"{name}: expert_units must name at least one layer width")
    return [layers.Reshape((1, int(units[-1])))(_dense_stack(h, units, f"{name}_{i}")) for i in range(count)]


def _mixture(gate_input, experts: list, name: str):
    """Σᵢ softmax(W·gate_input + b)ᵢ · expertᵢ: a gate (``{name}_gate``) over the stacked experts."""
    stacked = experts[0] if len(experts) == 1 else layers.Concatenate(axis=1)(experts)
    gate = layers.Dense(len(experts), activation="softmax", name=f"{name}_gate")(gate_input)
    return layers.Dot(axes=1, name=name)([gate, stacked])


def _heads(heads: dict, features: dict, info: dict, tower_units=()) -> dict:
    return {n: output_head(n, dict(c or {}), _dense_stack(features[n], tower_units, f"{n}_tower"), info)
            for n, c in heads.items()}


def _need_heads(heads: dict, builder: str, least: int = 1) -> None:
    if not heads or len(heads) < least:
        raise ValueError(f"{builder} needs `heads` ({{name: {{kind, units}}}}), at least {least}")


@register_model("mmoe")
def mmoe(info: dict, heads: dict[str, dict], experts: int = 4, expert_units=(64,), tower_units=(32,)
         ) -> keras.Model:
    """Multi-gate Mixture-of-Experts (Ma et al. 2018): shared experts, one softmax gate per task."""
    _need_heads(heads, "mmoe")
    x, h = _flat_input(info)
    pool = _experts(h, int(experts), expert_units, "expert")
    mixed = {n: _mixture(h, pool, f"{n}_mixture") for n in heads}
    return keras.Model(x, _heads(heads, mixed, info, tower_units), name="mmoe")


@register_model("ple")
def ple(info: dict, heads: dict[str, dict], levels: int = 2, shared_experts: int = 1, task_experts: int = 1,
        expert_units=(64,), tower_units=(32,)) -> keras.Model:
    """Progressive Layered Extraction (Tang et al. 2020): ``levels`` of Customized Gate Control."""
    _need_heads(heads, "ple")
    if int(levels) < 1:
        raise ValueError("ple: levels must be at least 1")
    x, h = _flat_input(info)
    task_in, shared_in = {n: h for n in heads}, h
    for level in range(int(levels)):
        shared = _experts(shared_in, int(shared_experts), expert_units, f"ple{level}_shared")
        own = {n: _experts(task_in[n], int(task_experts), expert_units, f"ple{level}_{n}") for n in heads}
        if level < int(levels) - 1:
            shared_in = _mixture(shared_in, [e for n in heads for e in own[n]] + shared, f"ple{level}_shared_mix")
        task_in = {n: _mixture(task_in[n], own[n] + shared, f"ple{level}_{n}_mix") for n in heads}
    return keras.Model(x, _heads(heads, task_in, info, tower_units), name="ple")


def cross_stitch_unit(columns: list, name: str, alpha_self: float) -> list:
    """x̃ᵢ = Σⱼ αᵢⱼ xⱼ over the tasks' same-shaped tensors; row i of α is the kernel of ``{name}_{i}``."""
    shape = tuple(columns[0].shape[1:])
    stacked = layers.Concatenate(axis=-1)([layers.Reshape((*shape, 1))(c) for c in columns])
    t = len(columns)
    out = []
    for i in range(t):
        row = [[alpha_self if j == i else (1.0 - alpha_self) / (t - 1)] for j in range(t)]
        mix = layers.Dense(1, use_bias=False, name=f"{name}_{i}")
        out.append(layers.Reshape(shape)(mix(stacked)))
        mix.kernel.assign(row)          # the paper's start; a plain Dense, so the model is Keras's own
    return out


@register_model("cross_stitch")
def cross_stitch(info: dict, heads: dict[str, dict], filters=(16, 32), dense: int = 64, hidden=(64, 32),
                 alpha_self: float = 0.9) -> keras.Model:
    """Cross-stitch networks (Misra et al. 2016): a column per task, a cross-stitch unit after each block.

    Image inputs: conv blocks of ``filters`` (3×3 conv, ReLU, 2×2 max pooling), then a ``dense`` layer;
    vector inputs: dense layers of ``hidden``.
    """
    _need_heads(heads, "cross_stitch", least=2)
    if not 0.0 <= float(alpha_self) <= 1.0:
        raise ValueError(f"cross_stitch: alpha_self must lie in [0, 1], got {alpha_self}")
    x = keras.Input(tuple(info["input_shape"]), name="inputs")
    names = list(heads)
    image = len(x.shape) == 4
    blocks = [("conv", f) for f in filters] + [("flat_dense", dense)] if image else [("dense", u) for u in hidden]
    columns = [x] * len(names)
    for b, (kind, width) in enumerate(blocks):
        made = []
        for n, c in zip(names, columns):
            if kind == "conv":
                c = layers.MaxPooling2D()(layers.Conv2D(int(width), 3, padding="same", activation="relu",
                                                        name=f"{n}_conv{b}")(c))
            else:
                c = layers.Flatten()(c) if kind == "flat_dense" else c
                c = layers.Dense(int(width), activation="relu", name=f"{n}_dense{b}")(c)
            made.append(c)
        columns = cross_stitch_unit(made, f"stitch{b}", float(alpha_self))
    return keras.Model(x, _heads(heads, dict(zip(names, columns)), info), name="cross_stitch")


def _attention(inputs, channels: int, name: str):
    """The task's soft mask: 1×1 conv, BN, ReLU, 1×1 conv, BN, sigmoid (Liu et al. 2019, Fig. 2)."""
    a = layers.Conv2D(channels, 1, name=f"{name}_conv_a")(inputs)
    a = layers.ReLU()(layers.BatchNormalization(name=f"{name}_bn_a")(a))
    a = layers.BatchNormalization(name=f"{name}_bn_b")(layers.Conv2D(channels, 1, name=f"{name}_conv_b")(a))
    return layers.Activation("sigmoid", name=f"{name}_mask")(a)


@register_model("mtan")
def mtan(info: dict, heads: dict[str, dict], filters=(16, 32), dense: int = 64) -> keras.Model:
    """Multi-Task Attention Network (Liu et al. 2019) on a shared CNN of blocks of ``filters``."""
    _need_heads(heads, "mtan")
    if len(tuple(info["input_shape"])) != 3:
        raise ValueError(f"mtan needs image inputs [H, W, C]; the data's input_shape is {info['input_shape']}")
    x = keras.Input(tuple(info["input_shape"]), name="inputs")
    names = list(heads)
    h, attended = x, {n: None for n in names}
    for j, f in enumerate(filters):
        u = layers.Conv2D(int(f), 3, padding="same", activation="relu", name=f"shared{j}_u")(h)
        p = layers.Conv2D(int(f), 3, padding="same", activation="relu", name=f"shared{j}_p")(u)
        for n in names:
            given = u if attended[n] is None else layers.Concatenate()([u, attended[n]])
            a = layers.Multiply(name=f"{n}_att{j}")([_attention(given, int(f), f"{n}_att{j}"), p])
            nxt = int(filters[j + 1]) if j + 1 < len(filters) else int(f)
            a = layers.Conv2D(nxt, 3, padding="same", activation="relu", name=f"{n}_task{j}")(a)
            attended[n] = layers.MaxPooling2D()(a)
        h = layers.MaxPooling2D()(p)
    pooled = {n: layers.Dense(int(dense), activation="relu", name=f"{n}_dense")(
        layers.GlobalAveragePooling2D()(attended[n])) for n in names}
    return keras.Model(x, _heads(heads, pooled, info), name="mtan")


__all__ = ["cross_stitch", "cross_stitch_unit", "mmoe", "mtan", "ple"]
