"""Resolve ``package.module:attr`` import strings (users' losses, models, data).

The trust model: configs and specs that *you* load may name your own code by
import string, and it is imported and run.  A saved model file does not get
that power: while a ``.keras`` file is loaded with ``safe_mode=True`` (Keras's
default) an import string resolves only when it names an object registered
with multiloss or Keras, or one this process has already trusted (named in a
config or spec it loaded, or passed to :func:`allow_import`).

The ``multiloss`` command resolves import strings from the current folder first, as ``python -m``
would (:func:`importable_from`, used once, around every command), so ``folders:load`` finds
``./folders.py`` without ``PYTHONPATH=.``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
from collections.abc import Callable, Iterator

from .validation import did_you_mean

_TRUSTED: set[str] = set()  # registry: import strings this process has trusted
_RESTRICTED = contextvars.ContextVar("multiloss_restricted_imports", default=False)
#: Callables that say whether an object is registered somewhere: each
#: :class:`~multiloss.spec.registry.Registry` adds its ``holds`` when it is created.
REGISTRIES: list[Callable[[object], bool]] = []  # registry of registries


class UnsafeImportError(LookupError):
    """A saved model names code by import string, and safe mode refuses to import it."""


def allow_import(*refs: str) -> None:
    """Trust these import strings when loading saved models with ``safe_mode=True``."""
    _TRUSTED.update(refs)


@contextlib.contextmanager
def restricted(active: bool = True) -> Iterator[None]:
    """Within this block import strings resolve only to registered or trusted objects."""
    token = _RESTRICTED.set(bool(active))
    try:
        yield
    finally:
        _RESTRICTED.reset(token)


@contextlib.contextmanager
def importable_from(folder: str | os.PathLike) -> Iterator[None]:
    """Within this block modules in ``folder`` import first, as ``python -m`` puts the current folder
    first on ``sys.path``; the folder leaves ``sys.path`` after the block if it was not there before."""
    folder = os.path.abspath(folder)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()    # files written since a finder last looked there
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def registered(obj: object) -> bool:
    """Whether a multiloss registry holds ``obj`` (the membership test of safe loading)."""
    return any(holds(obj) for holds in REGISTRIES)


def _registered(ref: str) -> bool:
    """Whether ``ref`` names an already imported object that multiloss or Keras has registered."""
    import keras

    module_name, _, attr = ref.partition(":")
    obj = sys.modules.get(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if obj is None:
        return False
    if registered(obj):
        return True
    name = keras.saving.get_registered_name(obj)
    return name != getattr(obj, "__name__", None) and keras.saving.get_registered_object(name) is obj


def _refuse(ref: str) -> UnsafeImportError:
    return UnsafeImportError(
        f"import string {ref!r} in a saved model was not imported: with safe_mode=True a model file may "
        "only name registered objects. If you trust the file, either import and register the function "
        f"first (ml.register_loss(...), or multiloss.allow_import({ref!r})), or load it with "
        "keras.saving.load_model(path, safe_mode=False)")


def is_import_string(ref: str) -> bool:
    return isinstance(ref, str) and ":" in ref


def import_object(ref: str) -> Callable:
    """Import ``package.module:attr``; raise ``LookupError`` saying what failed.

    Inside :func:`restricted` (loading a saved model in safe mode) only
    registered or trusted import strings resolve; others raise
    :class:`UnsafeImportError` without importing anything.
    """
    if _RESTRICTED.get() and ref not in _TRUSTED and not _registered(ref):
        raise _refuse(ref)
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised inside the module
        raise LookupError(
            f"import string {ref!r} does not import: module {module_name!r} "
            f"raised {type(exc).__name__}: {exc}"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            cased = [n for n in names if n.lower() == part.lower()]       # `ReplayKd` for `ReplayKD`
            close = f"did you mean {cased[0]!r}? " if cased else did_you_mean(part, names)
            raise LookupError(f"import string {ref!r} does not import: {module_name!r} has no attribute {attr!r}"
                              + (f"; {close.strip()}" if close else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise LookupError(f"import string {ref!r} names a {type(obj).__name__}, not a function or class")
    if not _RESTRICTED.get():
        _TRUSTED.add(ref)   # named by the user's own config, spec or code
    return obj
