"""``python -m multiloss.run.sweep_trial SWEEP_PID train RUN --set ...``: one trial's process.

It is ``multiloss train RUN --set ...`` with one thing added first: on Linux the process ends
(SIGTERM) when the sweep that started it (``SWEEP_PID``) dies, even by SIGKILL, so that no trial
trains on with nobody to record it.  A sweep already gone before this line ran ends it at once.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys


def end_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG); exit now if it already has."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(143)


def main(argv: list[str]) -> None:
    end_with_parent(int(argv[0]))
    sys.argv = ["multiloss", *argv[1:]]
    runpy.run_module("multiloss", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
