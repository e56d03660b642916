"""Every weighting strategy on Fashion-MNIST: per-head test metrics and wall time, as a table in docs/.

What it runs
------------
The run config ``configs/fashion_mnist_weighting.yaml`` (a shared CNN trunk
and three heads whose losses differ greatly in scale: the class, a coarse
group, and the reconstructed image) once per strategy — static, uncertainty,
dwa, gradnorm, pcgrad, rlw, mgda, cagrad — with the same data, seed, initial
weights, optimizer and epochs; only ``loss.weighting.strategy`` changes
(default parameters of every strategy).  The data come from
``multiloss.data``'s ``fashion_mnist`` source (the Debian package
``dataset-fashion-mnist``); the model from ``multiloss.models``.

Written
-------
* ``docs/weighting_results.md``: per strategy, the test accuracy of ``class``
  and ``group``, the test MSE of ``image``, each term's test loss, the last
  epoch's weights, and the training wall time;
* ``docs/weighting_fashion_mnist.json``: every strategy's per-epoch history
  (the notebook ``notebooks/weighting.ipynb`` plots its weight curves).

How to run
----------
From the repository root (about 10 minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/weighting_real.py
    .venv/bin/python benchmarks/weighting_real.py --strategies static gradnorm --epochs 2 \
        --set data.params.train_limit=2000 --markdown /tmp/results.md --json /tmp/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import multiloss as ml  # noqa: E402
from multiloss.config import load_run_config  # noqa: E402
from multiloss.models import get_builder  # noqa: E402
from multiloss.runner import load_splits, make_optimizer, prepare  # noqa: E402
from multiloss.weighting import STRATEGIES  # noqa: E402


def run_one(cfg, splits, data, strategy: str, epochs: int) -> dict:
    keras.utils.set_random_seed(cfg.seed)
    model = get_builder(cfg.model.builder)(splits.info, **cfg.model.params)
    spec = cfg.spec.to_dict()
    spec["weighting"] = {"strategy": strategy}
    ml.compile(model, spec, optimizer=make_optimizer(cfg), jit_compile=cfg.train.jit_compile)
    (x, y), val, (xt, yt) = data
    start = time.perf_counter()
    hist = model.fit(x, y, validation_data=val, epochs=epochs, batch_size=cfg.train.batch_size,
                     shuffle=cfg.train.shuffle, verbose=0).history
    seconds = time.perf_counter() - start
    test = model.evaluate(xt, yt, batch_size=cfg.train.batch_size, verbose=0, return_dict=True)
    terms = model.loss.term_names
    return {
        "strategy": strategy,
        "seconds": seconds,
        "test": {k: float(v) for k, v in test.items()},
        "weights": {t: float(hist[f"{t}_weight"][-1]) for t in terms},
        "history": {k: [float(v) for v in vs] for k, vs in hist.items()},
        "terms": terms,
    }


def _display(path: str) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def table(results: list[dict]) -> str:
    terms = results[0]["terms"]
    head = ["strategy", "class acc ↑", "group acc ↑", "image MSE ↓"]
    head += [f"{t} loss" for t in terms] + [f"{t} weight" for t in terms] + ["train s"]
    rows = []
    for r in results:
        t = r["test"]
        rows.append([f"`{r['strategy']}`", f"{t['class_accuracy']:.4f}", f"{t['group_accuracy']:.4f}",
                     f"{t['image_loss']:.5f}"] + [f"{t[f'{n}_loss']:.4f}" for n in terms]
                    + [f"{r['weights'][n]:.3g}" for n in terms] + [f"{r['seconds']:.0f}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist_weighting.yaml"))
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--epochs", type=int, default=None, help="default: the config's train.epochs")
    p.add_argument("--markdown", default=str(ROOT / "docs" / "weighting_results.md"))
    p.add_argument("--json", default=str(ROOT / "docs" / "weighting_fashion_mnist.json"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.params.train_limit=2000")
    args = p.parse_args(argv)

    cfg = load_run_config(args.config, args.set)
    epochs = args.epochs or cfg.train.epochs
    splits = load_splits(cfg)
    data = (prepare(splits.train, cfg, "train"), prepare(splits.val, cfg, "val"),
            prepare(splits.test, cfg, "test"))
    n_train, n_val, n_test = (len(splits.train), len(splits.val) if splits.val else 0, len(splits.test))
    print(f"{cfg.name}: {n_train} train / {n_val} val / {n_test} test images, {epochs} epochs, "
          f"batch {cfg.train.batch_size}, keras {keras.__version__}, CPU threads {os.cpu_count()}")
    results = []
    total = time.perf_counter()
    for strategy in args.strategies:
        r = run_one(cfg, splits, data, strategy, epochs)
        results.append(r)
        t = r["test"]
        print(f"{strategy:<12} class acc {t['class_accuracy']:.4f}  group acc {t['group_accuracy']:.4f}  "
              f"image MSE {t['image_loss']:.5f}  weights "
              + " ".join(f"{k}={v:.3g}" for k, v in r["weights"].items()) + f"  {r['seconds']:.0f}s", flush=True)
    md = Path(args.markdown)
    md.parent.mkdir(parents=True, exist_ok=True)
    text = [
        "# Weighting strategies on Fashion-MNIST",
        "",
        f"Written by `benchmarks/weighting_real.py` from `{_display(args.config)}`: "
        f"{n_train} training images ({n_val} more for validation), the {n_test}-image test subset, "
        f"{epochs} epochs, batch {cfg.train.batch_size}, Adam 1e-3, seed {cfg.seed}, "
        f"{os.cpu_count()} CPU threads, keras {keras.__version__}.  Every strategy starts from the same "
        "initial weights and uses its default parameters; only `loss.weighting.strategy` changes.",
        "",
        "Heads: `class` (10 classes, cross-entropy), `group` (tops / bottoms & dresses / footwear / bags, "
        "cross-entropy), `image` (reconstruction, per-pixel MSE — 5 to 25 times smaller "
        "than the cross-entropies).  Metrics on the test subset; *weight* is the effective weight "
        "(static × strategy) averaged over the last epoch; *train s* is the wall time of `fit` "
        "(including validation).",
        "",
        table(results),
        "",
        f"Total {time.perf_counter() - total:.0f} s.  One seed, one run each: differences of a few "
        "tenths of a point in accuracy are within run-to-run noise.",
        "",
    ]
    md.write_text("\n".join(text))
    Path(args.json).write_text(json.dumps(
        {"config": _display(args.config), "epochs": epochs,
         "results": [{k: r[k] for k in ("strategy", "seconds", "test", "weights", "history", "terms")}
                     for r in results]}, indent=1))
    print(f"\n{table(results)}\n\nwrote {md} and {args.json}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
