"""Static weighting: λ = 1, so the effective weight is spec weight × schedule factor."""

from __future__ import annotations

from .base import LossWeighting


class Static(LossWeighting):
    """``final_loss = Σ wᵢ·Lᵢ`` with the spec's weights (and schedules, if any)."""

    name = "static"
    reference = "the spec's weights"
