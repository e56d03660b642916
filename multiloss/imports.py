"""Resolve ``package.module:attr`` import strings (users' losses, models, data)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def is_import_string(ref: str) -> bool:
    return isinstance(ref, str) and ":" in ref


def import_object(ref: str) -> Callable:
    """Import ``package.module:attr``; raise ``LookupError`` saying what failed."""
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
            raise LookupError(f"import string {ref!r} does not import: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LookupError(f"import string {ref!r} names a {type(obj).__name__}, not a function or class")
    return obj


def lookup(name: str, registry: dict, kind: str, hint: str = "") -> Callable:
    """A registry entry by name, or the object an import string names.

    An unknown name raises ``LookupError`` with a did-you-mean and the valid names.
    """
    import difflib

    if is_import_string(name):
        return import_object(name)
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, registry, n=2)
    maybe = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise LookupError(f"unknown {kind} {name!r}; {maybe}built-in: {', '.join(sorted(registry))}; "
                      f"or give an import string 'package.module:function'{hint}")
