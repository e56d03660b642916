"""The ``multiloss`` console script: a quiet start-up, then :mod:`multiloss.cli`.

Importing the package loads TensorFlow (so that saved models load after
``import multiloss``), and ``multiloss --help``, ``--version`` and every
subcommand's ``--help`` should answer at once.  So the parser
(:mod:`multiloss.cli.parser`) is imported with ``MULTILOSS_SPEC_ONLY=1``: the
package's spec layer only, without TensorFlow.  ``describe``, ``schema`` and a
spec-only ``validate`` run that way; every other command imports the whole
package first (:func:`multiloss.load_all`).  The commands themselves are in
:mod:`multiloss.cli.commands`.

TensorFlow writes its start-up lines (absl, oneDNN, CUDA probes) straight to
file descriptor 2 before its own log level applies; unless ``-v`` is given,
they are filtered out of standard error, and everything else passes through.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading

_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    r"|E\d{4} [\d:.]+\s+\d+ (cuda_\w+|cuda_platform|cuda_executor)\.cc:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)")


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


@contextlib.contextmanager
def _spec_only():
    """``MULTILOSS_SPEC_ONLY=1`` while the package is first imported: its spec layer, no TensorFlow."""
    previous = os.environ.get("MULTILOSS_SPEC_ONLY")
    os.environ["MULTILOSS_SPEC_ONLY"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MULTILOSS_SPEC_ONLY", None)
        else:
            os.environ["MULTILOSS_SPEC_ONLY"] = previous


def main(argv: list[str] | None = None) -> int:
    """The ``multiloss`` console script."""
    with _spec_only():
        from multiloss.cli.parser import needs_tensorflow, parse

    args = parse(argv)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if argv is None:
            filter_stderr()
    if needs_tensorflow(args):   # everything a plain `import multiloss` registers (saved models load)
        import multiloss

        multiloss.load_all()
    from multiloss.cli.commands import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
