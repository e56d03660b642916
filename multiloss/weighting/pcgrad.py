"""PCGrad, projecting conflicting gradients (Yu et al., NeurIPS 2020).

For each task i, g_i^PC starts as g_i; for every other task j, in a random
order, if g_i^PC · g_j < 0 then g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j.
The update of the shared parameters is Σ_i g_i^PC (Algorithm 1).  With
``scope: all`` the whole gradient (every trainable variable) is projected, as
in the paper; the default ``shared`` projects the shared parameters' part
and gives each head its own gradient, as LibMTL does.

Every g_i^PC is a linear combination Σ_k C_ik g_k of the original
gradients, and every dot product it needs is a row of C times the Gram
matrix M = G Gᵀ, so the projections run on T×T numbers; the update is
Σ_k λ_k g_k with λ_k = Σ_i C_ik — the strategy weights logged as
``<term>_weight`` (all ones when no pair conflicts).  The gradients are
those of the scaled losses s_i·L_i (s = static weight × schedule); the
task-specific parameters get their plain gradient s_i ∇L_i.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..spec.lazy import tf
from . import rng
from .base import GramWeighting, Params


class PCGradParams(Params):
    seed: int = Field(0, ge=0, description="Seed of the random projection order (stateless in the step).")
    scope: Literal["shared", "all"] = Field(
        "shared", description="Project the gradients of the shared parameters (LibMTL), or of all parameters "
                              "(the paper's Algorithm 1: task-specific ones take part in the dot products and "
                              "get λ_i s_i ∇L_i).")


def pcgrad_coefficients(gram, order):
    """C ``[T, T]``: row i holds the coefficients of g_i^PC on the original gradients.

    ``order`` ``[T, T-1]`` (ints): for task i, the other tasks in visiting order.
    """
    gram = tf.convert_to_tensor(gram)
    n = gram.shape[0]
    coef = tf.eye(n, dtype=gram.dtype)
    sq = tf.linalg.diag_part(gram)
    for k in range(n - 1):
        j = order[:, k]
        col = tf.transpose(tf.gather(gram, j, axis=1))      # row i: M[:, j_i]
        dots = tf.reduce_sum(coef * col, axis=1)            # g_i^PC · g_{j_i}
        step = tf.math.divide_no_nan(tf.minimum(dots, 0.0), tf.gather(sq, j))
        coef = coef - step[:, None] * tf.one_hot(j, n, dtype=gram.dtype)
    return coef


def random_order(num: int, seed: int, step):
    """For each task, a random permutation of the other tasks (stateless in ``(seed, step)``)."""
    keys = tf.reshape(rng.uniform(num * num, seed, step), [num, num])
    keys = keys + 2.0 * tf.eye(num, dtype=keys.dtype)   # a task sorts after the others
    return tf.argsort(keys, axis=1)[:, : num - 1]


class PCGrad(GramWeighting):
    name = "pcgrad"
    Params = PCGradParams
    reference = "Yu, Kumar, Gupta, Levine, Hausman & Finn, NeurIPS 2020 (arXiv:2001.06782)"

    def combine(self, gram, values, present, ctx):
        gram = tf.cast(gram, tf.float64)
        order = random_order(self.num_terms, self.params.seed, ctx.step)
        return tf.cast(tf.reduce_sum(pcgrad_coefficients(gram, order), axis=0), tf.float32)
