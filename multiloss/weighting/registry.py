"""The strategies by name, :func:`register_strategy`, and the validation of ``weighting:`` and ``schedules:``."""

from __future__ import annotations

import math

from pydantic import ValidationError

from ..spec.imports import import_object
from ..spec.loss_spec import SECTION_CHECKS
from ..spec.registry import Registry
from ..spec.validation import error_message, no_such, unknown_key
from .aligned_mtl import AlignedMTL
from .base import Params, Strategy
from .cagrad import CAGrad
from .config import ConFIG
from .dbmtl import DBMTL
from .dualproj import DualProj
from .dwa import DWA
from .excess_mtl import ExcessMTL
from .fairgrad import FairGrad
from .famo import FAMO
from .gls import GLS
from .graddrop import GradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl import IMTL, IMTLG, IMTLL
from .mgda import MGDA
from .moco import MoCo
from .modo import MoDo
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .sdmgrad import SDMGrad
from .static import Static
from .stch import STCH
from .uncertainty import Uncertainty
from .upgrad import UPGrad

GRADIENT_MODES = ("parameters", "representation")


def _strategy_problem(cls) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        return f"{cls!r} is not a subclass of multiloss.weighting.Strategy"
    if not isinstance(cls.Params, type) or not issubclass(cls.Params, Params):
        return f"{cls.__name__}.Params must subclass multiloss.weighting.Params"
    if cls.gradients not in (None, "shared", "layer"):
        return f"{cls.__name__}.gradients must be None, 'shared' or 'layer', got {cls.gradients!r}"
    if cls is not Strategy and cls.combine is Strategy.combine and cls.gradients == "shared" \
            and not cls.direct:
        return f"{cls.__name__} computes per-task gradients but implements neither combine nor aggregate"
    if cls.samples > 1 and not (cls.direct and "representation" not in cls.gradient_modes):
        return (f"{cls.__name__}.samples > 1 needs a row aggregator (it gets [samples, T, P] rows) with "
                "gradient_modes = ('parameters',)")
    return None


#: Strategy name -> Strategy subclass (registered ones load from saved models in safe mode).
STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", check=_strategy_problem,
    hint="valid: {valid} (or 'package.module:Class', or register your own with multiloss.register_strategy)")


def register_strategy(strategy, name: str | None = None):
    """Register a weighting strategy so that ``weighting.strategy: <name>`` finds it.

    ``strategy`` is a :class:`~multiloss.weighting.Strategy` subclass or an
    import string ``'package.module:Class'``; the name is ``name`` or the
    class's ``name``.  Usable as a decorator (``@register_strategy``).  The
    class is validated (a Strategy with a pydantic ``Params``); registering a
    different class under a taken name raises ``ValueError`` (the conflict
    policy of :class:`~multiloss.spec.registry.Registry`).  Returns the class.
    """
    if isinstance(strategy, str):
        if ":" not in strategy:
            raise ValueError(f"register_strategy needs a Strategy subclass or an import string "
                             f"'package.module:Class', got {strategy!r}")
        strategy = import_object(strategy)
    key = name or getattr(strategy, "name", None)
    STRATEGIES.register(key, strategy)
    if not strategy.name:
        strategy.name = key
    return strategy


for _cls in (Static, Uncertainty, DWA, GradNorm, PCGrad, RLW, MGDA, CAGrad, NashMTL, IMTLG, GradVac, AlignedMTL,
             UPGrad, FAMO, DBMTL, GradDrop, GLS, FairGrad, STCH, IMTLL, IMTL, ConFIG, DualProj, ExcessMTL,
             MoCo, MoDo, SDMGrad):
    register_strategy(_cls)


def resolve(name: str):
    """The strategy class for ``name`` (registered, or an import string), or ``(None, message)``."""
    try:
        return STRATEGIES.get(name), None
    except LookupError as exc:
        return None, str(exc)


def check_spec(spec, terms, names: list[str]) -> list[tuple[tuple, str]]:
    """Problems of a spec's ``weighting:`` and ``schedules:``, as ``[(path, message)]``.

    ``terms`` are the resolved terms, ``names`` every term name (resolved or not).
    """
    problems = []
    for key in spec.schedules:
        if key not in names:
            problems.append((("schedules", key), no_such("term", key, names, "schedules are keyed by term name")))
    ws = spec.weighting
    if ws is None:
        return problems
    cls, message = resolve(ws.strategy)
    if cls is None:
        problems.append((("weighting", "strategy"), message))
        return problems
    valid = list(cls.Params.model_fields)
    try:
        params = cls.Params(**ws.params)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            path = ("weighting", "params") + loc
            if err["type"] == "extra_forbidden":
                msg = (f"strategy {ws.strategy!r} has no parameter {loc[0]!r}; "
                       f"valid: {', '.join(valid) if valid else 'none (it takes no params)'}")
            else:
                msg = error_message(err, loc)
            problems.append((path, msg))
        return problems
    problems += [(("weighting", "params") + p, m) for p, m in cls.check(params, terms)]
    gradient_names = ", ".join(n for n, c in STRATEGIES.items() if c.gradients)
    if ws.vectorize and not cls.gradients:
        problems.append((("weighting", "vectorize"),
                         f"only the gradient strategies ({gradient_names}) compute per-task gradients; "
                         f"{ws.strategy!r} has nothing to vectorize"))
    mode = getattr(ws, "gradients", "parameters")
    if mode not in GRADIENT_MODES:
        problems.append((("weighting", "gradients"), unknown_key(mode, GRADIENT_MODES, "gradient mode")))
    elif mode not in cls.gradient_modes and cls.gradients == "shared":
        problems.append((("weighting", "gradients"),
                         f"strategy {ws.strategy!r} allows gradients: {' or '.join(cls.gradient_modes)} only "
                         f"(it keeps a state per shared parameter, and representation rows are new samples "
                         f"every step)"))
    elif mode == "representation":
        if cls.gradients != "shared":
            problems.append((("weighting", "gradients"),
                             f"gradients: representation is for the strategies that combine per-task gradients "
                             f"({', '.join(n for n, c in STRATEGIES.items() if c.gradients == 'shared')}); "
                             f"{ws.strategy!r} " + ("balances the gradients of its layer W" if cls.gradients
                                                    else "uses no per-task gradients")))
        if ws.vectorize:
            problems.append((("weighting", "vectorize"),
                             "gradients: representation takes T short backward passes through the heads; "
                             "there is nothing to vectorize"))
    problems += _preference_problems(ws, cls, names)
    if getattr(ws, "representation", None) is not None and mode != "representation":
        problems.append((("weighting", "representation"),
                         "a representation layer is only used with gradients: representation"))
    if ws.shared is not None and not cls.gradients:
        problems.append((("weighting", "shared"),
                         f"strategy {ws.strategy!r} uses no per-task gradients, so it has no use for "
                         "shared parameters; remove `shared:`"))
    return problems


def _preference_problems(ws, cls, names: list[str]) -> list[tuple[tuple, str]]:
    """``weighting.preference``: only for a strategy that reads one; term names; values finite and > 0."""
    pref = getattr(ws, "preference", None)
    if pref is None:
        return []
    if not cls.uses_preference:
        users = ", ".join(n for n, c in STRATEGIES.items() if c.uses_preference)
        return [(("weighting", "preference"),
                 f"strategy {ws.strategy!r} takes no preference; the strategies that do: {users}")]
    problems = []
    for key, value in pref.items():
        path = ("weighting", "preference", key)
        if key not in names:
            problems.append((path, no_such("term", key, names, "the preference is keyed by term name")))
        elif not (math.isfinite(value) and value > 0):
            problems.append((path, f"a preference must be a finite number > 0, got {value!r}"))
    return problems


SECTION_CHECKS.register("weighting", check_spec)
