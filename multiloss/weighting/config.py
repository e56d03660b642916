"""ConFIG, conflict-free inverse gradients (Liu, Chu & Thuerey, ICLR 2025).

With the unit gradients u_i = g_i/‖g_i‖ and a weight vector w (the paper's
1_m; ``weighting.preference`` as TorchJD's ``pref_vector``), the direction

    g_c = [u_1, …, u_T]^{−T} w       (the least-norm solution of u_iᵀ g_c = w_i, a pseudo-inverse)

has the same positive projection on every unit gradient (w = 1), and the update
is (the paper's Eq. 2)

    g_ConFIG = (Σ_i g_iᵀ ĝ_c) ĝ_c,     ĝ_c = g_c/‖g_c‖.

On the Gram matrix: g_c = Σ_i c_i u_i with c = (D M D)⁺ w, D = diag(1/‖g_i‖), so
g_c = Σ_i β_i g_i with β = D c, ‖g_c‖² = βᵀMβ and Σ_i g_iᵀ g_c = 1ᵀMβ; hence

    λ = (1ᵀMβ / βᵀMβ) · β.

A zero gradient has u_i = 0 (TorchJD's ``nan_to_num``); absent tasks are left
out.  The pseudo-inverse is of the T×T unit Gram matrix (TorchJD's, of the T×P
unit rows: the same for gradients of full rank; its cut-off for rank-deficient
sets differs).  The scale of the preference does not matter, only its direction.
"""

from __future__ import annotations

from ..spec.lazy import tf
from .base import Params, PreferenceGramWeighting


def config_coefficients(gram, present, preference):
    """λ of ConFIG (float64; 0 for absent tasks)."""
    m = tf.cast(gram, tf.float64)
    m = 0.5 * (m + tf.transpose(m))
    p = tf.cast(present, tf.float64)
    diag = tf.linalg.diag_part(m)
    d = tf.where(diag > 0, tf.math.rsqrt(tf.where(diag > 0, diag, 1.0)), 0.0) * p
    units = m * d[:, None] * d[None, :]
    w = tf.cast(preference, tf.float64) * p
    beta = d * tf.linalg.matvec(tf.linalg.pinv(units), w)
    mb = tf.linalg.matvec(m, beta)
    return tf.math.divide_no_nan(tf.reduce_sum(mb * p), tf.tensordot(beta, mb, 1)) * beta * p


class ConFIG(PreferenceGramWeighting):
    name = "config"
    Params = Params
    reference = ("Liu, Chu & Thuerey, ConFIG: towards conflict-free training of physics informed "
                 "neural networks, ICLR 2025 (arXiv:2408.11104)")

    def combine(self, gram, values, present, ctx):
        return tf.cast(config_coefficients(gram, present, self.pref), tf.float32)
