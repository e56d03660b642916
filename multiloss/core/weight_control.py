"""The weighting controller: static weights × schedules × strategy, in one place.

:class:`CompositeLoss` owns one :class:`Weighting` when its spec has a
``weighting:`` other than static or any ``schedules:``; without them it has
none and its step is exactly as before.  The controller keeps the static
spec weights in ``base`` (what ``set_weights`` changes), asks the strategy
for λ, and writes the effective weights ``base × schedule × λ`` into the
composite's one weights variable, so that the composite's ``TermTracker``
logs them as ``<term>_weight``.
"""

from __future__ import annotations

import contextlib

import numpy as np
from keras import ops

from ..losses import reduction as red
from ..spec import schedules as sched
from ..weighting.base import Context, LayerGradientWeighting, LossWeighting, Strategy, state_variable
from ..weighting.registry import resolve


class Weighting:
    """Static weights × schedule factors × strategy weights for one composite loss."""

    def __init__(self, composite):
        spec = composite.spec
        ws = spec.weighting
        cls, _ = resolve(ws.strategy if ws else "static")
        self.composite = composite
        self.strategy: Strategy = cls(cls.Params(**(ws.params if ws else {})), composite.terms)
        self.strategy.preference = dict(ws.preference) if ws and getattr(ws, "preference", None) else None
        self.strategy.build()
        self.schedules = {composite.term_index(k): v for k, v in spec.schedules.items()}
        self.base = state_variable([t.weight for t in composite.terms], "multiloss_static_weights")
        self.shared_names = list(ws.shared) if ws and ws.shared is not None else None
        self.vectorize = bool(ws and ws.vectorize)
        self.shared: list | None = None     # shared variables (None: from gradient connectivity)
        self.layer: list | None = None      # GradNorm's W
        self.mode = getattr(ws, "gradients", "parameters") if ws else "parameters"
        self.representation_names = getattr(ws, "representation", None) if ws else None
        self.representation = None          # a shared.Representation with gradients: representation
        n = len(composite.terms)
        # The largest strategy weight of each present term this epoch (collapse warning).
        self.peak = state_variable(np.full(n, -np.inf), "multiloss_weight_peak")
        self.start: np.ndarray | None = None
        self.warned: set[str] = set()
        self._step = None
        self._own_step = None
        self.training = False
        #: Saved state whose variables the strategy makes only when bound (the per-parameter buffers).
        self.pending: dict = {}
        #: The effective weights were computed before the optimizer's step was loaded (a loaded model).
        self.stale = False

    # --- binding to a model ------------------------------------------------------

    def bind(self, model) -> None:
        """Read the step from the model's optimizer; resolve what the strategy's kind needs of the model;
        then assign the saved state whose variables only binding makes (:meth:`set_config`)."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            self._step = optimizer.iterations
        if self.strategy.kind() is not LossWeighting:
            self._bind_gradients(model)
        pending, self.pending = self.pending, {}
        self.strategy.set_state({k: v for k, v in pending.items() if k in self.strategy.state})

    def _bind_gradients(self, model) -> None:
        from .shared_params import infer_shared, lone_layers, variables_of

        kind = self.strategy.kind()
        problems = []
        terms = self.composite.terms
        if self.shared_names is not None:
            self.shared, bad = variables_of(model, self.shared_names)
            problems += [(("weighting", "shared", i), msg) for i, msg in bad + lone_layers(model, terms, self.shared_names)]
        else:
            self.shared = infer_shared(model, terms)
            learns = bool(self.strategy.trainable_variables)   # IMTL's loss scales
            if self.shared == [] and self.mode == "parameters" and kind is not LayerGradientWeighting \
                    and not learns and len(terms) > 1:
                problems.append((("weighting", "strategy"),
                                 f"{self.composite.spec.weighting.strategy} combines the terms' gradients on the "
                                 "parameters they share, but no trainable variable is used by two or more terms "
                                 "(each has a tower of its own), so it would train as static weights; share a "
                                 "trunk between the heads, or use a loss weighting (uncertainty, dwa, ...)"))
        if kind is LayerGradientWeighting:
            problems += self._bind_layer(model)
        else:
            problems += self._bind_rows(model, problems)
        if self.vectorize and self.shared is None:
            problems.append((("weighting", "vectorize"),
                             "vectorized per-task gradients need the shared layers, which cannot be read "
                             "from a subclassed model: list them in weighting.shared"))
        if problems:
            raise self.composite.spec.error(problems)

    def _bind_layer(self, model) -> list:
        """GradNorm's layer W: named, or the last shared layer."""
        from .shared_params import last_layer, lone_layers, variables_of

        layer = getattr(self.strategy.params, "layer", None)
        if layer is not None:
            self.layer, bad = variables_of(model, [layer])
            bad += lone_layers(model, self.composite.terms, [layer])
            return [(("weighting", "params", "layer"), msg) for _, msg in bad]
        if self.shared is None:
            return [(("weighting", "params", "layer"),
                     "GradNorm needs its layer W, and the shared layers of a subclassed model "
                     "cannot be read from its graph: name W here (or list the shared layers "
                     "in weighting.shared)")]
        self.layer = last_layer(self.shared)
        if not self.layer:
            return [(("weighting", "strategy"),
                     "GradNorm balances the gradients of shared parameters, but no trainable "
                     "variable is used by two or more terms; name W in weighting.params.layer")]
        return []

    def _bind_rows(self, model, earlier: list) -> list:
        """The representation (``gradients: representation``), then the rows' length told to the strategy."""
        problems = []
        if self.mode == "representation":
            from .shared_params import find_representation

            self.representation, problem = find_representation(model, self.composite.terms,
                                                               self.representation_names)
            if problem:
                key = "representation" if self.representation_names else "gradients"
                problems.append((("weighting", key), problem))
        if not earlier and not problems:
            size = None if self.shared is None or self.mode == "representation" else \
                sum(int(np.prod(v.shape)) for v in self.shared)
            problem = self.strategy.bind_rows(size, self.mode)
            if problem:
                problems.append((("weighting", "params"), problem))
        return problems

    @property
    def step(self):
        """The training step (the optimizer's ``iterations``; a variable of its own if unbound)."""
        if self._step is None:
            if self._own_step is None:
                self._own_step = state_variable(0, "multiloss_step", dtype="int64")
            return self._own_step
        return self._step

    @contextlib.contextmanager
    def in_training(self):
        """Mark the train step being traced (strategies update their state only there)."""
        previous, self.training = self.training, True
        try:
            yield
        finally:
            self.training = previous

    def context(self) -> Context:
        return Context(step=ops.convert_to_tensor(self.step), training=self.training,
                       replicas=red.num_replicas())

    # --- the weights ---------------------------------------------------------------

    def scale(self):
        """Static weights × schedule factors, ``[T]``."""
        base = ops.convert_to_tensor(self.base)
        if not self.schedules:
            return base
        return base * sched.factors(self.schedules, len(self.composite.terms), self.step)

    def objective(self, values, present):
        """``(total, effective weights)`` for per-replica term values (loss-weighting path)."""
        ctx = self.context()
        s = self.scale()
        seen = red.cross_replica_sum(values) if self.strategy.uses_values else values
        lam = self.strategy.weights(seen, present, ctx)
        eff = s * lam
        if self.training:
            self.record(lam, present)
        total = ops.sum(eff * values)
        reg = self.strategy.regularizer(s, present, ctx)
        if reg is not None:
            total = total + reg / ctx.replicas
        self.composite.weights.assign(eff)
        return total, eff

    def state_variables(self) -> list:
        """What a training step changes besides the network: the strategy's state, the epoch peak, the
        effective weights (the non-finite guard puts them back after a skipped step)."""
        return [*self.strategy.state.values(), self.peak, self.composite.weights]

    def refresh(self) -> None:
        """Recompute the effective weights eagerly (after ``set_weights``, loading, an epoch end)."""
        n = len(self.composite.terms)
        ctx = Context(step=ops.convert_to_tensor(self.step), training=False, replicas=1)
        zeros, ones = ops.zeros((n,), "float32"), ops.ones((n,), "float32")
        lam = self.strategy.weights(zeros, ones, ctx)
        self.composite.weights.assign(ops.convert_to_numpy(self.scale() * lam))
        self.stale = False

    def refresh_if_stale(self) -> None:
        """Recompute weights computed when loading, before the optimizer's step was (its schedules at step 0)."""
        if self.stale:
            self.refresh()

    def set_base(self, vec) -> None:
        self.base.assign(np.asarray(vec, "float32"))
        self.refresh()

    def get_base(self) -> dict[str, float]:
        vec = ops.convert_to_numpy(self.base)
        return {t.name: float(w) for t, w in zip(self.composite.terms, vec)}

    def on_epoch_end(self, epoch: int) -> None:
        self.strategy.on_epoch_end(epoch)
        self.refresh()

    # --- collapse warning -----------------------------------------------------------

    def record(self, lam, present) -> None:
        """Inside the train step: keep the largest λ of each present term this epoch."""
        lam = ops.cast(lam, "float32")
        peak = ops.convert_to_tensor(self.peak)
        self.peak.assign(ops.where(present > 0, ops.maximum(peak, lam), peak))

    def start_tracking(self) -> None:
        if self.start is None:
            n = len(self.composite.terms)
            ctx = Context(step=ops.convert_to_tensor(self.step), training=False, replicas=1)
            lam = self.strategy.weights(ops.zeros((n,), "float32"), ops.ones((n,), "float32"), ctx)
            self.start = np.asarray(ops.convert_to_numpy(lam), "float64")

    def reset_peak(self) -> None:
        self.peak.assign(np.full(len(self.composite.terms), -np.inf, "float32"))

    def collapsed(self) -> list[tuple[str, float, float]]:
        """``[(term, peak λ, start λ)]`` for terms newly collapsed this epoch (each named once)."""
        from .weight_callbacks import COLLAPSE_FRACTION

        if self.start is None or self.strategy.name == "static":
            return []
        peak = np.asarray(ops.convert_to_numpy(self.peak), "float64")
        out = []
        for t, p, s0 in zip(self.composite.terms, peak, self.start):
            if np.isfinite(p) and s0 > 0 and p < COLLAPSE_FRACTION * s0 and t.name not in self.warned:
                self.warned.add(t.name)
                out.append((t.name, float(p), float(s0)))
        return out

    # --- fit integration -----------------------------------------------------------

    def fit_callbacks(self, callbacks: list) -> list:
        """The user's callbacks with multiloss's own in front (so their logs reach History/TensorBoard)."""
        import keras

        from .weight_callbacks import EpochHook, WeightLogger

        def first(c):  # WeightLogger, GradientDiagnostics: their logs must reach History/TensorBoard
            return bool(getattr(c, "multiloss_logs_first", False))

        ours = [EpochHook(self)]
        mine = [c for c in callbacks if first(c)]
        rest = [c for c in callbacks if not first(c)]
        if not any(isinstance(c, WeightLogger) for c in mine):
            for c in rest:
                if isinstance(c, keras.callbacks.TensorBoard):
                    ours.append(WeightLogger(c.log_dir))
                    break
        return ours + mine + rest

    # --- saving -------------------------------------------------------------------

    def get_config(self) -> dict:
        """The strategy's name and its whole state (:meth:`Strategy.saved_state`): saved with the model."""
        return {"strategy": self.strategy.name, "state": self.strategy.saved_state()}

    def set_config(self, config: dict) -> None:
        """The saved state back; what the strategy makes only when bound (its buffers) waits for :meth:`bind`."""
        if config.get("strategy") == self.strategy.name:
            state = dict(config.get("state", {}))
            self.strategy.set_state(state)
            self.pending = {k: v for k, v in state.items() if k not in self.strategy.state}
        self.refresh()
        self.stale = True       # Keras loads the optimizer's step after the compile config
