"""Step time of each weighting strategy relative to static weighting, on the same model.

What it measures
----------------
For each head count N (default 3 and 8) one functional Keras model is built:
a shared Dense trunk (two layers of ``--width`` units) on a 64-feature input
and N small Dense heads, alternating ``softmax`` + ``categorical_crossentropy``
(10 classes) and ``linear`` + ``mse`` (4 values).  For every strategy a fresh
instance with the same initial weights is compiled with ``ml.compile`` and
``weighting: {strategy: ...}`` (``static`` is the spec without ``weighting:``),
Adam, and the same in-memory ``tf.data`` dataset.  After a warm-up fit (which
traces the train function), the strategies are timed *interleaved*
(static, uncertainty, ..., static, uncertainty, ...) so that drift in
machine load hits all of them equally.  Each repeat is one ``model.fit``
epoch of ``--steps`` batches; its wall time divided by ``--steps`` is one
ms/step sample.  The table shows the median per strategy and the ratio to
static (targets: uncertainty, DWA, RLW ≤ 1.05; GradNorm ≤ 1.5), plus the
same ratio in process CPU time, the *paired* CPU ratio (the median over
repeats of the strategy's CPU time over static's in the same repeat, which
cancels drift of the machine between repeats), and the backward passes per step:

The strategies are every registered one (``multiloss.weighting.STRATEGIES``), by kind:

* the loss weightings (static, uncertainty, dwa, rlw, famo, gls, imtl_l, stch, ...): 1 (Keras's own step);
* the layer-gradient ones (gradnorm): 1 full pass + N short ones (each from one head to the last
  shared layer);
* the gradient strategies (pcgrad, mgda, cagrad, nash_mtl, moco, ...): N passes (one per term), or
  1 vectorised ``tape.jacobian`` (``pfor``) for the ``+vec`` rows (``weighting.vectorize: true``,
  not in the default list);
* the ``+rep`` rows (``weighting.gradients: representation``, MGDA-UB; the strategies that take it): N
  short passes, each from one term back to the trunk output through its
  head (which also give the head's gradients), then one pass of the
  combined gradient through the trunk.

Nothing is asserted; this only prints.

How to run
----------
From the repository root::

    .venv/bin/python benchmarks/weighting.py
    .venv/bin/python benchmarks/weighting.py --heads 3 8 --repeats 5 --steps 100
    .venv/bin/python benchmarks/weighting.py --jit          # XLA-compile every train step
    .venv/bin/python benchmarks/weighting.py --strategies mgda mgda+rep mgda+vec

The defaults (every strategy, 41 rows, at 3 and 8 heads) take about 25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import multiloss as ml  # noqa: E402
from multiloss.weighting import STRATEGIES as REGISTRY  # noqa: E402
from multiloss.weighting import LayerGradientWeighting, LossWeighting  # noqa: E402

N_FEATURES = 64
N_CLASSES = 10
N_REGRESS = 4


def takes_representation(name: str) -> bool:
    """Whether the strategy takes ``gradients: representation`` (the spec check says so)."""
    try:
        ml.load_spec({"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse"}},
                      "weighting": {"strategy": name, "gradients": "representation"}})
    except ml.SpecError:
        return False
    return True


#: Every registered strategy, by kind (so that a new one is timed without editing this file).
LOSS = ["static"] + [n for n in sorted(REGISTRY.names()) if n != "static" and issubclass(REGISTRY[n], LossWeighting)]
LAYER = [n for n in sorted(REGISTRY.names()) if issubclass(REGISTRY[n], LayerGradientWeighting)]
GRADIENT = [n for n in sorted(REGISTRY.names()) if n not in LOSS + LAYER]
STRATEGIES = LOSS + LAYER + GRADIENT + [f"{s}+rep" for s in GRADIENT if takes_representation(s)]
CHOICES = STRATEGIES + ["pcgrad+vec", "mgda+vec", "cagrad+vec"]


def head_kinds(n_heads: int) -> list[tuple[str, str, int, str]]:
    out = []
    for i in range(n_heads):
        if i % 2 == 0:
            out.append((f"cls_{i}", "softmax", N_CLASSES, "categorical_crossentropy"))
        else:
            out.append((f"reg_{i}", "linear", N_REGRESS, "mse"))
    return out


def build_model(n_heads: int, width: int) -> keras.Model:
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.Dense(width, activation="relu", name="trunk_1")(inp)
    h = keras.layers.Dense(width, activation="relu", name="trunk_2")(h)
    outputs = {name: keras.layers.Dense(units, activation=act, name=name)(h)
               for name, act, units, _ in head_kinds(n_heads)}
    return keras.Model(inp, outputs, name=f"heads_{n_heads}")


def make_dataset(n_heads: int, batch_size: int, steps: int, seed: int) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    n = batch_size * steps
    x = rng.standard_normal((n, N_FEATURES)).astype("float32")
    y = {}
    for name, _, units, _ in head_kinds(n_heads):
        if units == N_CLASSES:
            y[name] = np.eye(N_CLASSES, dtype="float32")[rng.integers(0, N_CLASSES, n)]
        else:
            y[name] = rng.standard_normal((n, units)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).cache()


def spec_for(n_heads: int, strategy: str) -> dict:
    spec: dict = {"outputs": {name: {"loss": loss} for name, _, _, loss in head_kinds(n_heads)}}
    name, _, mode = strategy.partition("+")
    if name != "static":
        spec["weighting"] = {"strategy": name}
        if mode == "vec":
            spec["weighting"]["vectorize"] = True
        if mode == "rep":
            spec["weighting"]["gradients"] = "representation"
    return spec


def passes(strategy: str, n: int) -> str:
    name = strategy.partition("+")[0]
    if strategy.endswith("+vec"):
        return "1 (jacobian)"
    if strategy.endswith("+rep"):
        return f"1 + {n} heads"
    if name in LAYER:
        return f"1 + {n} to W"
    if name in GRADIENT:
        return str(n)
    return "1"


def time_fit(model: keras.Model, ds: tf.data.Dataset, steps: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return (time.perf_counter() - wall) * 1000.0 / steps, (time.process_time() - cpu) * 1000.0 / steps


def bench(n_heads: int, args) -> dict[str, tuple[list, list]]:
    weights = build_model(n_heads, args.width).get_weights()
    ds = make_dataset(n_heads, args.batch_size, args.steps, args.seed)
    models = {}
    for strategy in args.strategies:
        model = build_model(n_heads, args.width)
        model.set_weights(weights)
        ml.compile(model, spec_for(n_heads, strategy), optimizer=keras.optimizers.Adam(args.lr),
                   jit_compile=args.jit)
        model.fit(ds, epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)
        models[strategy] = model
    samples: dict[str, tuple[list, list]] = {s: ([], []) for s in args.strategies}
    for _ in range(args.repeats):
        for strategy, model in models.items():
            wall, cpu = time_fit(model, ds, args.steps)
            samples[strategy][0].append(wall)
            samples[strategy][1].append(cpu)
    return samples


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, nargs="+", default=[3, 8])
    p.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=CHOICES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", action="store_true", help="compile every train step with XLA")
    p.add_argument("--verbose", action="store_true", help="also print every sample")
    args = p.parse_args(argv)
    if "static" not in args.strategies:
        args.strategies = ["static", *args.strategies]

    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, jit_compile={args.jit}, "
          f"batch {args.batch_size}, width {args.width}, {args.repeats} repeats × {args.steps} steps, "
          f"CPU threads {os.cpu_count()}")
    t0 = time.perf_counter()
    for n in args.heads:
        keras.utils.set_random_seed(args.seed)
        samples = bench(n, args)
        base_wall = statistics.median(samples["static"][0])
        base_cpu = statistics.median(samples["static"][1])
        print(f"\n{n} heads")
        print(f"{'strategy':<16}  {'ms/step':>8}  {'ratio':>6}  {'cpu ratio':>9}  {'cpu paired':>10}  "
              f"{'backward passes':>15}")
        for strategy, (wall, cpu) in samples.items():
            med, med_cpu = statistics.median(wall), statistics.median(cpu)
            paired = statistics.median(c / b for c, b in zip(cpu, samples["static"][1]))
            print(f"{strategy:<16}  {med:>8.3f}  {med / base_wall:>6.3f}  {med_cpu / base_cpu:>9.3f}  {paired:>10.3f}  "
                  f"{passes(strategy, n):>15}", flush=True)
            if args.verbose:
                print("              wall:", " ".join(f"{t:.3f}" for t in wall))
        keras.backend.clear_session()
    print(f"\nratio = median ms/step / median static ms/step (targets: uncertainty, dwa, rlw ≤ 1.05; "
          f"gradnorm ≤ 1.5; pcgrad, mgda, cagrad +rep ≤ 1.25 at 8 heads, CPU). "
          f"Total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
