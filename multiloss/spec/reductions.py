"""The names of the reductions a spec may give (the math is :mod:`multiloss.losses.reduction`).

Keras's own spellings are accepted as aliases: ``mean`` (Keras's alias of
``sum_over_batch_size``) and ``mean_with_sample_weight`` (Σ W·L / Σ W, i.e.
``weighted_mean``); a spec holding them resolves to the canonical name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator

ReductionName = Literal["sum_over_batch_size", "sum_by_nonzero_weights", "weighted_mean", "sum"]
REDUCTIONS: tuple[str, ...] = ReductionName.__args__
#: Keras's spellings -> multiloss's canonical reduction names.
REDUCTION_ALIASES: dict[str, str] = {"mean": "sum_over_batch_size",
                                     "mean_with_sample_weight": "weighted_mean"}


def canonical_reduction(name: str) -> str:
    """``mean`` -> ``sum_over_batch_size`` and so on; canonical names unchanged."""
    return REDUCTION_ALIASES.get(name, name)


def _canonical(value):
    return REDUCTION_ALIASES.get(value, value) if isinstance(value, str) else value


#: The spec's ``reduction`` field: a canonical name, or a Keras alias stored as
#: its canonical name (the JSON Schema lists the canonical names).
Reduction = Annotated[ReductionName, BeforeValidator(_canonical)]


__all__ = ["REDUCTIONS", "REDUCTION_ALIASES", "Reduction", "ReductionName", "canonical_reduction"]
