"""``python -m multiloss.run.sweep_trial SWEEP_PID train RUN --set ...``: one trial's process.

It is ``multiloss train RUN --set ...`` with one thing added first: the process ends when the sweep
that started it (``SWEEP_PID``) dies, even by SIGKILL, so that no trial trains on with nobody to record
it, and its log says why.  A sweep already gone before this line ran ends it at once.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import threading
import time


def _say_why(parent: int) -> None:
    print(f"multiloss: the sweep process {parent} that started this trial is gone, so the trial stops; its "
          "folder is kept, and `multiloss sweep SWEEP.yaml --resume` records it", file=sys.stderr, flush=True)


def end_with_parent(parent: int) -> None:
    """End the process, after one line in its log saying why, when the parent dies: the kernel sends
    SIGUSR2 then (PR_SET_PDEATHSIG), and a watcher thread ends it should that signal's handler not run
    (the main thread held in a long call).  SIGTERM (the sweep pruning or stopping the trial) keeps its
    default, immediate action.  Exit now if the parent is already gone."""
    def end(kill: int) -> None:
        _say_why(parent)
        os.kill(os.getpid(), kill)

    def ended(signum, frame):
        if os.getppid() != parent:
            end(signal.SIGTERM)                     # killed by SIGTERM, as the sweep's resume expects

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        time.sleep(5.0)                              # the handler's turn first
        end(signal.SIGKILL)

    signal.signal(signal.SIGUSR2, ended)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR2)
    if os.getppid() != parent:
        _say_why(parent)
        sys.exit(143)
    threading.Thread(target=watch, name="multiloss-parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    end_with_parent(int(argv[0]))
    sys.argv = ["multiloss", *argv[1:]]
    runpy.run_module("multiloss", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
