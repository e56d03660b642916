"""STCH, smooth Tchebycheff scalarization (Lin, Zhang, Yang, Liu, Wang & Zhang, ICML 2024).

With a preference λ on the simplex, an ideal point z* and a smoothing μ > 0
the objective is (the paper's Eq. 6)

    g_μ(x | λ) = μ · log Σ_i exp(λ_i (L_i(x) − z*_i) / μ),

a smooth upper bound of the Tchebycheff max_i λ_i (L_i − z*_i), within μ·log T
of it (μ → 0: the max; large μ: the λ-weighted mean, plus μ log T).  Its gradient
is Σ_i w_i ∇L_i with

    w_i = λ_i · softmax_i(λ (L − z*) / μ),

so one backward pass of Σ w_i L_i, w held constant, takes the gradient of g_μ.
λ is ``weighting.preference`` normalised to sum 1 over the terms present (the
paper's λ ∈ Δ; default: 1/T each), z* is ``params.ideal`` (default 0 for every
term: losses ≥ 0), μ is ``params.mu``.  Terms absent from a batch are left out
of the sum.  Static weights and schedules multiply w.  The logged ``loss`` is
Σ s_i w_i L_i (not g_μ itself).

The authors' multi-task code (and LibMTL's ``STCH``, taken from it) scalarises
log(L_i / L̄_i) with L̄ the mean loss of a warm-up epoch, without a preference,
and multiplies by T; TorchJD's ``STCH`` puts the softmax on the gradient norms.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from ..spec.validation import no_such
from .base import LossWeighting, Params, state_variable


class STCHParams(Params):
    mu: float = Field(1.0, gt=0, description="The smoothing μ (μ → 0: the Tchebycheff max).")
    ideal: dict[str, float] = Field(default_factory=dict,
                                    description="The ideal point z*: {term: value} (default 0).")


def stch_weights(values, present, preference, ideal, mu: float):
    """w_i = λ_i softmax_i(λ(L − z*)/μ) over the present terms, λ the preference normalised there (float64)."""
    p = tf.cast(present, tf.float64)
    pref = tf.cast(preference, tf.float64) * p
    lam = tf.math.divide_no_nan(pref, tf.reduce_sum(pref))
    a = lam * (tf.cast(values, tf.float64) - tf.cast(ideal, tf.float64)) / mu
    a = tf.where(p > 0, a, tf.fill(tf.shape(a), tf.constant(-np.inf, tf.float64)))
    soft = tf.where(p > 0, tf.nn.softmax(a), tf.zeros_like(a))
    return lam * soft


def stch_value(values, present, preference, ideal, mu: float):
    """g_μ(x | λ) over the present terms (float64)."""
    p = tf.cast(present, tf.float64)
    pref = tf.cast(preference, tf.float64) * p
    lam = tf.math.divide_no_nan(pref, tf.reduce_sum(pref))
    a = lam * (tf.cast(values, tf.float64) - tf.cast(ideal, tf.float64)) / mu
    return mu * tf.reduce_logsumexp(tf.where(p > 0, a, tf.fill(tf.shape(a), tf.constant(-np.inf, tf.float64))))


class STCH(LossWeighting):
    name = "stch"
    Params = STCHParams
    uses_values = True
    uses_preference = True
    reference = ("Lin, Zhang, Yang, Liu, Wang & Zhang, Smooth Tchebycheff scalarization for multi-objective "
                 "optimization, ICML 2024 (arXiv:2402.19078)")

    @classmethod
    def check(cls, params, terms):
        names = [t.name for t in terms]
        return [(("ideal", k), no_such("term", k, names)) for k in params.ideal if k not in names]

    def build(self):
        self.pref = tf.constant(self.preference_vector(), tf.float64)
        self.ideal = tf.constant([float(self.params.ideal.get(t.name, 0.0)) for t in self.terms], tf.float64)
        pref = self.preference_vector()
        self.current = state_variable(pref / pref.sum() / self.num_terms, "multiloss_stch_weights")
        self.state = {"current": self.current}

    def weights(self, values, present, ctx):
        if not ctx.training:
            return self.current_weights()
        values = tf.stop_gradient(tf.cast(values, tf.float32))
        lam = tf.cast(stch_weights(values, present, self.pref, self.ideal, self.params.mu), tf.float32)
        self.current.assign(lam)
        return lam
