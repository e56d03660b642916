"""Atomic, durable file writes: write beside the target, fsync, then rename over it.

A crash (even SIGKILL) leaves the old file or the new one, never a half-written
one.  Files get the permissions the umask gives (like ``open(path, "w")``).
A write that fails (read-only folder, full disk) raises :class:`RunError`
naming the file, and the previous version stays in place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..spec.errors import RunError
from ..spec.lazy import tf

TMP_PREFIX = ".tmp-"


def remove_stale_temporaries(directory: str | os.PathLike,
                             owned_elsewhere: Callable[[Path], bool] = lambda folder: False) -> list[Path]:
    """Delete temporaries a killed process left behind under ``directory``.

    Subfolders for which ``owned_elsewhere(folder)`` is true are not entered: their temporaries
    may be another live process's (a sweep's trial writing its checkpoint), and are theirs to clean.
    """
    stale = []
    for root, folders, files in os.walk(directory):
        folders[:] = [f for f in folders if not owned_elsewhere(Path(root) / f)]
        stale += [Path(root) / f for f in files if f.startswith(TMP_PREFIX)]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:   # some file systems do not open folders; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def write_error(path: Path, exc: Exception) -> RunError:
    """An OSError (or TensorFlow's error for a file it writes, a SavedModel's) writing ``path``."""
    reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
    return RunError(f"cannot write {path}: {reason}; the previous version of the file (if any) is intact. "
                    "Free space or make the folder writable, or write to one that can take it (a run's `output_dir`, "
                    "or `--out` for the commands that have it).")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    The temporary name keeps the suffix (Keras insists on ``.keras``).
    """
    path = Path(path)
    tmp = path.parent / f"{TMP_PREFIX}{path.stem}.{secrets.token_hex(4)}{path.suffix}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0o666 & ~umask, as for any file the user creates.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    except tf.errors.OpError as exc:       # TensorFlow writing a SavedModel: PermissionDenied, ResourceExhausted
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_with(path: str | os.PathLike, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_dir(path: str | os.PathLike, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_dir)`` (a folder not yet there) and put the folder at ``path``; a folder already at
    ``path`` is replaced only once the new one is complete."""
    path = Path(path)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
    old = path.parent / f"{TMP_PREFIX}{path.name}.old.{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_path(f)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    except tf.errors.OpError as exc:       # TensorFlow writing a SavedModel: PermissionDenied, ResourceExhausted
        raise write_error(path, exc) from None
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)

