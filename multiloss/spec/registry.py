"""The one registry type: losses, strategies, incremental methods, model builders, data sources
and backbones are each a :class:`Registry`.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(info, **params): ...
    >>> MODELS.get("tiny") is tiny, "tiny" in MODELS, MODELS.names()
    (True, True, ['tiny'])

A registry maps names to objects (it is a read-only :class:`~collections.abc.Mapping`, in
registration order); :meth:`Registry.get` also resolves an import string
``package.module:attr`` (under the trust model of :mod:`multiloss.spec.imports`).  Its
*providers* are modules, named by string, that fill it: they are imported the first time the
registry is read or written, so that a lower layer's registry is filled by an upper layer without
an import edge (the loss registry of :mod:`multiloss.losses` is filled by
``multiloss.incremental.losses``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from . import imports
from .validation import did_you_mean

T = TypeVar("T")
_NOTHING = object()


class UnknownNameError(LookupError):
    """A registry has no entry of that name (the message has a did-you-mean and the valid names)."""


def qualified_name(obj: object) -> str:
    """``module.qualname`` of a function or class (what a registry names a holder by), else its repr."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else repr(obj)


def _same_definition(a: object, b: object) -> bool:
    """Whether ``b`` is ``a`` defined again (a notebook cell or a module run again)."""
    return all(isinstance(getattr(o, "__qualname__", None), str) for o in (a, b)) and \
        qualified_name(a) == qualified_name(b)


class Registry(Mapping[str, T], Generic[T]):
    """Names of one kind of object: ``kind`` names it in messages (``"loss"``, ``"strategy"``).

    **The conflict policy** (one for every registry): registering the object a name already holds
    is a no-op; registering a *different* object under a taken name raises ``ValueError`` naming
    the holder (``module.qualname``) — unless the new object has the holder's module and qualified
    name (the same definition run again, in a notebook cell or a reloaded module), which then
    replaces it.  Names are non-empty strings without ``':'`` (that marks an import string).
    :meth:`unregister` frees a name.

    ``providers``: module names imported (by string) the first time the registry is read or
    written, to fill it.  ``check(obj)`` returns the problem of an object (a message) or None; it
    runs on every registration (a problem raises ``TypeError``) and on what an import string names
    (a ``LookupError``).  ``hint`` ends the message for an unknown name; ``{valid}`` in it is
    replaced by the registered names.

    Every registry takes part in safe loading: :func:`multiloss.spec.imports.registered` asks
    each one's :meth:`holds`.
    """

    def __init__(self, kind: str, *, providers: tuple[str, ...] = (),
                 check: Callable[[object], str | None] | None = None,
                 hint: str = "valid: {valid}; or an import string 'package.module:function'"):
        self.kind, self.providers, self.check, self.hint = kind, tuple(providers), check, hint
        self._entries: dict[str, T] = {}
        self._state = "new" if self.providers else "loaded"   # new -> loading -> loaded
        imports.REGISTRIES.append(self.holds)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} names)"

    __eq__ = object.__eq__      # a registry is itself, not its contents (Mapping compares contents)
    __hash__ = object.__hash__

    # --- filling ---------------------------------------------------------------------------

    def _load(self) -> None:
        """Import the providers, once (a provider that registers while loading does not recurse)."""
        if self._state != "new":
            return
        self._state = "loading"
        try:
            for module in self.providers:
                importlib.import_module(module)
        except BaseException:
            self._state = "new"     # a provider failed: the next read tries again, and says why
            raise
        self._state = "loaded"

    def register(self, name: str, obj: T = _NOTHING, *, aliases: Iterable[str] = ()):
        """Register ``obj`` under ``name`` and each of ``aliases``; returns ``obj``.

        Without ``obj``, a decorator: ``@registry.register("name")``.  Raises ``ValueError`` for a
        bad or taken name (see the class's conflict policy) and ``TypeError`` when ``check``
        finds a problem with ``obj``; nothing is registered then.
        """
        if obj is _NOTHING:
            return lambda o: self.register(name, o, aliases=aliases)
        problem = self.check(obj) if self.check is not None else None
        if problem:
            raise TypeError(problem)
        keys = [name, *aliases]
        for key in keys:
            if not isinstance(key, str) or not key or ":" in key:
                raise ValueError(f"a {self.kind} name must be a non-empty string without ':', got {key!r}")
        self._load()
        for key in keys:
            held = self._entries.get(key, obj)
            if held is not obj and held != obj and not _same_definition(held, obj):
                raise ValueError(f"{self.kind} name {key!r} is taken by {qualified_name(held)}; register it "
                                 f"under another name (or unregister {key!r} first)")
        self._entries.update(dict.fromkeys(keys, obj))
        return obj

    def unregister(self, *names: str) -> None:
        """Remove these names (those not registered are ignored)."""
        for name in names:
            self._entries.pop(name, None)

    # --- reading ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        """Every registered name (aliases included), sorted."""
        return sorted(self)

    def get(self, name: str) -> T:    # not Mapping.get: an unknown name raises, it gives no default
        """The object registered as ``name``, or the one an import string ``package.module:attr`` names.

        An unknown name raises :class:`UnknownNameError` with a did-you-mean and the valid names;
        an import string that does not import, or names an object ``check`` refuses, raises
        ``LookupError`` (:class:`~multiloss.spec.imports.UnsafeImportError` in safe mode).
        """
        if imports.is_import_string(name):
            obj = imports.import_object(name)
            problem = self.check(obj) if self.check is not None else None
            if problem:
                raise LookupError(f"{self.kind} {name!r}: {problem}")
            return obj
        if name in self:
            return self._entries[name]
        raise UnknownNameError(f"unknown {self.kind} {name!r}; {did_you_mean(name, self)}"
                               + self.hint.replace("{valid}", ", ".join(self)))

    def name_of(self, obj: object) -> str | None:
        """The name ``obj`` was first registered under (not an alias), or None."""
        self._load()
        return next((name for name, held in self._entries.items() if held is obj), None)

    def holds(self, obj: object) -> bool:
        """Whether ``obj`` is registered (so trusted when a saved model names it in safe mode).

        Providers are not imported for this: an object of an imported module that registers it is
        registered already.
        """
        return any(held is obj for held in self._entries.values())


__all__ = ["Registry", "UnknownNameError", "qualified_name"]
