"""Aligned-MTL, aligning the task gradients' principal components (Senushkin et al., CVPR 2023).

With the eigendecomposition M = G Gᵀ = V Λ Vᵀ (eigenvalues above the rank
tolerance max(Λ)·T·ε), σ_min = √λ_min and

    B = σ_min · V Λ^(−1/2) Vᵀ,

the aligned gradients B G = σ_min U_r V_rᵀ (G = U_r Σ V_rᵀ, the thin SVD)
are orthogonal with equal norms σ_min: the linear system of the tasks has
condition number 1.  The update is their sum, 1ᵀ B G, so λ = B 1 (the
authors' code and LibMTL).
"""

from __future__ import annotations

import numpy as np

from ..spec.lazy import tf
from .base import GramWeighting, Params


def aligned_coefficients(gram, present):
    """λ = B·1 of Aligned-MTL (float64)."""
    m = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    m = 0.5 * (m + tf.transpose(m)) * p[:, None] * p[None, :]
    n = m.shape[0]
    lam, vec = tf.linalg.eigh(m)
    tol = tf.reduce_max(lam) * n * np.finfo(np.float64).eps
    keep = lam > tf.maximum(tol, 0.0)
    safe = tf.where(keep, lam, tf.ones_like(lam))
    sigma_min = tf.sqrt(tf.reduce_min(tf.where(keep, lam, tf.fill(tf.shape(lam), tf.constant(np.inf, tf.float64)))))
    sigma_min = tf.where(tf.reduce_any(keep), sigma_min, tf.zeros_like(sigma_min))
    inv = tf.where(keep, tf.math.rsqrt(safe), tf.zeros_like(lam))
    b = sigma_min * tf.matmul(vec * inv[None, :], vec, transpose_b=True)
    return tf.linalg.matvec(b, p)


class AlignedMTL(GramWeighting):
    name = "aligned_mtl"
    Params = Params
    reference = "Senushkin, Patakin, Kuznetsov & Konushin, CVPR 2023 (arXiv:2305.19000)"

    def build(self):
        self.keep_current(1.0, "multiloss_aligned_weights")

    def combine(self, gram, values, present, ctx):
        return tf.cast(aligned_coefficients(gram, present), tf.float32)
