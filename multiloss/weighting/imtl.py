"""IMTL, impartial multi-task learning (Liu et al., ICLR 2021): IMTL-G, IMTL-L and the two together.

**IMTL-L** (``imtl_l``, §3.2): every task has a learned scale s_t and the loss

    L̃_t = e^{s_t} L_t − s_t,

trained with the network by the model's optimizer: θ gets e^{s_t} ∇L_t, s_t gets
e^{s_t} L_t − 1, so s_t → −log L_t and the scaled losses e^{s_t} L_t → 1 (λ_t =
e^{s_t}, s_t starts at ``init``, 0).  A static weight multiplies the whole L̃_t.

**IMTL** (``imtl``, Algorithm 1): IMTL-L's scaled losses, and IMTL-G on their
gradients e^{s_t} g_t: the shared part moves along Σ α_t e^{s_t} g_t with α of
IMTL-G on the Gram matrix E M E (E = diag(e^{s})), so λ_t = α_t e^{s_t}; each
task's own parameters get e^{s_t} ∇L_t, and s_t gets e^{s_t} L_t − 1 from the
model's optimizer, as in IMTL-L (the per-task gradient passes differentiate L_t
only, so the strategy hands that gradient to the step:
:meth:`~multiloss.weighting.base.Strategy.variable_gradients`).  LibMTL's
``IMTL`` computes the same scaled losses, but its s is a plain tensor with
``requires_grad`` (not an ``nn.Parameter``), so the trainer's optimizer, built
on ``model.parameters()``, never moves it: s stays 0 and the method is IMTL-G
(read from its code, not run).

**IMTL-G** (``imtl_g``, §3.1):

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

from pydantic import Field

from ..spec.lazy import ops, tf
from .base import GramWeighting, LossWeighting, Params, state_variable


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


class IMTLLParams(Params):
    init: float = Field(0.0, description="The initial loss scale s (the scaled loss is e^s·L − s).")


class _LossScales:
    """The learned loss scales s_t of IMTL-L (trained by the model's optimizer)."""

    def build_scales(self, name: str):
        self.scales = state_variable([self.params.init] * self.num_terms, name, trainable=True)
        self.state["scales"] = self.scales

    @property
    def trainable_variables(self):
        return [self.scales]


class IMTLL(_LossScales, LossWeighting):
    name = "imtl_l"
    Params = IMTLLParams
    reference = IMTLG.reference

    def build(self):
        self.build_scales("multiloss_imtl_l_scales")

    def weights(self, values, present, ctx):
        return ops.exp(ops.convert_to_tensor(self.scales))

    def regularizer(self, scale, present, ctx):
        return -ops.sum(scale * present * ops.convert_to_tensor(self.scales))


class IMTL(_LossScales, GramWeighting):
    name = "imtl"
    Params = IMTLLParams
    reference = IMTLG.reference

    def build(self):
        self.keep_current(1.0 / self.num_terms, "multiloss_imtl_weights")
        self.build_scales("multiloss_imtl_scales")

    def combine(self, gram, values, present, ctx):
        e = tf.exp(tf.cast(tf.convert_to_tensor(self.scales), tf.float64))
        scaled = tf.cast(gram, tf.float64) * e[:, None] * e[None, :]
        return tf.cast(imtl_g_coefficients(scaled, present) * e, tf.float32)

    def head_scale(self, values, present):
        return tf.exp(tf.convert_to_tensor(self.scales))

    def variable_gradients(self, values, scale, present, ctx):
        # ∂/∂s_t of s·(e^{s_t} L_t − s_t), for the terms present
        return [scale * present * (tf.exp(tf.convert_to_tensor(self.scales)) * values - 1.0)]
