"""TensorFlow and Keras, imported on first use.

The spec layer (loading, validating and describing a spec or config) runs
without TensorFlow, so that ``multiloss describe``, ``schema`` and a spec-only
``validate`` answer at once.  Modules on that path bind ``tf``, ``keras`` and
``ops`` from here: the real module is imported the first time an attribute is
read (by then a loss or strategy is actually being traced), and its attributes
are copied onto the proxy so that later reads are plain look-ups.

tests/test_lazy_imports.py loads and validates every packaged spec in a fresh
process and asserts that TensorFlow was never imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import types


class LazyModule(types.ModuleType):
    """A stand-in for a module that imports it when an attribute is first read."""

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(vars(module))
        return getattr(module, attr)


def spec_only() -> bool:
    """Whether only the spec layer is imported (``MULTILOSS_SPEC_ONLY=1``, set by the console script)."""
    return os.environ.get("MULTILOSS_SPEC_ONLY") == "1"


def lazy_attributes(package: str, names: dict[str, str], modules: dict[str, str] | None = None):
    """A module-level ``__getattr__`` for ``package``: each of ``names`` is imported on first use
    from its module (relative to ``package``, as ``importlib.import_module`` reads it:
    ``".core.compile"``), and each of
    ``modules`` is that submodule itself.  Unless :func:`spec_only`, call the result's
    ``load_all()`` at the end of the package's ``__init__``."""
    modules = dict(modules or {})

    def __getattr__(name: str):
        if name in modules:
            value = importlib.import_module(modules[name], package)
        elif name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def load_all() -> None:
        for name in [*names, *modules]:
            __getattr__(name)

    __getattr__.load_all = load_all
    return __getattr__


tf = LazyModule("tensorflow")
keras = LazyModule("keras")
ops = LazyModule("keras.ops")

__all__ = ["LazyModule", "keras", "lazy_attributes", "ops", "spec_only", "tf"]
