"""Every weighting strategy and gradient mode on Multi-Fashion, with several seeds: a table in docs/.

What it runs
------------
Multi-Fashion (Lin et al., *Pareto multi-task learning*, NeurIPS 2019): two
Fashion-MNIST items on one 36×36 canvas, one top-left, one shifted to the
bottom-right, and two 10-class tasks, ``left`` and ``right``
(``multiloss.run.data``'s ``multi_fashion`` source, built from the Debian
package ``dataset-fashion-mnist``).  One model for every run: a shared MLP
trunk (Flatten → Dense 256 ReLU → Dense 128 ReLU, the representation) and a
Dense softmax head per task, Adam 1e-3, batch 128, cross-entropy.

* every strategy (default parameters; ``static`` is the plain sum) with
  ``weighting.gradients: parameters``, and every gradient strategy again with
  ``gradients: representation`` (``+rep``, MGDA-UB style);
* single-task baselines: the same trunk with one head, trained the same way;
* each with ``--seeds`` seeds (data pairs, initial weights and shuffling all
  follow the seed; within a seed every run starts from the same weights).

Reported per strategy: test accuracy of each task, mean ± std over seeds;
Δm% against the single-task baselines (LibMTL's metric,
Δm = 100/T Σ_t (M_t − M_t^STL)/M_t^STL for accuracies), mean ± std; and the
training wall time of ``fit``.

Written
-------
* ``docs/weighting_multi_fashion.md``: the table and the command that made it;
* ``docs/weighting_multi_fashion.json``: every run's test metrics and last-epoch weights.

How to run
----------
From the repository root (the docs table: about 20 minutes on 2 CPU cores)::

    nice -n 10 .venv/bin/python benchmarks/weighting_real.py
    .venv/bin/python benchmarks/weighting_real.py --strategies static mgda mgda+rep --seeds 1 \\
        --train-size 2000 --epochs 1 --markdown /tmp/r.md --json /tmp/r.json
    # a column of each strategy's change of mean Δm% against an older run ("new" where it had none)
    nice -n 10 .venv/bin/python benchmarks/weighting_real.py --compare-with docs/weighting_multi_fashion.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _relative(value):
    """A path under the repository as a relative path; anything else unchanged."""
    if isinstance(value, str) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(ROOT):
        return str(Path(value).resolve().relative_to(ROOT))
    return value
sys.path.insert(0, str(ROOT))
import multiloss as ml  # noqa: E402
from multiloss.run.data import get_source  # noqa: E402
from multiloss.weighting import STRATEGIES  # noqa: E402

TASKS = ["left", "right"]
LOSS_WEIGHTING = ["static", "uncertainty", "dwa", "rlw", "famo", "gradnorm", "gls", "stch", "imtl_l"]
GRADIENT = ["pcgrad", "mgda", "cagrad", "nash_mtl", "imtl_g", "imtl", "gradvac", "aligned_mtl", "upgrad", "fairgrad",
            "config", "dual_proj", "db_mtl", "graddrop", "excess_mtl", "moco", "modo", "sdmgrad"]
# A state per shared parameter or per sample: refused with `gradients: representation`.
NO_REPRESENTATION = {"excess_mtl", "moco", "modo", "sdmgrad"}
DEFAULT = LOSS_WEIGHTING + GRADIENT + [f"{s}+rep" for s in GRADIENT if s not in NO_REPRESENTATION]


def build(tasks: list[str], input_shape) -> keras.Model:
    x = keras.Input(input_shape, name="image")
    h = keras.layers.Flatten(name="flatten")(x)
    h = keras.layers.Dense(256, activation="relu", name="trunk_1")(h)
    z = keras.layers.Dense(128, activation="relu", name="representation")(h)
    return keras.Model(x, {t: keras.layers.Dense(10, activation="softmax", name=t)(z) for t in tasks})


def spec_for(strategy: str, tasks: list[str]) -> dict:
    spec: dict = {"outputs": {t: {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
                              for t in tasks}}
    name, _, mode = strategy.partition("+")
    if name != "static":
        spec["weighting"] = {"strategy": name}
        if mode == "rep":
            spec["weighting"]["gradients"] = "representation"
    return spec


def run_one(strategy: str, tasks: list[str], splits, seed: int, args) -> dict:
    keras.utils.set_random_seed(seed)
    model = build(tasks, splits.info["input_shape"])
    ml.compile(model, spec_for(strategy, tasks), optimizer=keras.optimizers.Adam(1e-3))
    y = {t: splits.train.y[t] for t in tasks}
    yt = {t: splits.test.y[t] for t in tasks}
    start = time.perf_counter()
    hist = model.fit(splits.train.x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0).history
    seconds = time.perf_counter() - start
    test = model.evaluate(splits.test.x, yt, batch_size=1024, verbose=0, return_dict=True)
    acc = {t: float(test[f"{t}_accuracy"] if len(tasks) > 1 else test.get(f"{t}_accuracy", test.get("accuracy")))
           for t in tasks}
    weights = {t: float(hist[f"{t}_weight"][-1]) for t in tasks if f"{t}_weight" in hist}
    return {"strategy": strategy, "seed": seed, "seconds": seconds, "accuracy": acc, "weights": weights}


def delta_m(acc: dict, stl: dict) -> float:
    """LibMTL's Δm% for accuracies (higher is better)."""
    return 100.0 * float(np.mean([(acc[t] - stl[t]) / stl[t] for t in TASKS]))


def _pm(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def mean_delta_m(saved: dict) -> dict[str, float]:
    """Each strategy's mean Δm% in a JSON this script wrote."""
    stl = {int(k): v for k, v in saved["single_task"].items()}
    by: dict[str, list[float]] = {}
    for r in saved["runs"]:
        by.setdefault(r["strategy"], []).append(delta_m(r["accuracy"], stl[r["seed"]]))
    return {k: statistics.mean(v) for k, v in by.items()}


def table(runs: list[dict], stl: dict[int, dict], before: dict[str, float] | None = None) -> str:
    """The results table; with ``before`` (strategy → mean Δm% of an older run) a column of the change."""
    head = ["strategy", "gradients", "left acc ↑", "right acc ↑", "Δm% ↑", "train s"]
    head += ["Δm% change vs before"] if before is not None else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = {t: [stl[s][t] for s in sorted(stl)] for t in TASKS}
    lines.append(f"| single-task | — | {_pm(base['left'], '.4f')} | {_pm(base['right'], '.4f')} | 0 | "
                 f"{_pm([stl[s]['seconds'] for s in sorted(stl)], '.0f')} |" + (" — |" if before is not None else ""))
    names = list(dict.fromkeys(r["strategy"] for r in runs))
    for name in names:
        rs = [r for r in runs if r["strategy"] == name]
        strategy, _, mode = name.partition("+")
        dm = [delta_m(r["accuracy"], stl[r["seed"]]) for r in rs]
        lines.append(f"| `{strategy}` | {'representation' if mode else 'parameters' if strategy in GRADIENT else '—'} "
                     f"| {_pm([r['accuracy']['left'] for r in rs], '.4f')} "
                     f"| {_pm([r['accuracy']['right'] for r in rs], '.4f')} | {_pm(dm, '+.2f')} "
                     f"| {_pm([r['seconds'] for r in rs], '.0f')} |"
                     + ("" if before is None else
                        f" {statistics.mean(dm) - before[name]:+.2f} |" if name in before else " new |"))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = list(STRATEGIES) + [f"{s}+rep" for s in STRATEGIES]
    p.add_argument("--strategies", nargs="+", default=DEFAULT, choices=choices, metavar="STRATEGY[+rep]")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-size", type=int, default=30000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--markdown", default=str(ROOT / "docs" / "weighting_multi_fashion.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "weighting_multi_fashion.json"))
    p.add_argument("--compare-with", default=None, metavar="OLD.json",
                   help="add a column: each strategy's change of mean Δm% against a JSON this script wrote")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="no training: rewrite the markdown table from a JSON this script wrote")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        stl = {int(k): v for k, v in saved["single_task"].items()}
        before = mean_delta_m(json.loads(Path(args.compare_with).read_text())) if args.compare_with else None
        write_markdown(Path(args.markdown), saved["command"], saved["elapsed_min"],
                       argparse.Namespace(**saved["args"]), table(saved["runs"], stl, before))
        print(f"rewrote {args.markdown} from {args.from_json}")
        return
    command = "benchmarks/weighting_real.py" + ("" if argv is None and len(sys.argv) == 1
                                                else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"Multi-Fashion: {args.train_size} training / {args.test_size} test canvases, {args.epochs} epochs, "
          f"batch {args.batch_size}, {args.seeds} seeds, keras {keras.__version__}, CPU threads {os.cpu_count()}",
          flush=True)
    # Read before the run: --compare-with may name the file this run overwrites.
    before_saved = json.loads(Path(args.compare_with).read_text()) if args.compare_with else None
    total = time.perf_counter()
    runs, stl = [], {}
    for seed in range(args.seeds):
        splits = get_source("multi_fashion")(seed=seed, train_size=args.train_size, test_size=args.test_size)
        stl[seed] = {"seconds": 0.0}
        for t in TASKS:
            r = run_one("static", [t], splits, seed, args)
            stl[seed][t] = r["accuracy"][t]
            stl[seed]["seconds"] += r["seconds"]
        print(f"seed {seed} single-task: left {stl[seed]['left']:.4f} right {stl[seed]['right']:.4f}", flush=True)
        for strategy in args.strategies:
            r = run_one(strategy, TASKS, splits, seed, args)
            runs.append(r)
            print(f"seed {seed} {strategy:<16} left {r['accuracy']['left']:.4f} right {r['accuracy']['right']:.4f} "
                  f"Δm {delta_m(r['accuracy'], stl[seed]):+.2f}%  weights "
                  + " ".join(f"{k}={v:.3g}" for k, v in r["weights"].items()) + f"  {r['seconds']:.1f}s", flush=True)
    elapsed = time.perf_counter() - total
    text = table(runs, stl, mean_delta_m(before_saved) if before_saved else None)
    md = Path(args.markdown)
    write_markdown(md, command, elapsed / 60, args, text)
    shown = {k: _relative(v) for k, v in vars(args).items()}   # no machine paths in a committed file
    Path(args.json).write_text(json.dumps({"command": command, "elapsed_min": round(elapsed / 60, 1),
                                           "args": shown, "single_task": stl, "runs": runs}, indent=1))
    print(f"\n{text}\n\ntotal {elapsed / 60:.1f} min; wrote {md} and {args.json}")


def write_markdown(md: Path, command: str, minutes: float, args, text: str) -> None:
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join([
        "# Weighting strategies on Multi-Fashion",
        "",
        f"Written by `nice -n 10 .venv/bin/python {command}` (total {minutes:.1f} min on "
        f"{os.cpu_count()} CPU threads shared with other jobs, keras {keras.__version__}).",
        "",
        f"Multi-Fashion (Lin et al. 2019): two Fashion-MNIST items on a 36×36 canvas (top-left, and shifted 8 px "
        f"to the bottom-right), tasks `left` and `right` (10 classes each); {args.train_size} training canvases "
        f"from the official training images, {args.test_size} test canvases from the official test images. "
        f"Model: shared MLP trunk (Dense 256 → Dense 128 = the representation) and one softmax head per task; "
        f"Adam 1e-3, batch {args.batch_size}, {args.epochs} epochs, default parameters of every strategy. "
        f"Single-task baselines: the same trunk with one head, trained the same way. Mean ± std over "
        f"{args.seeds} seeds (0..{args.seeds - 1}: pairs, initial weights, shuffling). Δm% = 100/T Σ_t "
        "(acc_t − acc_t^STL)/acc_t^STL against the baselines of the same seed (LibMTL's metric; higher is "
        "better). *train s*: wall time of `fit` (the single-task row: both baselines).",
        "",
        text,
        "",
    ]))


if __name__ == "__main__":
    main()
