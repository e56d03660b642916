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


def _say_why(parent: int) -> None:
    print(f"multiloss: the sweep process {parent} that started this trial is gone, so the trial stops; its "
          "folder is kept, and `multiloss sweep SWEEP.yaml --resume` records it", file=sys.stderr, flush=True)


def end_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG), which ends the process
    after one line in its log saying why; exit now if the parent is already gone."""
    def ended(signum, frame):
        if os.getppid() != parent:                  # not a SIGTERM of the user's own
            _say_why(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)        # killed by SIGTERM, as before

    signal.signal(signal.SIGTERM, ended)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent:
        _say_why(parent)
        sys.exit(143)


def main(argv: list[str]) -> None:
    end_with_parent(int(argv[0]))
    sys.argv = ["multiloss", *argv[1:]]
    runpy.run_module("multiloss", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
