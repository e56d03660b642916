"""The run folder: one object that owns a run's state, checkpoints, history and artifacts.

Used by every run kind (``multiloss train``, ``multiloss incremental``).

* A folder that already holds a run (a checkpoint, a history or results) is
  continued only with ``resume``, or replaced only with ``overwrite``;
  otherwise opening it raises :class:`RunError` naming both options.  Users'
  work is never replaced by accident; a run that failed before its first
  checkpoint left none, and its rerun goes ahead.
* One process at a time: ``open()`` takes an exclusive lock on the folder's
  ``run.lock`` (a POSIX record lock: a process's own later opens pass, another
  process is refused), held until :meth:`RunDir.release` (``with run:``) or the
  process ends, even by SIGKILL.  A second run, ``--resume`` or ``--overwrite``
  of a folder in use is refused before it touches anything; ``--overwrite``
  keeps ``run.lock``, and it is no work to lose.
* Every file is written atomically and fsynced (see :mod:`multiloss.run.atomic`).
* A checkpoint is a set of files named ``<kind>-<index>...`` followed by
  ``checkpoints/state.json`` (written last, so a kill at any moment leaves a
  consistent state).  Old checkpoints are pruned by their index number,
  never by file name, and the one ``state.json`` names is never deleted.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..spec.errors import RunError
from . import atomic

STATE = "state.json"
#: Every run folder holds its config: a subfolder with one is a run of its own (a sweep's trial).
CONFIG = "config.yaml"
#: The file whose lock says a process is running in the folder (:meth:`RunDir.lock`).
LOCK = "run.lock"
#: What a run writes before its work: its config and the TensorBoard events of a first epoch.  A folder with
#: nothing else (a run that failed before its first checkpoint) has nothing to lose: a rerun replaces it.
NOT_WORK = (CONFIG, "tensorboard")
_INDEX = re.compile(r"^(?P<kind>[a-z]+)-(?P<index>\d+)")
T = TypeVar("T")
#: What to do about a finished run's damaged ``model.keras`` (:meth:`RunDir.read_archive`).
DAMAGED_MODEL = "put back an intact copy, or train the run again (`--overwrite`)"


def compact_floats(value: Any) -> Any:
    """Floats that are float32 values written with the fewest digits that give that float32 back.

    Lossless at float32 precision (what Keras logs): ``0.8635097742080688`` is
    written ``0.8635098``.  Other floats (float64 results) are left as they are.
    """
    if isinstance(value, float):
        single = np.float32(value)
        return float(str(single)) if np.isfinite(single) and float(single) == value else value
    if isinstance(value, dict):
        return {k: compact_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact_floats(v) for v in value]
    return value


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) as None: JSON has no NaN, and ``jq``,
    JavaScript or a strict parser refuse the bare ``NaN`` Python's ``json`` writes by default."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def archive_problem(path: Path) -> str | None:
    """Why ``path`` is no readable zip archive (``.keras``, ``.npz``), or None."""
    if not path.is_file():
        return "is missing"
    if not zipfile.is_zipfile(path):
        return "is not a complete zip archive (truncated or damaged)"
    return None


def history_row(row: dict) -> dict:
    """An epoch row for the history files: compact floats, weights to six significant digits."""
    from .console import round_weight

    return {k: round_weight(v) if k.endswith("_weight") and isinstance(v, float) else compact_floats(v)
            for k, v in row.items()}


class RunDir:
    """``output_dir/name`` of one run.

    ``open()`` decides, once, whether the run starts fresh, resumes or
    replaces an old run, and locks the folder until :meth:`release` (``with run:``);
    ``writer=False`` (non-chief workers) reads state but writes nothing and takes no lock.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                 writer: bool = True, hint: str = "multiloss train CONFIG", not_work: tuple[str, ...] = NOT_WORK,
                 exclusive: bool = True):
        if resume and overwrite:
            raise RunError("--resume and --overwrite exclude each other: resume continues the run "
                           "in the folder, overwrite replaces it")
        self.path = Path(path)
        self.resume, self.overwrite, self.writer, self.hint = resume, overwrite, writer, hint
        self.created = False    # by open(): whether the folder was not there
        #: Top-level names that are no work to lose (a failed start's config): a rerun is not refused for them.
        self.not_work = not_work
        self.checkpoints = self.path / "checkpoints"
        #: Whether open() locks the folder (a sweep's is shared by the workers that join it: it has none).
        self.exclusive = exclusive
        self._lock: int | None = None       # run.lock's descriptor while this process holds its lock

    # --- opening -----------------------------------------------------------------

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def lock(self, shared: bool = False) -> None:
        """Hold the folder's lock, or raise RunError: another process is running in it.  ``shared``: the
        processes that share a folder (a sweep's workers) hold it together, and only against one that
        replaces it (``--overwrite`` holds it alone).  A folder that cannot take the lock file (read-only)
        is left to :meth:`check_writable` to report."""
        if self._lock is not None:
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if shared:                  # only a process that replaces the folder holds it alone
                raise RunError(f"{self.path} is being replaced by another multiloss process (--overwrite); "
                               "nothing in it was changed. Join it with --resume once it has begun its "
                               "trials (a few seconds)") from None
            raise RunError(f"{self.path} is in use by another multiloss process (a run, --resume or --overwrite "
                           "of it that has not ended); nothing in it was changed. Wait for that process to end, "
                           "or give this run another `name` (--set name=...)") from None
        self._lock = fd

    def share(self) -> None:
        """Turn this process's lock into a shared one (after ``--overwrite`` replaced a shared folder)."""
        if self._lock is not None:
            fcntl.lockf(self._lock, fcntl.LOCK_SH)

    def release(self) -> None:
        """Let go of the folder's lock (the process's end does too)."""
        if self._lock is not None:
            fd, self._lock = self._lock, None
            os.close(fd)            # closing it releases the process's lock

    def holds_run(self) -> bool:
        """Whether the folder holds a run's work: any file but those of ``not_work`` and temporaries."""
        if not self.path.is_dir():
            return False
        return any(f.is_file() and f.relative_to(self.path).parts[0] not in (*self.not_work, LOCK)
                   and not f.name.startswith(atomic.TMP_PREFIX) for f in self.path.rglob("*"))

    def open(self) -> dict | None:
        """Check the folder may be used; create and lock it; return the state to resume from (or None)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder; choose another `name` or `output_dir`")
        self.created = not self.path.exists()
        if self.writer:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunError(f"cannot create the run folder {self.path}: {exc.strerror}; choose a writable "
                               "`output_dir`") from None
            # Before reading what the folder holds: no other process changes it now.  A shared folder's
            # processes hold the lock together; one that replaces it holds it alone.
            self.lock(shared=not (self.exclusive or self.overwrite))
        existing = self.holds_run()
        if existing and not (self.resume or self.overwrite):
            self.release()
            raise RunError(
                f"{self.path} already holds a run. Continue it with `{self.hint} --resume`, replace it "
                f"with `{self.hint} --overwrite`, or give this run another `name` (--set name=...)")
        if not self.writer:
            return self.read_state() if self.resume else None
        self.check_writable()           # before --overwrite removes anything: a read-only run stays whole
        if existing and self.overwrite:
            self._clear()
        elif not existing and (self.path / "tensorboard").is_dir():   # a failed start's (config.yaml: replaced)
            shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
        # A nested run folder (a sweep's trial: its own config.yaml) cleans its own temporaries.
        atomic.remove_stale_temporaries(self.path, owned_elsewhere=lambda folder: (folder / CONFIG).exists())
        return self.read_state() if self.resume else None

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child.name == LOCK:          # this process holds it: a new file would be a lock of its own
                continue
            try:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            except OSError as exc:
                raise RunError(f"--overwrite cannot remove {child}: {exc.strerror}") from None

    def check_writable(self) -> None:
        """Raise RunError now if the folder cannot take a file (read-only, no space)."""
        probe = self.path / f"{atomic.TMP_PREFIX}probe.{os.getpid()}.{secrets.token_hex(4)}"   # one per process
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            kind = "is full" if exc.errno == errno.ENOSPC else "is not writable"
            raise RunError(f"the run folder {self.path} {kind} ({exc.strerror}); nothing in it was "
                           "changed. Free space or choose a writable `output_dir`.") from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    # --- plain artifacts ---------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        if self.writer:
            atomic.write_text(self.path / name, text)

    def write_json(self, name: str, data: Any) -> None:
        """``data`` as strict JSON: compact float32 values; a NaN or infinity is written null."""
        self.write_text(name, json.dumps(strict_json(compact_floats(data)), indent=1, allow_nan=False) + "\n")

    def write_with(self, name: str, writer: Callable[[Path], object]) -> None:
        if self.writer:
            atomic.write_with(self.path / name, writer)

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_history(self, history: list[dict]) -> None:
        """``history.csv`` and ``history.json``: one row per epoch, every logged key."""
        rows = [history_row(row) for row in history]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        self.write_text("history.csv", buf.getvalue())
        self.write_json("history.json", rows)

    # --- checkpoints -------------------------------------------------------------

    def read_state(self) -> dict | None:
        """The last checkpoint's state, or None (no checkpoint).  A state whose files are gone (deleted
        or moved by hand: a run writes them before the state) is a RunError, not a fresh start that
        would replace the run's results."""
        path = self.checkpoints / STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read {path}: {exc}; the checkpoint state is damaged") from None
        missing = [f for f in state.get("files", []) if not (self.checkpoints / f).is_file()]
        if missing:
            raise RunError(f"{path} names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           f"not in {self.checkpoints}: put {'it' if len(missing) == 1 else 'them'} back to "
                           f"resume, or start afresh with `{self.hint} --overwrite`")
        for f in state.get("files", []):
            problem = archive_problem(self.checkpoints / f) if f.endswith((".keras", ".npz")) else None
            if problem:
                raise RunError(f"{self.checkpoints / f} {problem}: {self.resume_fix}")
        return state

    def read_archive(self, path: Path, read: Callable[[Path], T], fix: str | None = None) -> T:
        """``read(path)`` for a zip archive the run wrote (``.keras``, ``.npz``).  A missing, truncated
        or damaged one is a RunError naming it and ``fix`` (by default: put it back or start afresh),
        not Keras's "File not found" for a file that is there."""
        problem = archive_problem(path)
        if problem is None:
            try:
                return read(path)
            except (zipfile.BadZipFile, EOFError) as exc:
                problem = f"is damaged ({exc})"
        raise RunError(f"{path} {problem}: {fix or self.resume_fix}")

    def model_fix(self) -> str:
        """What to do about a ``model.keras`` that is gone or damaged: finish the run where it stopped
        before writing it (a NaN, a kill) and holds a checkpoint, else put it back or train again."""
        if not self.file("model.keras").exists() and self.read_state() is not None:
            return (f"the run stopped before writing it and holds a checkpoint: finish it with "
                    f"`{self.hint} --resume` (after fixing what stopped it), which writes model.keras")
        return DAMAGED_MODEL

    @property
    def resume_fix(self) -> str:
        """What to do about a checkpoint that is gone or damaged."""
        return f"put back an intact copy to resume, or start afresh with `{self.hint} --overwrite`"

    def save_checkpoint(self, index: int, files: dict[str, Callable[[Path], object]], state: dict,
                        keep: int = 1) -> None:
        """Write ``files`` (name -> writer), then ``state.json`` naming them; prune old checkpoints.

        File names must start with ``<kind>-<index>`` (e.g. ``epoch-0003.keras``).
        """
        if not self.writer:
            return
        for name, write in files.items():
            if not _INDEX.match(name):
                raise ValueError(f"checkpoint file {name!r} must be named <kind>-<index>...")
            atomic.write_with(self.checkpoints / name, write)
        self.write_text(f"checkpoints/{STATE}", json.dumps(
            {**compact_floats(state), "index": index, "files": list(files)}, indent=1))
        self.prune(keep, current=index, protect=set(files))

    def prune(self, keep: int, current: int, protect: set[str]) -> None:
        """Keep the files of the ``keep`` newest indices up to ``current`` (by number); delete the rest.

        Indices above ``current`` are leftovers of a run killed before its state was written.
        """
        by_index: dict[int, list[Path]] = {}
        for p in self.checkpoints.iterdir():
            m = _INDEX.match(p.name)
            if m and p.is_file():
                by_index.setdefault(int(m["index"]), []).append(p)
        kept = sorted(i for i in by_index if i <= current)[-keep:]
        for index in by_index:
            if index in kept:
                continue
            for p in by_index[index]:
                if p.name not in protect:
                    with contextlib.suppress(OSError):
                        p.unlink()


__all__ = ["RunDir", "compact_floats", "strict_json", "history_row", "STATE", "DAMAGED_MODEL"]
