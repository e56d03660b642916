"""IMTL-G, impartial multi-task learning, gradient part (Liu et al., ICLR 2021).

With u_i = g_i/‖g_i‖, D = [g_1 − g_2, …, g_1 − g_T]ᵀ and
U = [u_1 − u_2, …, u_1 − u_T]ᵀ, the weights

    α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,     α_1 = 1 − Σ_{i≥2} α_i

make the update g = Σ α_i g_i have equal projections on every task's unit
gradient: ⟨g, u_i⟩ = ⟨g, u_j⟩ (Theorem in §3.1).  Every entry of g_1 Uᵀ and
D Uᵀ is a Gram-matrix entry over a norm, so it runs on T×T numbers; the
first present task plays the part of task 1.  (A pseudo-inverse covers
degenerate gradient sets.)
"""

from __future__ import annotations

from ..spec.lazy import tf
from .base import GramWeighting, Params


def imtl_g_coefficients(gram, present):
    """α of IMTL-G (float64, zero for absent tasks)."""
    m = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    n = m.shape[0]
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(m), 0.0))
    inv = tf.math.divide_no_nan(tf.ones_like(norms), norms)
    anchor = tf.argmax(p)                                   # the first present task
    ea = tf.one_hot(anchor, n, dtype=tf.float64)
    rest = p * (1.0 - ea)
    ma = tf.linalg.matvec(m, ea)                            # M[:, a]
    maa = tf.tensordot(ea, ma, 1)
    inv_a = tf.tensordot(ea, inv, 1)
    # g_a·(u_a − u_j) and (g_a − g_i)·(u_a − u_j)
    rhs = maa * inv_a - ma * inv
    du = (maa * inv_a - ma[None, :] * inv[None, :] - ma[:, None] * inv_a + m * inv[None, :])
    keep = rest[:, None] * rest[None, :]
    du = du * keep + tf.linalg.diag(1.0 - rest)
    # α_restᵀ (D Uᵀ) = rhsᵀ  ⇔  (D Uᵀ)ᵀ α_rest = rhs
    alpha = tf.linalg.matvec(tf.linalg.pinv(tf.transpose(du)), rhs * rest) * rest
    return alpha + ea * (1.0 - tf.reduce_sum(alpha)) * tf.reduce_max(p)


class IMTLG(GramWeighting):
    name = "imtl_g"
    Params = Params
    reference = "Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, ICLR 2021 (openreview IMrnTwcD6jL)"

    def build(self):
        self.keep_current(1.0 / self.num_terms, "multiloss_imtl_weights")

    def combine(self, gram, values, present, ctx):
        return tf.cast(imtl_g_coefficients(gram, present), tf.float32)
