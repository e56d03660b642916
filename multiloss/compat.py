"""Module paths of earlier releases, kept working.

multiloss 0.1 kept every module flat in ``multiloss/``; they now live in
layer folders.  Import strings users wrote (``multiloss.examples:siamese_model``
in a config) and imports in their code (``from multiloss.data import
register_data``) resolve through this finder to the module's new home: the
same module object, not a copy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: Old module path -> where the module lives now.
MOVED = {
    "multiloss.errors": "multiloss.spec.errors",
    "multiloss.validation": "multiloss.spec.validation",
    "multiloss.yamlio": "multiloss.spec.yamlio",
    "multiloss.imports": "multiloss.spec.imports",
    "multiloss.lazy": "multiloss.spec.lazy",
    "multiloss.configfile": "multiloss.spec.configfile",
    "multiloss.schedules": "multiloss.spec.schedules",
    "multiloss.reduction": "multiloss.losses.reduction",
    "multiloss.composite": "multiloss.core.composite",
    "multiloss.keras_compile": "multiloss.core.compile",
    "multiloss.guard": "multiloss.core.guard",
    "multiloss.metrics": "multiloss.core.metrics",
    "multiloss.diagnostics": "multiloss.core.diagnostics",
    "multiloss.keras_internals": "multiloss.core.keras_access",
    "multiloss.weighting.controller": "multiloss.core.weight_control",
    "multiloss.weighting.shared": "multiloss.core.shared_params",
    "multiloss.weighting.callbacks": "multiloss.core.weight_callbacks",
    "multiloss.weighting.step": "multiloss.core.gradients",
    "multiloss.core.gradient_step": "multiloss.core.gradients",
    "multiloss.config": "multiloss.run.config",
    "multiloss.data": "multiloss.run.data",
    "multiloss.models": "multiloss.run.models",
    "multiloss.examples": "multiloss.run.examples",
    "multiloss.rundir": "multiloss.run.rundir",
    "multiloss.atomic": "multiloss.run.atomic",
    "multiloss.optim": "multiloss.run.optim",
    "multiloss.console": "multiloss.run.console",
    "multiloss.epochlog": "multiloss.run.epochlog",
    "multiloss.plots": "multiloss.run.plots",
    "multiloss.compare": "multiloss.run.compare",
    "multiloss.quickstart": "multiloss.run.quickstart",
    "multiloss.runner": "multiloss.run.train",
    "multiloss.synthetic": "multiloss.run.synthetic",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """Already executed: it is the module at its new path."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds each old path of :data:`MOVED` as the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())


__all__ = ["MOVED", "MovedModules", "install"]
