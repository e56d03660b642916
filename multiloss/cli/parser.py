"""The ``multiloss`` argument parser.

Imports nothing but the standard library, so that ``multiloss --help``,
``--version`` and every subcommand's ``--help`` answer without TensorFlow
(the console script imports this module with ``MULTILOSS_SPEC_ONLY=1``).
"""

from __future__ import annotations

import argparse
import sys

#: Commands that work on a spec alone: they answer without importing TensorFlow
#: (``validate`` imports it for a run config, an incremental config or ``--model``; ``describe`` may, for a run config).
SPEC_ONLY_COMMANDS = ("describe", "schema", "validate")


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1 (``--epochs 0`` or ``--batch -3`` is refused by the parser)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {value}")
    return value


def version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("multiloss")
    except PackageNotFoundError:
        return "unknown"


def needs_tensorflow(args: argparse.Namespace) -> bool:
    """Whether the parsed command needs the whole package (Keras and everything registered with it)."""
    return args.command not in SPEC_ONLY_COMMANDS or bool(getattr(args, "model", None))


def _run_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--resume", action="store_true", help=f"continue the run in its folder after its last {what}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run that already exists in the folder (without it, or --resume, an "
                        "existing run is never touched)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config field (repeatable), e.g. --set train.epochs=3")


def _sweep_parsers(sub) -> None:
    """``multiloss sweep`` (run, show, best) and ``multiloss baselines``."""
    sw = sub.add_parser(
        "sweep", help="search loss weights, strategies and any config path with Optuna; the Pareto front "
                      "across tasks",
        description="multiloss sweep SWEEP.yaml runs a sweep (each trial an ordinary run in SWEEP_DIR/trial-NNNN); "
                    "multiloss sweep show SWEEP_DIR reprints its summary; multiloss sweep best SWEEP_DIR "
                    "--pick depth=0.7,seg=0.3 writes the picked front trial's run config.")
    sw.add_argument("target", metavar="SWEEP.yaml|show|best", help="a sweep file to run, or show / best")
    sw.add_argument("sweep_dir", nargs="?", metavar="SWEEP_DIR", help="show, best: the sweep's folder")
    sw.add_argument("--workers", type=positive_int, default=1, help="trial processes at once on this machine (default 1)")
    sw.add_argument("--resume", action="store_true",
                    help="continue the sweep's study (also: join a sweep that is running in the folder)")
    sw.add_argument("--overwrite", action="store_true",
                    help="replace the sweep in the folder, and its study (without it, or --resume, an existing "
                         "sweep is never touched)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a field of the sweep file (repeatable), e.g. --set trials=8")
    sw.add_argument("--pick", metavar="OBJECTIVE=WEIGHT,...",
                    help="best: how much each objective counts, e.g. depth=0.7,seg=0.3 (default: equally)")
    sw.add_argument("--out", help="best: where to write the run config (default: SWEEP_DIR/best.yaml)")
    b = sub.add_parser("baselines", help="train one single-task run per head: the reference Δm%% is measured "
                                         "against")
    b.add_argument("config", help="run config YAML")
    _run_options(b, "checkpoint")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiloss", description="Multi-task loss composition for Keras 3: "
                                "one YAML spec, final_loss = Σ wᵢ·lossᵢ, every term logged.")
    p.add_argument("--version", action="version", version=f"multiloss {version()}")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="show TensorFlow's start-up and runtime log lines (hidden by default)")
    noise.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("validate", help="check a loss spec, run config or incremental config; exit 0 if valid, "
                                        "1 if not")
    v.add_argument("file", metavar="FILE", help="a loss spec, a run config or an incremental config (YAML)")
    v.add_argument("--model", help="loss specs: module:function returning the Keras model, to check output "
                                   "names, class ids and shared layers")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="configs: override a field before checking (repeatable)")
    d = sub.add_parser("describe", help="print a table of the terms of a loss spec or a run config's loss")
    d.add_argument("spec")
    sub.add_parser("schema", help="print the spec's JSON Schema")
    c = sub.add_parser("check", help="run one dry batch and print each term's shapes and value")
    c.add_argument("spec")
    c.add_argument("--model", required=True, help="module:function returning the Keras model")
    c.add_argument("--data", help="module:function returning (x, y); default: random data")
    c.add_argument("--batch", type=positive_int, default=2)
    t = sub.add_parser("train", help="train from a run config (default: the packaged Siamese digits run)")
    t.add_argument("config", nargs="?", help="run config YAML; omitted: the packaged default")
    _run_options(t, "checkpoint")
    t.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, run one batch through the loss, and exit")
    e = sub.add_parser("evaluate", help="re-evaluate a saved run on its test split")
    e.add_argument("run_dir")
    pl = sub.add_parser("plot", help="redraw a run's figures from its history")
    pl.add_argument("run_dir")
    ex = sub.add_parser("export", help="write a run's model for serving, loadable without multiloss")
    ex.add_argument("run_dir")
    ex.add_argument("--format", default="tf_saved_model", choices=("tf_saved_model", "keras"),
                    help="tf_saved_model (any model; default) or keras (Functional and Sequential models)")
    ex.add_argument("--out", help="where to write; default: RUN_DIR/export/saved_model or RUN_DIR/export/model.keras")
    pr = sub.add_parser("predict", help="run a run's model on an .npz and write its named outputs")
    pr.add_argument("run_dir")
    pr.add_argument("--input", required=True, help=".npz with one array, or one per model input")
    pr.add_argument("--out", help="default: RUN_DIR/predictions.npz")
    cmp = sub.add_parser("compare", help="overlay several runs' losses and metrics: one PNG, one Markdown table")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--baselines", metavar="BASELINES_JSON",
                     help="add a row of Δm%% against these single-task values (`multiloss baselines` writes them)")
    cmp.add_argument("--out", default="compare",
                     help="output path stem (writes STEM.png and STEM.md) or a folder; default: ./compare")
    inc = sub.add_parser("incremental", help="run a class-incremental scenario from a config",
                         description="Run a class-incremental scenario from a config.")
    inc.add_argument("config", help="incremental config YAML (see configs/incremental_*.yaml)")
    _run_options(inc, "completed step")
    _sweep_parsers(sub)
    q = sub.add_parser("quickstart", help="train the three-head digits example end to end")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--epochs", type=positive_int, default=15)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` (default: the process's arguments) parsed; ``--help`` and errors exit here."""
    return build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))


__all__ = ["SPEC_ONLY_COMMANDS", "build_parser", "needs_tensorflow", "parse", "version"]
