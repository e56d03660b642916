"""Split Fashion-MNIST, class-incremental: every method, two scenarios, several seeds.

What it runs
------------
``configs/incremental_fashion_mnist.yaml`` for every method (``METHODS``) in
two scenarios: ``5x2`` (5 steps of 2 classes) and ``B4-2`` (4 classes, then
3 steps of 2), each repeated over ``--seeds`` (a ``seeds:`` run: seed s sets
the initialisation and the class order ``np.random.seed(s);
np.random.permutation(10)``).  The same network, optimizer, data and memory
for every method; what differs is stated per method in the table (extra
stages and their epochs).  The runs' settings are the config's with
``--set`` overrides (``SETTINGS`` by default: a seeded subset of the data so
that the whole benchmark fits in about half an hour on 2 CPU cores).  With
``--ablation`` it adds single-seed WA variants (no aligning, no clipping,
λ = 0.5, distillation at PyCIL's scale, a 4× smaller memory, and iCaRL with
the smaller memory).

What it writes
--------------
``docs/incremental_benchmark.md``: per scenario and method, mean ± sample std
over the seeds of average incremental accuracy, last accuracy and forgetting
on the test split, the epochs of each stage, the wall-clock minutes of all
its seeds; the mean accuracy after each step; the best exemplar method
against joint (target: ``--target``, 0.9 × joint by default); each method's
last accuracy per class order; with ``--compare-with OLD.md``, each method's
change of the means against an older report (its ``.json``, or its tables).
``docs/incremental_benchmark.json``: the figures.  ``docs/incremental_benchmark.png``:
the mean accuracy after each step, every method, one panel per scenario.

How to run
----------
From the repository root (needs the Debian package dataset-fashion-mnist)::

    nice -n 10 .venv/bin/python benchmarks/incremental.py --ablation
    .venv/bin/python benchmarks/incremental.py --methods icarl joint --seeds 1993 --out /tmp/quick.md
    .venv/bin/python benchmarks/incremental.py --resume     # continue after a kill
    .venv/bin/python benchmarks/incremental.py --compare-with docs/incremental_benchmark.md

Nothing is asserted; timings are wall-clock and noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ["finetune", "lwf", "ewc", "replay", "icarl", "eeil", "wa", "bic", "podnet", "der", "lucir", "foster", "memo", "joint"]
EXEMPLAR = ["replay", "icarl", "eeil", "wa", "bic", "podnet", "der", "lucir", "foster", "memo"]
SCENARIOS = {"5x2": (2, 2), "B4-2": (4, 2)}
SEEDS = [1993, 1994, 1995]
SETTINGS = ["data.params.train_limit=4000", "data.params.test_limit=3000", "train.batch_size=32"]
ABLATION = {  # single seed, 5x2: what WA's departures and the memory size do
    "wa, no weight aligning": ("wa", ["method.params.align=false"]),
    "wa, no weight clipping": ("wa", ["method.params.clip_weights=false"]),
    "wa, λ = 0.5 (not old/seen)": ("wa", ["method.params.distillation_weight=0.5"]),
    "wa, KL without T² (PyCIL's scale)": ("wa", ["method.params.t_squared=false"]),
    "wa, memory 50": ("wa", ["memory.budget=50"]),
    "icarl, memory 50": ("icarl", ["memory.budget=50"]),
}
TARGET = 0.9
FIGURES = ("average_incremental_accuracy", "last_accuracy", "forgetting")


def _ms(figure: dict) -> str:
    return "n/a" if figure["mean"] is None else f"{figure['mean']:.3f} ± {figure['std']:.3f}"


def stages(method: str, params: dict, epochs: int) -> str:
    """Each stage of a step and its epochs, from the method's parameters."""
    if method == "eeil":
        extra = f" + {params['balanced_epochs']} balanced (memory, lr × {params['balanced_lr_scale']:g})"
    elif method == "bic":
        extra = f" + {params['bias_epochs']} bias layer (held-out split, α and β only)"
    elif method in ("podnet", "der", "lucir", "memo", "foster") and params.get("balanced_epochs"):
        extra = f" + {params['balanced_epochs']} classifier only (memory, lr × {params['balanced_lr_scale']:g})"
    else:
        extra = ""
    if method == "foster" and params.get("compression_epochs") != 0:
        compress = epochs if params.get("compression_epochs") is None else params["compression_epochs"]
        extra = f" + {compress} compression (new + memory, lr × {params['compression_lr_scale']:g})" + extra
    data = {"joint": "all seen data", "finetune": "new data", "lwf": "new data", "ewc": "new data"}.get(
        method, "new + memory")
    return f"{epochs} ({data}){extra}"


def config_text(config: str, overrides: list[str]) -> str:
    from multiloss.incremental.config import load_incremental_config

    cfg = load_incremental_config(config, overrides)
    d, m, o, t = cfg.data, cfg.model, cfg.optimizer, cfg.train
    return (f"data `{d.source}` {dict(d.params)}; backbone `{m.builder}` {dict(m.params)}; memory "
            f"{cfg.memory.model_dump(exclude_none=True)}; optimizer `{o.name}` {dict(o.params)}; "
            f"{t.epochs} epochs per step, batch {t.batch_size}, learning rate {t.lr_schedule}")


def read_previous(path: str) -> dict:
    """The mean figures of an older report of this script: ``{scenario: {method: {figure: mean}}}``.

    Reads its ``.json`` when there is one, else the tables of its markdown (reports before the json)."""
    import json

    path = Path(path)
    if path.with_suffix(".json").exists():
        saved = json.loads(path.with_suffix(".json").read_text())
        return {scen: {m: {k: r[k]["mean"] for k in FIGURES} for m, r in by.items()} for scen, by in saved.items()}
    row = re.compile(r"^(\S+)\s+([\d.]+) ± [\d.]+\s+([\d.]+) ± [\d.]+\s+(?:([\d.]+) ± [\d.]+|n/a)\s")
    out: dict = {}
    scen = None
    for line in path.read_text().splitlines():
        head = re.match(r"^## (\S+): steps of", line)
        if head:
            scen = head.group(1)
            out[scen] = {}
        elif scen and (m := row.match(line)) and m.group(1) not in out[scen]:
            out[scen][m.group(1)] = {"average_incremental_accuracy": float(m.group(2)),
                                     "last_accuracy": float(m.group(3)),
                                     "forgetting": None if m.group(4) is None else float(m.group(4))}
    return out


def changes(scen: str, by_method: dict, before: dict, source: str) -> list[str]:
    """Each method's change against the older report: new rows, and Δ of the means."""
    from multiloss.run.console import table as format_table

    rows = []
    for m, r in by_method.items():
        if m not in before:
            rows.append([m, "new", "", ""])
            continue
        delta = [r[k]["mean"] - before[m][k] if r[k]["mean"] is not None and before[m][k] is not None else None
                 for k in FIGURES]
        rows.append([m, *("n/a" if d is None else f"{d:+.3f}" for d in delta)])
    return [f"Against `{source}` (Δ of the means; methods whose code changed since then are the rows to read, "
            "the others show the run-to-run noise):", "", "```",
            *format_table(rows, ["method", "Δ avg inc acc", "Δ last acc", "Δ forgetting"]).splitlines(), "```", ""]


def report(results: dict, walls: dict, ablation: dict, ablation_walls: dict, args, settings: list[str],
           cfg_text: str, previous: dict | None = None) -> str:
    import tensorflow as tf

    from multiloss.run.console import table as format_table

    lines = [
        "# Split Fashion-MNIST: class-incremental benchmark",
        "",
        f"Generated by `benchmarks/incremental.py` on {datetime.date.today()}: config `{args.config}` with "
        + ", ".join(f"`--set {o}`" for o in settings) + f", seeds {args.seeds}. Effective settings: {cfg_text}.",
        f"{os.cpu_count()} CPU cores shared with other jobs, Python {platform.python_version()}, TensorFlow "
        f"{tf.__version__}. Figures: mean ± sample standard deviation over the seeds, on the test split "
        "(a seeded subset of the official test images when `test_limit` is set). Minutes: wall clock of "
        "all seeds of a method.",
        "",
    ]
    for scen, by_method in results.items():
        first = next(iter(by_method.values()))
        lines += [f"## {scen}: steps of {first['groups']} classes", "", "Class orders (one per seed):", ""]
        for s, r in first["runs"].items():
            lines.append(f"* seed {s}: `np.random.seed({s}); np.random.permutation(10)` = {r['class_order']}: "
                         + ", ".join(r["class_names"]))
        lines += ["", "```"]
        rows = [[m, _ms(r["average_incremental_accuracy"]), _ms(r["last_accuracy"]), _ms(r["forgetting"]),
                 f"{walls[scen][m] / 60:.1f}", stages(m, r["method_params"], r["epochs"])]
                for m, r in by_method.items()]
        lines += format_table(rows, ["method", "avg inc acc", "last acc", "forgetting", "minutes",
                                     "epochs per step (data)"]).splitlines()
        lines += ["```", "", "Mean accuracy on all seen classes after each step:", "", "```"]
        seen = [str(n) for n in first["num_classes"]]
        rows = [[m] + [f"{a:.3f}" for a in r["accuracy_mean"]] for m, r in by_method.items()]
        lines += format_table(rows, ["method \\ classes seen", *seen]).splitlines()
        lines += ["```", "", "Last accuracy per class order (seed):", "", "```"]
        seeds = list(first["runs"])
        rows = [[m] + [f"{r['runs'][s]['last_accuracy']:.3f}" if s in r["runs"] else "n/a" for s in seeds]
                + ([f"{r['last_accuracy']['mean'] / by_method['joint']['last_accuracy']['mean']:.3f}"]
                   if "joint" in by_method else [])
                for m, r in by_method.items()]
        lines += format_table(rows, ["method \\ seed", *seeds, *(["× joint"] if "joint" in by_method else [])]
                              ).splitlines()
        lines += ["```", ""]
        if previous is not None and scen in previous:
            lines += changes(scen, by_method, previous[scen], args.compare_with)
        if "joint" in by_method:
            joint = by_method["joint"]
            ex = {m: r for m, r in by_method.items() if m in EXEMPLAR}
            if ex:
                best = max(ex, key=lambda m: ex[m]["last_accuracy"]["mean"])
                ratio = ex[best]["last_accuracy"]["mean"] / joint["last_accuracy"]["mean"]
                avg = ex[best]["average_incremental_accuracy"]["mean"] / joint["average_incremental_accuracy"]["mean"]
                lines += [f"Best exemplar method by last accuracy: **{best}**, "
                          f"{ex[best]['last_accuracy']['mean']:.3f} = **{ratio:.3f} × joint** "
                          f"({joint['last_accuracy']['mean']:.3f}); average incremental accuracy "
                          f"{avg:.3f} × joint. Target ≥ {args.target} × joint: "
                          f"{'met' if ratio >= args.target else 'missed'}.", ""]
    if ablation:
        lines += ["## WA ablation (5x2, seed 1993, the settings above)", "", "```"]
        rows = [[k, f"{r['average_incremental_accuracy']:.3f}", f"{r['last_accuracy']:.3f}",
                 "n/a" if r["forgetting"] is None else f"{r['forgetting']:.3f}",
                 " ".join(f"{s.get('gamma', float('nan')):.2f}" for s in r["steps"][1:]) if "wa" in k else ""]
                for k, r in ablation.items()]
        lines += format_table(rows, ["variant", "avg inc acc", "last acc", "forgetting", "γ per step"]).splitlines()
        lines += ["```", ""]
    total = sum(sum(w.values()) for w in walls.values()) + sum(ablation_walls.values())
    lines += [f"Total wall time: {total / 60:.1f} minutes.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from multiloss.run.plots import new_figure, save_figure

    fig = new_figure(5.2 * len(results), 4.4)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (scen, by_method) in zip(axes, results.items()):
        for m, r in by_method.items():
            bound = m in ("joint", "finetune")
            ax.errorbar(r["num_classes"], r["accuracy_mean"], yerr=r["accuracy_std"], fmt="o", ms=3.5,
                        capsize=2, lw=1.8 if bound else 1.3, linestyle="--" if bound else "-", label=m)
        ax.set_xlabel("classes seen")
        ax.set_ylabel("test accuracy on all seen classes")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        n = len(next(iter(by_method.values()))["seeds"])
        ax.set_title(f"{scen}: mean ± std over {n} seeds", fontsize=10)
    axes[-1].legend(fontsize=7, ncol=2, loc="lower left")
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/incremental_fashion_mnist.yaml")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    p.add_argument("--runs", default="runs/incremental_benchmark", help="output_dir of the runs")
    p.add_argument("--out", default="docs/incremental_benchmark.md")
    p.add_argument("--set", action="append", default=None, metavar="KEY.PATH=VALUE",
                   help=f"override the config for every run (default: {' '.join(SETTINGS)})")
    p.add_argument("--ablation", action="store_true", help="add the single-seed WA variants")
    p.add_argument("--target", type=float, default=TARGET, help="best exemplar method's last accuracy ÷ joint's")
    p.add_argument("--compare-with", default=None, metavar="REPORT.md",
                   help="an older report of this script: add each method's change against it")
    p.add_argument("--resume", action="store_true", help="resume runs that stopped (minutes are then the "
                                                         "runs' own, summed over their parts)")
    args = p.parse_args(argv)
    settings = SETTINGS if args.set is None else args.set

    from multiloss.incremental import run_incremental
    from multiloss.incremental.config import load_incremental_config
    from multiloss.run import atomic

    results: dict[str, dict] = {}
    walls: dict[str, dict] = {}
    for scen in args.scenarios:
        initial, increment = SCENARIOS[scen]
        results[scen], walls[scen] = {}, {}
        for m in args.methods:
            print(f"=== {scen} {m} ===", flush=True)
            sets = [*settings, f"scenario.initial={initial}", f"scenario.increment={increment}",
                    f"method.name={m}", f"name={scen}-{m}", f"output_dir={args.runs}", f"seeds={args.seeds}"]
            start = time.perf_counter()
            summary = run_incremental(args.config, sets, resume=args.resume, overwrite=not args.resume, quiet=True)
            walls[scen][m] = 60 * summary["minutes"] if args.resume else time.perf_counter() - start
            summary["epochs"] = load_incremental_config(args.config, sets).train.epochs
            results[scen][m] = summary
            print(f"{scen} {m}: avg inc {_ms(summary['average_incremental_accuracy'])}, last "
                  f"{_ms(summary['last_accuracy'])}, forgetting {_ms(summary['forgetting'])}, "
                  f"{walls[scen][m] / 60:.1f} min", flush=True)
    ablation: dict = {}
    ablation_walls: dict = {}
    if args.ablation:
        for name, (m, extra) in ABLATION.items():
            print(f"=== ablation: {name} ===", flush=True)
            start = time.perf_counter()
            tag = "abl-" + "-".join("".join(ch if ch.isascii() and ch.isalnum() else " " for ch in name).split())
            ablation[name] = run_incremental(args.config, [*settings, "scenario.initial=2", "scenario.increment=2",
                                                           f"method.name={m}", f"name={tag}", "seed=1993",
                                                           "scenario.order_seed=1993", f"output_dir={args.runs}",
                                                           *extra],
                                             resume=args.resume, overwrite=not args.resume, quiet=True)
            ablation_walls[name] = time.perf_counter() - start
            print(f"{name}: last {ablation[name]['last_accuracy']:.3f}", flush=True)
    previous = read_previous(args.compare_with) if args.compare_with else None
    text = report(results, walls, ablation, ablation_walls, args, settings, config_text(args.config, settings),
                  previous)
    out = Path(args.out)
    atomic.write_text(out, text)
    atomic.write_text(out.with_suffix(".json"), json.dumps(
        {scen: {m: {k: r[k] for k in (*FIGURES, "accuracy_mean", "num_classes", "seeds")}
                for m, r in by.items()} for scen, by in results.items()}, indent=1))
    plot(results, out.with_suffix(".png"))
    print("\n" + text)
    print(f"written: {out}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
