"""Training-step overhead of ``ml.compile`` versus plain ``model.compile``.

What it measures
----------------
For each head count N (default 3, 8 and 32) one functional Keras model is
built: a shared Dense trunk on a 64-feature input and N small Dense heads,
alternating ``softmax`` + ``categorical_crossentropy`` (10 classes) and
``linear`` + ``mse`` (4 values), with per-head weights.  Two fresh instances
with identical initial weights are compiled:

* **native**: ``model.compile(optimizer, loss={head: ...}, loss_weights={head: ...})``
* **multiloss**: ``ml.compile(model, {"outputs": {head: {"loss": ..., "weight": ...}}}, optimizer)``

With ``--barrier`` a third instance is timed in the same interleaving:
**native + barrier**, native ``compile`` whose optimizer update waits until
every gradient is computed (one ``tf.group`` of the gradients as a control
dependency, no other op).  An exact non-finite guard must hold every update
until the last gradient is known to be finite, so this column is the cost of
that wait alone, on this machine, without any check.

Both get the same optimizer settings and train on the same in-memory
``tf.data`` dataset.  After a warm-up fit (which traces and compiles the
train function), the two are timed *interleaved* in one process
(native, multiloss, native, multiloss, ...) so that drift in machine load hits
both equally.  Each repeat is one ``model.fit`` epoch of ``--steps`` batches;
its wall time divided by ``--steps`` is one ms/step sample.  The table shows
the median of the samples of each way and the ratio multiloss/native (target:
≤ 1.03).  Nothing is asserted; this only prints.

Extra columns: ``cpu ratio`` is the same ratio measured with process CPU time
(``time.process_time``), which is steadier than wall time on small VMs whose
wall-clock samples can be bimodal (idle-vCPU wake-up latency); ``logs/step``
is how many values each way logs per step (Keras converts every one to a
Python float after each batch); ``|Δloss|`` is the difference of the two
ways' ``evaluate`` loss from the shared initial weights (should be ~0).

How to run
----------
From the repository root::

    .venv/bin/python benchmarks/overhead.py
    .venv/bin/python benchmarks/overhead.py --heads 3 8 32 --repeats 5 --steps 100
    .venv/bin/python benchmarks/overhead.py --jit          # XLA-compile both train steps
    .venv/bin/python benchmarks/overhead.py --barrier      # and the cost of an exact guard's wait alone

The defaults finish in a few minutes on a 2-core CPU.
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

N_FEATURES = 64
N_CLASSES = 10
N_REGRESS = 4


def head_kinds(n_heads: int) -> list[tuple[str, str, int, str, float]]:
    """(name, activation, units, loss, weight) for each head; classification and regression alternate."""
    out = []
    for i in range(n_heads):
        weight = (1.0, 0.5, 0.25)[i % 3]
        if i % 2 == 0:
            out.append((f"cls_{i}", "softmax", N_CLASSES, "categorical_crossentropy", weight))
        else:
            out.append((f"reg_{i}", "linear", N_REGRESS, "mse", weight))
    return out


def build_model(n_heads: int, width: int) -> keras.Model:
    inp = keras.Input((N_FEATURES,), name="x")
    h = keras.layers.Dense(width, activation="relu", name="trunk_1")(inp)
    h = keras.layers.Dense(width, activation="relu", name="trunk_2")(h)
    outputs = {
        name: keras.layers.Dense(units, activation=act, name=name)(h)
        for name, act, units, _, _ in head_kinds(n_heads)
    }
    return keras.Model(inp, outputs, name=f"heads_{n_heads}")


def make_dataset(n_heads: int, batch_size: int, steps: int, seed: int) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    n = batch_size * steps
    x = rng.standard_normal((n, N_FEATURES)).astype("float32")
    y = {}
    for name, _, units, _, _ in head_kinds(n_heads):
        if units == N_CLASSES:
            y[name] = np.eye(N_CLASSES, dtype="float32")[rng.integers(0, N_CLASSES, n)]
        else:
            y[name] = rng.standard_normal((n, units)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).cache()


class BarrierAdam(keras.optimizers.Adam):
    """Adam whose update waits for every gradient (the wait an exact guard needs, without its check)."""

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        with tf.control_dependencies([tf.group([g for g in grads if g is not None])]):
            return super().apply(grads, trainable_variables)


def native_compile(model: keras.Model, n_heads: int, optimizer, jit: bool) -> None:
    kinds = head_kinds(n_heads)
    model.compile(
        optimizer=optimizer,
        loss={name: loss for name, _, _, loss, _ in kinds},
        loss_weights={name: w for name, _, _, _, w in kinds},
        jit_compile=jit,
    )


def native_model(n_heads: int, width: int, optimizer, jit: bool, weights: list) -> keras.Model:
    """A fresh model from ``weights``, with native ``compile`` and ``optimizer``."""
    model = build_model(n_heads, width)
    model.set_weights(weights)
    native_compile(model, n_heads, optimizer, jit)
    return model


def compiled_pair(n_heads: int, width: int, lr: float, jit: bool) -> tuple[keras.Model, keras.Model]:
    """Two fresh models with identical initial weights: (native, multiloss)."""
    reference = build_model(n_heads, width)
    weights = reference.get_weights()
    kinds = head_kinds(n_heads)

    native = native_model(n_heads, width, keras.optimizers.Adam(lr), jit, weights)

    multi = build_model(n_heads, width)
    multi.set_weights(weights)
    spec = ml.load_spec({"outputs": {name: {"loss": loss, "weight": w} for name, _, _, loss, w in kinds}})
    ml.compile(multi, spec, optimizer=keras.optimizers.Adam(lr), jit_compile=jit)
    return native, multi


def time_fit(model: keras.Model, ds: tf.data.Dataset, steps: int) -> tuple[float, float]:
    """Wall and process-CPU milliseconds per step of one ``fit`` epoch over ``steps`` batches."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return (time.perf_counter() - wall) * 1000.0 / steps, (time.process_time() - cpu) * 1000.0 / steps


def bench(n_heads: int, args) -> dict:
    native, multi = compiled_pair(n_heads, args.width, args.lr, args.jit)
    models = [native, multi]
    if args.barrier:
        models.append(native_model(n_heads, args.width, BarrierAdam(args.lr), args.jit, native.get_weights()))
    ds = make_dataset(n_heads, args.batch_size, args.steps, args.seed)
    # Sanity check: from the same weights both ways give the same total loss.
    x, y = next(iter(ds))
    lo_n = float(native.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    lo_m = float(multi.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    # Warm-up: trace/compile the train function, fill the dataset cache; count
    # the values each train step returns (Keras converts each after every batch).
    step_logs = []
    for model in models:
        seen: dict = {}
        counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs, s=seen: s.update(logs))
        model.fit(ds, epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0, callbacks=[counter])
        step_logs.append(len(seen))
    samples: list[list] = [[] for _ in models]
    for _ in range(args.repeats):  # interleaved: A, B, (C,) A, B, (C,) ...
        for model, out in zip(models, samples, strict=True):
            out.append(time_fit(model, ds, args.steps))
    return {
        "wall": tuple([w for w, _ in s] for s in samples),
        "cpu": tuple([c for _, c in s] for s in samples),
        "logs": tuple(step_logs[:2]),
        "dloss": abs(lo_n - lo_m),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, nargs="+", default=[3, 8, 32], help="head counts (default 3 8 32)")
    p.add_argument("--repeats", type=int, default=9, help="timed fits per way and head count (default 9)")
    p.add_argument("--steps", type=int, default=200, help="training steps per timed fit (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up steps per model (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=128, help="units of each trunk layer (default 128)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", action="store_true", help="compile both train steps with XLA (jit_compile=True)")
    p.add_argument("--barrier", action="store_true",
                   help="also time native compile whose update waits for every gradient (an exact guard's wait)")
    p.add_argument("--verbose", action="store_true", help="also print every sample")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        p.error("--repeats and --steps must be ≥ 1")

    keras.utils.set_random_seed(args.seed)
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, backend {keras.backend.backend()}, "
          f"jit_compile={args.jit}, batch {args.batch_size}, width {args.width}, "
          f"{args.repeats} repeats × {args.steps} steps, CPU threads {os.cpu_count()}")
    print(f"{'heads':>5}  {'native ms/step':>14}  {'multiloss ms/step':>17}  {'ratio':>6}  "
          f"{'cpu ratio':>9}  {'logs/step':>9}  {'|Δloss|':>8}" + ("  barrier wall/cpu" if args.barrier else ""))
    t0 = time.perf_counter()
    for n in args.heads:
        keras.utils.set_random_seed(args.seed)
        r = bench(n, args)
        med_n, med_m, *med_b = map(statistics.median, r["wall"])
        cpu_n, cpu_m, *cpu_b = map(statistics.median, r["cpu"])
        logs = "{}/{}".format(*r["logs"])
        barrier = f"  {med_b[0] / med_n:>7.3f}/{cpu_b[0] / cpu_n:.3f}" if med_b else ""
        print(f"{n:>5}  {med_n:>14.3f}  {med_m:>17.3f}  {med_m / med_n:>6.3f}  {cpu_m / cpu_n:>9.3f}  "
              f"{logs:>9}  {r['dloss']:>8.1e}{barrier}", flush=True)
        if args.verbose:
            for clock in ("wall", "cpu"):
                for way, samples in zip(("native", "multiloss", "barrier"), r[clock]):
                    print(f"       {clock:4} {way:9}:", " ".join(f"{t:.3f}" for t in samples))
        keras.backend.clear_session()
    print(f"ratio = median multiloss / median native wall ms/step (target ≤ 1.03); cpu ratio: the same "
          f"with process CPU time; logs/step: native/multiloss values logged per step; barrier: native with "
          f"its update held until every gradient is computed, over native. "
          f"Total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
