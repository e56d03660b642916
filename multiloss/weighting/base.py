"""The one interface every weighting strategy implements (think optax).

A strategy is a small object with state in a few ``keras.Variable``s.  The
composite loss asks it for *strategy weights* λ (a ``[T]`` vector, one per
term, in term order); the weight actually applied, logged as
``<term>_weight`` and held in ``CompositeLoss.weights``, is

    effective weight = static spec weight × schedule factor × λ

There are two kinds:

* **loss weighting** (``static``, ``uncertainty``, ``dwa``, ``rlw``):
  :meth:`Strategy.weights` returns λ for this step's losses and
  :meth:`Strategy.regularizer` any extra term of the objective; Keras's own
  train step differentiates ``Σ s·λ·L + regularizer`` (one backward pass).
* **gradient strategies** (``gradnorm``, ``pcgrad``, ``mgda``, ``cagrad``,
  ``nash_mtl``, ``imtl_g``, ``gradvac``, ``aligned_mtl``, ``upgrad``,
  ``db_mtl``, ``graddrop``: ``gradients`` is set): the multiloss train step
  computes per-task gradients (of the shared parameters, or of the shared
  representation) and passes their Gram matrix to :meth:`Strategy.combine`,
  which returns λ: the coefficients of the per-task gradients in the update of
  the shared parameters (see :mod:`multiloss.core.gradient_step`).  A ``direct``
  strategy gets the gradient rows themselves (:meth:`Strategy.aggregate`).

A strategy of your own subclasses :class:`Strategy` and is registered with
:func:`multiloss.weighting.register_strategy`.

Every tensor method runs inside the compiled train step and is written with
``keras.ops``/``tf``; ``on_epoch_end`` runs eagerly between epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..spec.lazy import keras, ops


class Params(BaseModel):
    """Base of every strategy's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Context:
    """What a strategy may know about the current step."""

    step: Any            # int64 scalar tensor: optimizer updates applied so far
    training: bool       # False in evaluate/test steps (trace-time constant)
    replicas: int        # replicas in sync (1 outside tf.distribute)


def state_variable(value, name: str, dtype: str = "float32", trainable: bool = False) -> keras.Variable:
    """A strategy state variable, assignable inside a replica step.

    ``only_first_replica``: every replica computes the same value (from
    all-reduced quantities), so the first replica's write is the write.
    """
    return keras.Variable(np.asarray(value, dtype), trainable=trainable, name=name, dtype=dtype,
                          aggregation="none" if trainable else "only_first_replica")


class Strategy:
    """Interface of a weighting strategy; the defaults are static weighting."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: None (loss weighting), "shared" (per-task gradients of all shared
    #: parameters) or "layer" (per-task gradients of one shared layer, GradNorm).
    gradients: ClassVar[str | None] = None
    #: Whether :meth:`weights` needs this step's (all-reduced) loss values.
    uses_values: ClassVar[bool] = False
    reference: ClassVar[str] = ""

    def __init__(self, params: Params, terms: list):
        self.params = params
        self.terms = terms
        self.num_terms = len(terms)
        self.state: dict[str, keras.Variable] = {}

    @classmethod
    def check(cls, params: Params, terms: list) -> list[tuple[tuple, str]]:
        """Problems of ``params`` that need the terms: ``[(path under params, message)]``."""
        return []

    def build(self) -> None:
        """Create the state variables (called under the model's distribution scope)."""

    @property
    def trainable_variables(self) -> list:
        """Variables the model's optimizer trains with the network (uncertainty's log-variances)."""
        return []

    def weights(self, values, present, ctx: Context):
        """Strategy weights λ ``[T]`` for this step (loss weighting and evaluation)."""
        return ops.ones((self.num_terms,), "float32")

    def regularizer(self, scale, present, ctx: Context):
        """An extra term of the objective (global value), or None."""
        return None

    def combine(self, gram, values, present, ctx: Context):
        """Gradient strategies: λ from the Gram matrix of the per-task gradients."""
        raise NotImplementedError

    #: Gradient strategies whose update is not a combination Σ λ_i g_i of the
    #: per-task gradients (GradDrop's masks, DB-MTL's moving averages) set this and
    #: implement :meth:`aggregate` on the ``[T, P]`` gradient rows themselves.
    direct: ClassVar[bool] = False

    def aggregate(self, rows, values, present, ctx):
        """Direct strategies: ``(update [P], λ [T] to log)`` from the per-task gradient rows."""
        raise NotImplementedError

    def head_scale(self, values, present):
        """Factor on the task-specific gradients s_i ∇L_i (1; DB-MTL: 1/L_i, the log-loss gradient)."""
        return ops.ones((self.num_terms,), "float32")

    def bind_rows(self, size: int | None, mode: str) -> str | None:
        """Told the length of the gradient rows (None if unknown) and the mode; a problem, or None."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        """Between epochs, eagerly (DWA)."""

    # --- saving -------------------------------------------------------------

    def get_state(self) -> dict[str, list]:
        return {k: np.asarray(ops.convert_to_numpy(v)).tolist() for k, v in self.state.items()}

    def set_state(self, state: dict[str, list]) -> None:
        for k, v in state.items():
            if k in self.state:
                self.state[k].assign(np.asarray(v, self.state[k].dtype))


def masked_mean(x, mask):
    """Mean of ``x`` over entries where ``mask`` is 1 (0 when none is)."""
    return ops.divide_no_nan(ops.sum(x * mask), ops.sum(mask))
