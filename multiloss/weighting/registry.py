"""The strategies by name, and the validation of ``weighting:`` and ``schedules:``."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from .cagrad import CAGrad
from .dwa import DWA
from .gradnorm import GradNorm
from .mgda import MGDA
from .pcgrad import PCGrad
from .rlw import RLW
from .static import Static
from .uncertainty import Uncertainty

STRATEGIES = {cls.name: cls for cls in (Static, Uncertainty, DWA, GradNorm, PCGrad, RLW, MGDA, CAGrad)}


def check_spec(spec, terms, names: list[str]) -> list[tuple[tuple, str]]:
    """Problems of a spec's ``weighting:`` and ``schedules:``, as ``[(path, message)]``.

    ``terms`` are the resolved terms, ``names`` every term name (resolved or not).
    """
    problems = []
    for key in spec.schedules:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            problems.append((("schedules", key), f"no term named {key!r}; {hint}schedules are keyed "
                                                 f"by term name; terms: {names}"))
    ws = spec.weighting
    if ws is None:
        return problems
    cls = STRATEGIES.get(ws.strategy)
    if cls is None:
        close = difflib.get_close_matches(ws.strategy, list(STRATEGIES), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        problems.append((("weighting", "strategy"),
                         f"unknown strategy {ws.strategy!r}; {hint}valid: {', '.join(STRATEGIES)}"))
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
                msg = f"{err['msg'].removeprefix('Value error, ')}, got {err['input']!r}"
            problems.append((path, msg))
        return problems
    problems += [(("weighting", "params") + p, m) for p, m in cls.check(params, terms)]
    if ws.vectorize and not cls.gradients:
        problems.append((("weighting", "vectorize"),
                         f"only gradnorm, pcgrad, mgda and cagrad compute per-task gradients; "
                         f"{ws.strategy!r} has nothing to vectorize"))
    if ws.shared is not None and not cls.gradients:
        problems.append((("weighting", "shared"),
                         f"strategy {ws.strategy!r} uses no per-task gradients, so it has no use for "
                         "shared parameters; remove `shared:`"))
    return problems
