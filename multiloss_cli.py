"""The ``multiloss`` console script: argument parsing and a quiet start-up.

This module sits outside the ``multiloss`` package on purpose: importing the
package loads TensorFlow (so that saved models load after ``import
multiloss``), and ``multiloss --help``, ``--version`` and every subcommand's
``--help`` should answer at once.  ``describe``, ``schema`` and a spec-only
``validate`` import the package with ``MULTILOSS_SPEC_ONLY=1``: its spec layer
only, without TensorFlow.  The commands themselves are in
:mod:`multiloss.cli.commands`.

TensorFlow writes its start-up lines (absl, oneDNN, CUDA probes) straight to
file descriptor 2 before its own log level applies; unless ``-v`` is given,
they are filtered out of standard error, and everything else passes through.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import sys
import threading

_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    r"|E\d{4} [\d:.]+\s+\d+ (cuda_\w+|cuda_platform|cuda_executor)\.cc:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)")


#: Commands that work on a spec alone: they answer without importing TensorFlow
#: (``validate`` imports it for a run config, an incremental config or ``--model``).
SPEC_ONLY_COMMANDS = ("describe", "schema", "validate")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multiloss")
    except PackageNotFoundError:
        return "unknown"


def is_noise(line: str) -> bool:
    """Whether a line on standard error is TensorFlow start-up noise."""
    return bool(_NOISE.match(line))


def filter_stderr() -> None:
    """Route file descriptor 2 through a thread that drops TensorFlow's start-up noise."""
    read_end, write_end = os.pipe()
    real = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as src, os.fdopen(real, "wb", buffering=0) as dst:
            for line in src:
                if not is_noise(line.decode("utf-8", "replace")):
                    dst.write(line)

    thread = threading.Thread(target=pump, name="multiloss-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        saved = os.dup(real)
        os.dup2(saved, 2)     # closes the pipe's last writer: the pump drains and stops
        os.close(saved)
        thread.join(timeout=5)

    atexit.register(restore)


def _run_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--resume", action="store_true", help=f"continue the run in its folder after its last {what}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run that already exists in the folder (without it, or --resume, an "
                        "existing run is never touched)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config field (repeatable), e.g. --set train.epochs=3")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiloss", description="Multi-task loss composition for Keras 3: "
                                "one YAML spec, final_loss = Σ wᵢ·lossᵢ, every term logged.")
    p.add_argument("--version", action="version", version=f"multiloss {_version()}")
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
    d = sub.add_parser("describe", help="print a table of the spec's terms")
    d.add_argument("spec")
    sub.add_parser("schema", help="print the spec's JSON Schema")
    c = sub.add_parser("check", help="run one dry batch and print each term's shapes and value")
    c.add_argument("spec")
    c.add_argument("--model", required=True, help="module:function returning the Keras model")
    c.add_argument("--data", help="module:function returning (x, y); default: random data")
    c.add_argument("--batch", type=int, default=2)
    t = sub.add_parser("train", help="train from a run config (default: the packaged Siamese digits run)")
    t.add_argument("config", nargs="?", help="run config YAML; omitted: the packaged default")
    _run_options(t, "checkpoint")
    t.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, run one batch through the loss, and exit")
    e = sub.add_parser("evaluate", help="re-evaluate a saved run on its test split")
    e.add_argument("run_dir")
    pl = sub.add_parser("plot", help="redraw a run's figures from its history")
    pl.add_argument("run_dir")
    cmp = sub.add_parser("compare", help="overlay several runs' losses and metrics: one PNG, one Markdown table")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--out", default="compare",
                     help="output path stem (writes STEM.png and STEM.md) or a folder; default: ./compare")
    inc = sub.add_parser("incremental", help="run a class-incremental scenario from a config",
                         description="Run a class-incremental scenario from a config.")
    inc.add_argument("config", help="incremental config YAML (see configs/incremental_*.yaml)")
    _run_options(inc, "completed step")
    q = sub.add_parser("quickstart", help="train the three-head digits example end to end")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--epochs", type=int, default=15)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``multiloss`` console script."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if argv is None:
            filter_stderr()
    spec_only = args.command in SPEC_ONLY_COMMANDS and not getattr(args, "model", None)
    previous = os.environ.get("MULTILOSS_SPEC_ONLY")
    if spec_only:   # the package imports its spec layer only; Keras loads if a command needs it
        os.environ["MULTILOSS_SPEC_ONLY"] = "1"
    try:
        from multiloss.cli.commands import run_command
    finally:
        if spec_only and previous is None:
            os.environ.pop("MULTILOSS_SPEC_ONLY", None)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
