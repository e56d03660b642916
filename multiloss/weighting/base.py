"""The interface every weighting strategy implements (think optax), one type per kind.

A strategy is a small object with state in a few ``keras.Variable``s.  The
composite loss asks it for *strategy weights* λ (a ``[T]`` vector, one per
term, in term order); the weight actually applied, logged as
``<term>_weight`` and held in ``CompositeLoss.weights``, is

    effective weight = static spec weight × schedule factor × λ

:class:`Strategy` is the common root; what a strategy needs from the train
step is its *kind*, one of four types (:meth:`Strategy.kind`):

* :class:`LossWeighting` (``static``, ``uncertainty``, ``dwa``, ``rlw``,
  ``famo``): :meth:`~LossWeighting.weights` returns λ from this step's loss
  values and :meth:`~Strategy.regularizer` any extra term of the objective;
  the step differentiates ``Σ s·λ·L + regularizer`` (one backward pass).
* :class:`GramWeighting` (``pcgrad``, ``mgda``, ``cagrad``, ``nash_mtl``,
  ``imtl_g``, ``gradvac``, ``aligned_mtl``, ``upgrad``, ``db_mtl`` without
  averages): the step computes per-task gradients (of the shared parameters,
  or of the shared representation) and passes their Gram matrix to
  :meth:`~GramWeighting.combine`, which returns λ: the coefficients of the
  per-task gradients in the update of the shared parameters.
* :class:`RowAggregator` (``graddrop``, ``db_mtl`` with averages): the
  update is no combination Σ λ_i g_i, so :meth:`~RowAggregator.aggregate`
  gets the ``[T, P]`` gradient rows themselves.
* :class:`LayerGradientWeighting` (``gradnorm``): λ from the norms of the
  per-task gradients of one shared layer W.

The compute hooks (``combine``, ``aggregate``) only compute: they return λ,
or a :class:`StateUpdate` holding λ and the new values of state variables,
and the step then calls :meth:`GradientWeighting.update_state` (so every
write of a step sits between the guard's snapshot and its restore).  A
strategy of your own subclasses one of the kind types and is registered with
:func:`multiloss.weighting.register_strategy`.  A subclass of
:class:`Strategy` itself written against the flags of earlier releases
(``gradients = "shared"`` with ``combine``, ``direct = True`` with
``aggregate``, ``gradients = "layer"``) keeps working: :meth:`Strategy.kind`
falls back to those flags, and a hook that writes state itself is still put
back by the non-finite guard.

Every tensor method runs inside the compiled train step and is written with
``keras.ops``/``tf``; ``on_epoch_end`` runs eagerly between epochs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from ..spec.lazy import keras, ops
from ..spec.validation import plain_number


class Params(BaseModel):
    """Base of every strategy's parameters: unknown keys are refused, and so are ``true``/``false`` or
    text for a number (``temperature: "2.0"``)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return plain_number(value, cls.model_fields[info.field_name].annotation)


@dataclass(frozen=True)
class Context:
    """What a strategy may know about the current step."""

    step: Any            # int64 scalar tensor: optimizer updates applied so far
    training: bool       # False in evaluate/test steps (trace-time constant)
    replicas: int        # replicas in sync (1 outside tf.distribute)


class StateUpdate(NamedTuple):
    """What a compute hook returns when it moves state besides ``current``: λ and ``{state key: new value}``."""

    weights: Any
    state: dict


def state_variable(value, name: str, dtype: str = "float32", trainable: bool = False) -> keras.Variable:
    """A strategy state variable, assignable inside a replica step.

    ``only_first_replica``: every replica computes the same value (from
    all-reduced quantities), so the first replica's write is the write.
    """
    return keras.Variable(np.asarray(value, dtype), trainable=trainable, name=name, dtype=dtype,
                          aggregation="none" if trainable else "only_first_replica")


class Strategy:
    """The common root of the strategy kinds; its defaults are static weighting.

    The class attributes ``gradients``, ``direct`` and ``uses_values`` are the
    flags of earlier releases: each kind type sets them (``gradients`` is
    None, ``"shared"`` or ``"layer"``; ``direct`` marks a row aggregator), so
    they stay readable on every class, and a subclass of :class:`Strategy`
    that sets them itself gets the kind they name.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: None (loss weighting), "shared" (per-task gradients of all shared
    #: parameters) or "layer" (per-task gradients of one shared layer, GradNorm).
    gradients: ClassVar[str | None] = None
    #: Whether :meth:`weights` needs this step's (all-reduced) loss values.
    uses_values: ClassVar[bool] = False
    #: The update is computed from the gradient rows (:meth:`aggregate`), not as Σ λ_i g_i.
    direct: ClassVar[bool] = False
    reference: ClassVar[str] = ""
    #: Whether the strategy reads ``weighting.preference`` (a point on the trade-off: STCH, ConFIG, DualProj).
    uses_preference: ClassVar[bool] = False
    #: The ``weighting.gradients`` modes the method allows (a per-parameter state needs ``parameters``).
    gradient_modes: ClassVar[tuple[str, ...]] = ("parameters", "representation")
    #: Independent samples a step needs (MoDo, SDMGrad: 3).  With k > 1 the batch is cut into k contiguous
    #: parts and a row aggregator's ``aggregate`` gets ``[k, T, P]`` rows, part j's per-task gradients of the
    #: shared parameters (``gradients: parameters`` only).
    samples: ClassVar[int] = 1

    def __init__(self, params: Params, terms: list, preference: dict[str, float] | None = None):
        self.params = params
        self.terms = terms
        self.num_terms = len(terms)
        self.state: dict[str, keras.Variable] = {}
        #: ``weighting.preference``: {term: value > 0}, or None (validated by the spec).
        self.preference = dict(preference) if preference else None

    def preference_vector(self) -> np.ndarray:
        """The preference per term, in term order (float64; a term not named gets 1, as does every term
        without a preference)."""
        pref = self.preference or {}
        return np.array([float(pref.get(t.name, 1.0)) for t in self.terms], "float64")

    @classmethod
    def kind(cls) -> type[Strategy]:
        """The kind type of this class: :class:`LossWeighting`, :class:`GramWeighting`,
        :class:`RowAggregator` or :class:`LayerGradientWeighting`.

        The kind types come first (a class of two kinds, DB-MTL, is named by the
        first of Layer, Gram, Row it derives from; see :meth:`active_kind`); a
        plain subclass of :class:`Strategy` is read from its flags.
        """
        for kind in KINDS:
            if issubclass(cls, kind):
                return kind
        if cls.gradients == "layer":
            return LayerGradientWeighting
        if cls.gradients == "shared":
            return RowAggregator if cls.direct else GramWeighting
        return LossWeighting

    def active_kind(self) -> type[Strategy]:
        """The kind this instance runs as in the train step (after :meth:`bind_rows`); :meth:`kind` by default."""
        return self.kind()

    @classmethod
    def check(cls, params: Params, terms: list) -> list[tuple[tuple, str]]:
        """Problems of ``params`` that need the terms: ``[(path under params, message)]``."""
        return []

    def build(self) -> None:
        """Create the state variables (called under the model's distribution scope)."""

    def keep_current(self, initial: float, name: str) -> None:
        """Create ``current``, the last λ (what :meth:`current_weights` reads), as ``state["current"]``."""
        self.current = state_variable(np.full(self.num_terms, initial), name)
        self.state["current"] = self.current

    def current_weights(self):
        """The last λ of the train step (held in ``current``)."""
        return ops.convert_to_tensor(self.current)

    @property
    def trainable_variables(self) -> list:
        """Variables the model's optimizer trains with the network (uncertainty's log-variances)."""
        return []

    def weights(self, values, present, ctx: Context):
        """Strategy weights λ ``[T]`` for this step (loss weighting; every kind for evaluation and logs)."""
        return ops.ones((self.num_terms,), "float32")

    def regularizer(self, scale, present, ctx: Context):
        """An extra term of the objective (global value), or None."""
        return None

    def combine(self, gram, values, present, ctx: Context):
        """Gram and layer strategies: λ (or a :class:`StateUpdate`) from the Gram matrix of the per-task gradients."""
        raise NotImplementedError

    def aggregate(self, rows, values, present, ctx):
        """Row aggregators: ``(update [P], λ [T] or a StateUpdate)`` from the per-task gradient rows."""
        raise NotImplementedError

    def update_state(self, result) -> Any:
        """Write what a compute hook returned (λ or a :class:`StateUpdate`) into the state; return λ.

        Called by the train step after ``combine``/``aggregate``.  A plain
        :class:`Strategy` subclass writes its state in its hooks, so only a
        :class:`StateUpdate`'s variables are written here; the kind types also
        keep λ in ``current`` (:meth:`GradientWeighting.update_state`).
        """
        if not isinstance(result, StateUpdate):
            return result
        for key, value in result.state.items():
            self.state[key].assign(value)
        return result.weights

    def variable_gradients(self, values, scale, present, ctx: Context):
        """Gradient strategies: the gradients of :attr:`trainable_variables` (global, one per variable), or None.

        The per-task gradient paths differentiate the term values only; a strategy with a learned parameter
        of its own objective (IMTL's loss scales) returns its gradient here (``values``: this step's global
        term values, ``scale``: static × schedule weights)."""
        return None

    def head_scale(self, values, present):
        """Factor on the task-specific gradients s_i ∇L_i (1; DB-MTL: 1/L_i, the log-loss gradient)."""
        return ops.ones((self.num_terms,), "float32")

    def bind_rows(self, size: int | None, mode: str) -> str | None:
        """Told the length of the gradient rows (None if unknown) and the mode; a problem, or None."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        """Between epochs, eagerly (DWA)."""

    # --- saving -------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every state variable's value (what a saved model carries, see :meth:`saved_state`)."""
        return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in self.state.items()}

    def get_state(self) -> dict[str, list]:
        """The state as lists (every variable of ``state``, the ``[T, P]`` buffers too)."""
        return {k: v.tolist() for k, v in self.state_arrays().items()}

    def saved_state(self) -> dict:
        """The state as the saved model's compile config holds it: lists, or :func:`encode_array` for a
        large array (a per-parameter buffer)."""
        return {k: encode_array(v) for k, v in self.state_arrays().items()}

    def set_state(self, state: dict) -> None:
        """Assign saved values (lists, or :func:`encode_array`'s form) to the state variables that exist;
        a key without a variable yet (a buffer made once the rows' length is known) is left to the
        caller (:meth:`multiloss.core.weight_control.Weighting.bind` assigns it then)."""
        for k, v in state.items():
            if k in self.state:
                self.state[k].assign(decode_array(v, self.state[k].dtype))


class LossWeighting(Strategy):
    """λ from this step's loss values (:meth:`weights`, :meth:`regularizer`): one backward pass."""

    gradients = None
    direct = False


class GradientWeighting(Strategy):
    """The kinds that see per-task gradients; λ for evaluation and the logs is the last step's (``current``)."""

    def build(self):
        """``current`` starts at 1 (a strategy with more state overrides this and calls :meth:`keep_current`)."""
        self.keep_current(1.0, f"multiloss_{self.name or type(self).__name__}_weights")

    def weights(self, values, present, ctx):
        return self.current_weights()

    def keep_iterate(self, key: str) -> keras.Variable:
        """``current`` and a float64 iterate ``state[key]`` on the simplex, both 1/T at the start (the weights
        that MoCo, MoDo, SDMGrad and ExcessMTL carry from step to step)."""
        n = self.num_terms
        self.keep_current(1.0 / n, f"multiloss_{self.name}_weights")
        self.state[key] = state_variable(np.full(n, 1.0 / n), f"multiloss_{self.name}_{key}", dtype="float64")
        return self.state[key]

    def update_state(self, result):
        """The :class:`StateUpdate`'s variables, and λ into ``current`` unless it names ``current`` itself."""
        lam = super().update_state(result)
        named = result.state if isinstance(result, StateUpdate) else {}
        if "current" in self.state and "current" not in named:
            self.state["current"].assign(lam)
        return lam


class GramWeighting(GradientWeighting):
    """λ from the Gram matrix ``M = G Gᵀ`` of the per-task gradients.

    Implement :meth:`~Strategy.combine` (compute only): λ ``[T]``, or a
    :class:`StateUpdate`; the update of the shared part is Σ λ_i g_i.
    """

    gradients = "shared"
    direct = False


class PreferenceGramWeighting(GramWeighting):
    """A Gram weighting that reads ``weighting.preference`` (ConFIG, DualProj): λ starts at 1/T, and the
    preference per term is ``self.pref`` (float64, in term order)."""

    uses_preference = True

    def build(self):
        self.keep_current(1.0 / self.num_terms, f"multiloss_{self.name}_weights")
        self.pref = ops.convert_to_tensor(self.preference_vector(), "float64")


class RowAggregator(GradientWeighting):
    """The update of the shared part from the ``[T, P]`` gradient rows themselves.

    Implement :meth:`~Strategy.aggregate` (compute only): ``(update [P], λ [T]
    to log, or a StateUpdate)``.
    """

    gradients = "shared"
    direct = True


class LayerGradientWeighting(GradientWeighting):
    """λ from the per-task gradients of one shared layer W (GradNorm): :meth:`combine` gets their Gram
    matrix's diagonal, ``diag(‖∇_W L_i‖²)``."""

    gradients = "layer"
    direct = False


class SampledRows(RowAggregator):
    """A row aggregator of three independent samples a step (MoDo, SDMGrad): ``aggregate`` gets ``[3, T, P]``,
    the per-task gradients of the shared parameters on each third of the batch (see :attr:`Strategy.samples`)."""

    samples = 3
    gradient_modes = ("parameters",)


class RowBuffer:
    """Mixin of a row aggregator that keeps a ``[T, P]`` buffer per shared parameter (ExcessMTL, MoCo): made in
    :meth:`~Strategy.bind_rows` once P is known, put back by the non-finite guard, and saved with the model
    like the rest of the state (its bytes, :func:`encode_array`; assigned when the loaded model binds)."""

    #: The state key of the buffer.
    buffer_key: ClassVar[str] = "buffer"

    def bind_buffer(self, size: int | None, what: str) -> str | None:
        if size is None:
            return f"{self.name} {what}, which needs known shared layers: name them in weighting.shared"
        var = self.state.get(self.buffer_key)
        if var is None or var.shape[1] != size:
            var = state_variable(np.zeros((self.num_terms, size)), f"multiloss_{self.name}_{self.buffer_key}")
        self.state[self.buffer_key] = var
        return None

    def buffer(self):
        return ops.convert_to_tensor(self.state[self.buffer_key])


#: The kind types, in the order :meth:`Strategy.kind` tries them.
KINDS: tuple[type[Strategy], ...] = (LayerGradientWeighting, GramWeighting, RowAggregator, LossWeighting)


#: Arrays of more entries than this are saved as the base64 of their bytes (exact, and a fraction of the
#: size of a list of decimals); smaller ones as lists, the only form of earlier releases (which loads).
INLINE_MAX = 256
#: The dtypes a saved array may name (a file is not trusted to name others).
SAVED_DTYPES = ("<f4", "<f8", "<i4", "<i8")


def encode_array(value: np.ndarray):
    """A state array for a saved config: a list, or ``{"dtype", "shape", "base64"}`` above :data:`INLINE_MAX`."""
    value = np.asarray(value)
    if value.size <= INLINE_MAX:
        return value.tolist()
    value = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
    return {"dtype": value.dtype.str, "shape": list(value.shape),
            "base64": base64.b64encode(value.tobytes()).decode("ascii")}


def decode_array(value, dtype) -> np.ndarray:
    """The array that :func:`encode_array` wrote (or a plain list, as earlier releases did), as ``dtype``."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype)
    if value.get("dtype") not in SAVED_DTYPES or not isinstance(value.get("base64"), str):
        raise ValueError(f"a saved strategy state array needs a dtype of {SAVED_DTYPES} and base64 data; "
                         f"got dtype {value.get('dtype')!r}")
    shape = tuple(int(n) for n in value.get("shape", ()))
    data = np.frombuffer(base64.b64decode(value["base64"], validate=True), np.dtype(value["dtype"]))
    return data.reshape(shape).astype(dtype)


def masked_mean(x, mask):
    """Mean of ``x`` over entries where ``mask`` is 1 (0 when none is)."""
    return ops.divide_no_nan(ops.sum(x * mask), ops.sum(mask))
