"""GradDrop, gradient sign dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, NeurIPS 2020).

For every coordinate of the per-task gradients g_i (a shared parameter, or
an element of the shared representation with ``gradients: representation``),
the sign purity

    P = ½ (1 + Σ_i g_i / Σ_i |g_i|)     ∈ [0, 1]

and a uniform draw U keep the positive parts when P > U and the negative
parts otherwise: M_i = [P > U]·[g_i > 0] + [P < U]·[g_i < 0]; the update is
Σ_i (ℓ + (1 − ℓ) M_i) g_i with leak ℓ (``leak``, default 0).  The draws are a
pure function of ``(seed, step)``.  The logged λ_i is the share of g_i kept,
⟨M_i g_i, g_i⟩ / ‖g_i‖².  Per coordinate, E_U[update] = P·Σ⁺ + (1 − P)·Σ⁻ =
Σ_i g_i exactly (Σ⁺, Σ⁻ the sums of the positive and negative parts).

Where this departs from the paper: its Algorithm 1 reads P and the signs
from the batch sum ∇_i = Σ_batch sign(A) ∘ ∇_A L_i at an activation A (one P
and one U per feature, the masks broadcast over the samples), as LibMTL does
(which refuses parameter gradients).  Here P and U are per element of the
rows (TorchJD's ``GradDrop`` on the rows of a Jacobian), because a row
aggregator is given the rows only, flattened: neither the values of A (for
sign(A)) nor the batch axis reach it.  For a batch of one the two agree up
to the draw: sign(A) relabels U ↔ 1 − U where A < 0 (the same
distribution), and where A = 0 the paper keeps only ℓ·g_i.  (Under ``MirroredStrategy``
with ``gradients: representation`` each replica draws U for its own samples,
so a run matches a one-device run in distribution, not draw for draw.)
"""

from __future__ import annotations

from pydantic import Field

from ..spec.lazy import tf
from . import rng
from .base import Params, RowAggregator


class GradDropParams(Params):
    leak: float = Field(0.0, ge=0, le=1, description="ℓ: the share of every gradient always kept.")
    seed: int = Field(0, ge=0)


def graddrop_update(rows, uniform, leak: float = 0.0):
    """``(update [P], kept share λ [T])`` for gradient rows ``[T, P]`` and draws U ``[P]``."""
    total = tf.reduce_sum(rows, 0)
    purity = 0.5 * (1.0 + tf.math.divide_no_nan(total, tf.reduce_sum(tf.abs(rows), 0)))
    u = tf.cast(uniform, rows.dtype)[None, :]
    mask = (tf.cast(purity[None, :] > u, rows.dtype) * tf.cast(rows > 0, rows.dtype)
            + tf.cast(purity[None, :] < u, rows.dtype) * tf.cast(rows < 0, rows.dtype))
    kept = (leak + (1.0 - leak) * mask) * rows
    lam = tf.math.divide_no_nan(tf.reduce_sum(kept * rows, 1), tf.reduce_sum(rows * rows, 1))
    return tf.reduce_sum(kept, 0), lam


class GradDrop(RowAggregator):
    name = "graddrop"
    Params = GradDropParams
    reference = "Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, NeurIPS 2020 (arXiv:2010.06808)"

    def aggregate(self, rows, values, present, ctx):
        rows = rows * tf.cast(present, rows.dtype)[:, None]
        u = rng.uniform(tf.shape(rows)[1], self.params.seed, ctx.step)
        update, lam = graddrop_update(rows, u, self.params.leak)
        return update, tf.cast(lam, tf.float32)
