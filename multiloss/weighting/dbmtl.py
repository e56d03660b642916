"""DB-MTL, dual-balancing multi-task learning (Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, 2023).

Loss-scale balancing: every term is trained through log L_i, whose gradient
is ∇L_i / L_i.  Gradient-magnitude balancing: with ĝ_i an exponential moving
average of ∇ log L_i (ĝ ← g + β_t (ĝ − g), β_t = β / t^σ, t = 1, 2, … the
step), the update of the shared parameters is

    Σ_i (max_j ‖ĝ_j‖ / ‖ĝ_i‖) · ĝ_i,

every task's part scaled to the largest norm (LibMTL's ``DB_MTL``, the
authors' code).  The average starts at zero (``average_start: zero``, as the
authors' code), so step t of constant gradients gives (1 − β^t) × the
gradients' update (0.1× at step 1 for β = 0.9); ``average_start:
first_gradient`` starts each task's average at its first gradient (a row of
the average that is still all zero: the first step or a task's first present
step).  The averages are saved with the model (a reloaded model goes on
from them).
The task-specific parameters get ∇ log L_i = s_i ∇L_i / L_i.  With ``beta:
0`` there is no average and the update is Σ λ_i g_i with
λ_i = max_j(‖g_j‖/L_j) / ‖g_i‖, computed from the Gram matrix (any gradient
mode); with ``beta > 0`` the averages are kept per shared parameter
(``gradients: parameters``; with ``gradients: representation`` the rows are
new samples every step and β is not used).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..spec.lazy import tf
from .base import GramWeighting, Params, RowAggregator, StateUpdate, state_variable


class DBMTLParams(Params):
    beta: float = Field(0.9, ge=0, lt=1, description="EMA rate of the log-loss gradients (LibMTL: 0.9).")
    beta_sigma: float = Field(0.0, ge=0, description="β_t = β / t^σ (LibMTL: 0).")
    eps: float = Field(1e-8, gt=0, description="Added to the losses and norms.")
    average_start: Literal["zero", "first_gradient"] = Field(
        "zero", description="Where the averages start: zero (the authors' code, LibMTL) or each task's first "
                            "gradient.")


def dbmtl_update(rows, buffer, values, present, step, beta: float, beta_sigma: float, eps: float = 1e-8,
                 start: str = "zero"):
    """``(update [P], new buffer [T, P], λ [T])`` of DB-MTL from the rows g_i (float32).

    ``start``: ``zero`` (the buffer's zeros are the average so far) or ``first_gradient`` (an all-zero row
    of the buffer takes the gradient itself).
    """
    p = tf.cast(present, rows.dtype)
    logs = rows / (tf.cast(values, rows.dtype)[:, None] + eps)          # ∇ log L_i
    t = tf.cast(step, rows.dtype) + 1.0
    b = beta / tf.pow(t, beta_sigma)
    new = logs + b * (buffer - logs)
    if start == "first_gradient":
        unstarted = tf.reduce_all(tf.equal(buffer, 0.0), axis=1, keepdims=True)
        new = tf.where(unstarted, logs, new)
    new = tf.where(p[:, None] > 0, new, buffer)
    norms = tf.norm(new, axis=1)
    top = tf.reduce_max(norms * p)
    alpha = p * top / (norms + eps)
    lam = alpha / (tf.cast(values, rows.dtype) + eps)
    return tf.tensordot(alpha, new, 1), new, lam


def dbmtl_coefficients(gram, values, present, eps: float = 1e-8):
    """λ of DB-MTL without averaging (β = 0): max_j(‖g_j‖/L_j) / ‖g_i‖ (float64)."""
    m = tf.cast(gram, tf.float64)
    p = tf.cast(present, tf.float64)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(m), 0.0))
    loss = tf.cast(values, tf.float64) + eps
    top = tf.reduce_max(p * norms / loss)
    return p * top / (norms / loss + eps) / loss


class DBMTL(GramWeighting, RowAggregator):
    """A Gram weighting without averages (``beta: 0``, or ``gradients: representation``); a row
    aggregator with them (its averages are kept per shared parameter): :meth:`active_kind`."""

    name = "db_mtl"
    Params = DBMTLParams
    reference = ("Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang & Kwok, Dual-balancing for multi-task learning, "
                 "2023 (arXiv:2308.12029)")

    def build(self):
        self.keep_current(1.0, "multiloss_dbmtl_weights")
        self.buffer = None

    def active_kind(self):
        # The averages need the rows themselves; bind_rows made their buffer (β > 0, gradients: parameters).
        return RowAggregator if self.params.beta > 0 and self.buffer is not None else GramWeighting

    def bind_rows(self, size, mode):
        if self.params.beta == 0 or mode == "representation":
            return None          # representation rows are new samples each step: no average (β ignored)
        if size is None:
            return ("db_mtl with beta > 0 averages the per-task gradients of the shared parameters, which "
                    "needs known shared layers: name them in weighting.shared (or set params.beta: 0)")
        if self.buffer is None or self.buffer.shape[1] != size:
            self.buffer = state_variable(np.zeros((self.num_terms, size)), "multiloss_dbmtl_buffer")
        self.state["buffer"] = self.buffer      # the non-finite guard puts it back after a skipped step
        return None

    def head_scale(self, values, present):
        return 1.0 / (tf.cast(values, tf.float32) + self.params.eps)

    def combine(self, gram, values, present, ctx):
        return tf.cast(dbmtl_coefficients(gram, values, present, self.params.eps), tf.float32)

    def aggregate(self, rows, values, present, ctx):
        p = self.params
        update, new, lam = dbmtl_update(rows, tf.convert_to_tensor(self.buffer), values, present, ctx.step,
                                        p.beta, p.beta_sigma, p.eps, p.average_start)
        return update, StateUpdate(lam, {"buffer": new})
