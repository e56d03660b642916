"""Weight schedules: a factor per term that changes with the training step.

A schedule multiplies a term's static weight from the spec::

    schedules:
      bin_out: {kind: linear, start: 0.0, end: 0.5, steps: 1000, warmup: 100}

The factor holds ``start`` for the first ``warmup`` steps, moves from
``start`` to ``end`` over the next ``steps`` steps, then holds ``end``.
With ``u = clip((step - warmup) / steps, 0, 1)``:

===============  ==========================================================
``kind``         factor
===============  ==========================================================
``linear``       start + (end - start) · u
``cosine``       end + (start - end) · (1 + cos(π·u)) / 2
``exponential``  start · (end / start) ** u   (start, end > 0)
``step``         start + (end - start) · floor(u · stages) / stages
===============  ==========================================================

``step`` with the default ``stages: 1`` jumps from ``start`` to ``end`` at
step ``warmup + steps``.  The step is the optimizer's ``iterations`` (the
number of updates applied so far), read inside the compiled train step, so a
schedule costs a few scalar ops per step and never retraces.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .lazy import ops
from .validation import Integer

ScheduleKind = Literal["linear", "cosine", "step", "exponential"]
KINDS: tuple[str, ...] = ScheduleKind.__args__


class ScheduleSpec(BaseModel):
    """One term's schedule: ``{kind, start, end, steps, warmup, stages}``."""

    model_config = ConfigDict(extra="forbid")

    kind: ScheduleKind = Field(description="linear | cosine | step | exponential")
    start: float = Field(0.0, ge=0, description="Factor before and at the start of the ramp.")
    end: float = Field(1.0, ge=0, description="Factor at and after the end of the ramp.")
    steps: Integer = Field(gt=0, description="Length of the ramp in training steps.")
    warmup: Integer = Field(0, ge=0, description="Steps during which the factor holds `start`.")
    stages: Integer = Field(1, gt=0, description="`step` kind only: number of equal jumps.")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "exponential" and (self.start <= 0 or self.end <= 0):
            raise ValueError("an exponential schedule needs start > 0 and end > 0 "
                             f"(it interpolates geometrically), got start={self.start}, end={self.end}")
        if self.stages != 1 and self.kind != "step":
            raise ValueError(f"`stages` applies to kind 'step' only, not {self.kind!r}")
        return self


def factor(spec: ScheduleSpec, step):
    """The factor at ``step`` (a scalar tensor or number), as a float32 scalar tensor."""
    step = ops.cast(step, "float32")
    u = ops.clip((step - float(spec.warmup)) / float(spec.steps), 0.0, 1.0)
    start, end = float(spec.start), float(spec.end)
    if spec.kind == "linear":
        return start + (end - start) * u
    if spec.kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * u))
    if spec.kind == "exponential":
        return start * ops.exp(u * math.log(end / start))
    return start + (end - start) * ops.floor(u * spec.stages) / spec.stages


def factors(specs: dict[int, ScheduleSpec], num_terms: int, step):
    """A ``[num_terms]`` vector: the scheduled factor of each term (1 without a schedule)."""
    parts = []
    for i in range(num_terms):
        parts.append(factor(specs[i], step) if i in specs else ops.ones((), "float32"))
    return ops.stack(parts)


__all__ = ["KINDS", "ScheduleSpec", "factor", "factors"]
