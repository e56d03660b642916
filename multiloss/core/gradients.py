"""Gradient providers: what one train step differentiates, for each kind of strategy.

The train step (:mod:`multiloss.core.train_step`) is one guarded skeleton; a
provider fills in its two parts: :meth:`~Provider.forward` (under the tape)
and :meth:`~Provider.gradients` (the gradients of every trainable variable,
with the values and total the non-finite guard checks), then
:meth:`~Provider.track` updates the loss trackers once the guard has decided.

* :class:`SinglePass` — static weights, schedules and the loss-weighting
  strategies (``uncertainty``, ``dwa``, ``rlw``, ``famo``): Keras's own loss
  (the composite through ``compute_loss``) and one backward pass.
* :class:`Layer` — GradNorm: ∇_W L_i for its layer W only (T short backward
  passes, each through one head to W; or one ``tape.jacobian`` with
  ``vectorize``), then one full backward pass of Σ s_i w_i L_i.
* :class:`Parameters` — the Gram strategies and row aggregators: ∇L_i for
  every trainable variable, in T backward passes — or, with
  ``weighting.vectorize: true``, one vectorised ``tape.jacobian`` (``pfor``).
  The gradients of the shared variables are stacked into G (``[T, P]``,
  all-reduced across replicas); a Gram strategy sees only G Gᵀ, a row
  aggregator the rows.  The shared variables get Σ_i s_i λ_i ∇L_i (local
  per-replica gradients, so the optimizer's cross-replica sum is exact), the
  task-specific ones s_i ∇L_i, plus the gradient of the regularization losses.
* :class:`Representation` — ``weighting.gradients: representation``
  (MGDA-UB, Sener & Koltun §3.3): the forward pass also returns the shared
  representation Z; T short backward passes give s_i ∇_Z L_i (through the
  heads only; each starts at the term's numerator Σ W·L with the output
  gradient s_i/denominator), the strategy sees their Gram matrix (summed over
  replicas: each replica's rows are its own samples), and ONE backward pass of
  Σ_i s_i λ_i ∇_Z L_i through the trunk gives the trunk's gradients; the heads
  get s_i ∇L_i from the same T short passes.

Terms absent from the batch, and terms whose scaled weight s_i is 0, are
left out of the strategy (``present`` = 0).  The effective weights s·λ go
into the composite's weights variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..weighting.base import RowAggregator, Strategy
from .keras_access import (
    call_model,
    compute_loss,
    loss_tracker,
    regularization_loss,
    unscale_loss_for_distribution,
)


class Gradients(NamedTuple):
    """What a provider's :meth:`~Provider.gradients` gives the step: per-variable gradients (or None), and the
    term values and total that the non-finite guard checks."""

    grads: list
    variables: list
    values: Any
    total: Any


@dataclass
class Forward:
    """What the forward pass under the tape produced."""

    y_pred: Any
    values: Any                 # [T]: this replica's term values
    loss: Any = None            # SinglePass: the trainer's loss
    scaled: Any = None          # the loss-scaled term values (SinglePass: the loss), stacked
    per_task: list | None = None  # the loss-scaled term values, each its own scalar
    present: Any = None         # [T]
    reg: Any = None             # the regularization losses (None without)
    scaled_reg: Any = None
    loss_scale: Any = None
    z: list | None = None       # Representation: the tensors Z
    parts: Any = None           # Representation: the composite's TermParts
    sub: list | None = None     # a strategy of k > 1 samples: per sub-batch, the loss-scaled term values


def batch_size(x):
    """The batch dimension of the first input."""
    return tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]


def _dense(g):
    return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


STITCH_MAX = 2 ** 15


def _stack(tensors):
    """``tf.stack(tensors)``; rows of up to ``STITCH_MAX`` elements as one DynamicStitch.

    Pack splits its copy across threads, which for small rows costs more than it saves
    (a 2-core CPU, 8 rows: 64×128, 30 µs against 12 µs; from 64×1024 up, Pack is as fast or faster).
    """
    def stitch():
        return tf.dynamic_stitch([tf.constant([i]) for i in range(len(tensors))], [t[None] for t in tensors])

    size = tensors[0].shape.num_elements()
    if size is None:        # a dynamic batch dimension: decided when the step runs
        return tf.cond(tf.size(tensors[0]) <= STITCH_MAX, stitch, lambda: tf.stack(tensors))
    return stitch() if size <= STITCH_MAX else tf.stack(tensors)


def _stack_rows(per_task, shape, dtype):
    return _stack([tf.zeros(shape, dtype) if g is None else _dense(g) for g in per_task])


def _all_reduce(values, jac):
    """Global term values and per-task gradients, in ONE all-reduce.

    (Independent collectives may run in a different order on each replica.)
    """
    if red.num_replicas() == 1:
        return values, jac
    n = values.shape[0]
    packed = red.cross_replica_sum(tf.concat([values, tf.reshape(tf.cast(jac, values.dtype), [-1])], 0))
    return packed[:n], tf.reshape(packed[n:], tf.shape(jac))


def _part(structure, j: int, k: int, size):
    """Every tensor of ``structure`` (None kept) cut to its ``j``-th of ``k`` contiguous parts along the batch."""
    start, stop = (size * j) // k, (size * (j + 1)) // k
    return tf.nest.map_structure(lambda t: None if t is None else t[start:stop], structure)


def _flat_rows(grads, variables, num):
    """``[T, P]`` rows of per-task gradients of ``variables`` (None: zeros), from a jacobian."""
    return tf.concat([tf.reshape(tf.zeros((num, *v.shape), v.dtype) if g is None else g, [num, -1])
                      for g, v in zip(grads, variables)], 1)


def _flat_row(grads, variables):
    """One task's gradient of ``variables`` as one row (None: zeros)."""
    return tf.concat([tf.reshape(tf.zeros_like(v) if g is None else _dense(g), [-1])
                      for g, v in zip(grads, variables)], 0)


def _with_regularization(tape, scaled_reg, trainable, grads):
    """``grads`` plus the gradients of the regularization losses."""
    if scaled_reg is None:
        return grads
    reg_grads = tape.gradient(scaled_reg, trainable)
    return [r if g is None else (g if r is None else g + _dense(r)) for g, r in zip(grads, reg_grads)]


def _own_gradients(strategy: Strategy, trainable, grads, values, s, present, ctx, fwd):
    """``grads`` with the gradients of the strategy's own trainable variables (IMTL's loss scales), which the
    per-task passes do not reach: global, so divided by the replicas (the optimizer sums them), loss-scaled."""
    own = strategy.variable_gradients(values, s, present, ctx)
    if own is None:
        return grads
    index = {id(v): k for k, v in enumerate(trainable)}
    grads = list(grads)
    for v, g in zip(strategy.trainable_variables, own):
        if id(v) in index:
            grads[index[id(v)]] = tf.stop_gradient(tf.cast(g, v.dtype)) * (fwd.loss_scale / ctx.replicas)
    return grads


def combine(strategy: Strategy, gram, values, present, ctx):
    """λ of a Gram or layer strategy (its ``combine``), its state updated."""
    return tf.stop_gradient(strategy.update_state(strategy.combine(gram, values, present, ctx)))


def aggregate(strategy: Strategy, rows, values, present, ctx):
    """``(update, λ)`` of a row aggregator (its ``aggregate``), its state updated."""
    update, result = strategy.aggregate(rows, values, present, ctx)
    return tf.stop_gradient(update), tf.stop_gradient(strategy.update_state(result))


# --- the providers --------------------------------------------------------------------------------


class Provider:
    """One way to get the gradients of a train step (see the module docstring)."""

    #: Whether the step's tape must be persistent (several backward passes).
    persistent = True

    def __init__(self, composite):
        self.composite = composite
        self.weighting = composite.weighting

    def forward(self, model, x, y, sample_weight) -> Forward:
        raise NotImplementedError

    def gradients(self, model, tape, fwd: Forward) -> Gradients:
        raise NotImplementedError

    def track(self, model, x, fwd: Forward, out: Gradients) -> None:
        """After the guard: the term tracker (with the weights as they now are) and the ``loss`` tracker."""
        composite, batch = self.composite, batch_size(x)
        composite.tracker.update_state(out.values * red.num_replicas(), composite.weights, batch, fwd.present)
        loss_tracker(model).update_state(unscale_loss_for_distribution(out.total), sample_weight=batch)


class SinglePass(Provider):
    """The trainer's loss and one backward pass (static weights, schedules, loss weighting)."""

    persistent = False

    def forward(self, model, x, y, sample_weight):
        y_pred = call_model(model, x)
        loss = compute_loss(model, x, y, y_pred, sample_weight)
        loss_tracker(model).update_state(unscale_loss_for_distribution(loss), sample_weight=batch_size(x))
        scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        # The composite tracked its terms in its own call (Keras's compute_loss).
        return Forward(y_pred, self.composite.last_values, loss=loss, scaled=scaled)

    def gradients(self, model, tape, fwd):
        trainable = model.trainable_weights
        grads = tape.gradient(fwd.scaled, trainable) if trainable else []
        return Gradients(grads, trainable, fwd.values, fwd.loss)

    def track(self, model, x, fwd, out):
        """Done in the forward pass, as Keras's step does."""
        return None         # a body besides the docstring: AutoGraph cannot convert an empty one


class PerTask(Provider):
    """The providers of per-task gradients: the forward pass, and the weights of the step."""

    def forward(self, model, x, y, sample_weight):
        y_pred = call_model(model, x)
        parts = self.composite.parts(y, y_pred, sample_weight)
        per_term = parts.values()
        fwd = self._scaled(model, Forward(y_pred, ops.stack(per_term), present=parts.present))
        # Each term's (scaled) value is its own scalar: its gradient touches only its subgraph.
        fwd.per_task = [v * fwd.loss_scale for v in per_term]
        fwd.scaled = ops.stack(fwd.per_task)
        k = self.weighting.strategy.samples
        if k > 1:            # independent samples within the step: the batch cut into k contiguous parts
            fwd.sub = [[v * fwd.loss_scale for v in
                        self.composite.parts(*_part((y, y_pred, sample_weight), j, k, batch_size(x)),
                                             present=False).values()] for j in range(k)]
        return fwd

    @staticmethod
    def _scaled(model, fwd: Forward) -> Forward:
        """The regularization losses and the optimizer's loss scale."""
        fwd.reg = regularization_loss(model)
        fwd.loss_scale = ops.convert_to_tensor(model.optimizer.scale_loss(ops.ones((), fwd.values.dtype)))
        fwd.scaled_reg = fwd.reg * fwd.loss_scale if fwd.reg is not None else None
        return fwd

    def inputs(self, fwd):
        """``(context, s, active)``: the strategy's context, static × schedule weights, the terms it sees."""
        ctx, s = self.weighting.context(), self.weighting.scale()
        return ctx, s, fwd.present * ops.cast(s > 0, "float32")

    def finish(self, fwd, grads, trainable, lam, eff, active) -> Gradients:
        """Record λ (collapse warning), write the effective weights; the total the guard checks."""
        self.weighting.record(lam, active)
        # The λ of a step whose scaled gradients overflowed (mixed float16) is not finite; the step is
        # skipped and the weights put back, so its total is taken with the weights as they were.
        weights = ops.where(ops.isfinite(eff), eff, ops.convert_to_tensor(self.composite.weights))
        total = ops.sum(weights * fwd.values) + (fwd.reg if fwd.reg is not None else 0.0)
        self.composite.weights.assign(eff)
        pairs = [(g, v) for g, v in zip(grads, trainable) if g is not None]
        return Gradients([g for g, _ in pairs], [v for _, v in pairs], fwd.values, total)


class Layer(PerTask):
    """GradNorm: the norms of ∇_W L_i for its layer W, then one backward pass of Σ s_i w_i L_i."""

    def gradients(self, model, tape, fwd):
        trainable = model.trainable_weights
        ctx, s, active = self.inputs(fwd)
        sq, global_values = self._squared_norms(tape, fwd, ctx)
        lam = combine(self.weighting.strategy, tf.linalg.diag(sq), global_values, active, ctx)
        eff = s * lam
        if fwd.reg is None:
            grads = tape.gradient(fwd.scaled, trainable, output_gradients=eff)
        else:
            grads = tape.gradient([fwd.scaled, fwd.scaled_reg], trainable,
                                  output_gradients=[eff, tf.ones_like(fwd.scaled_reg)])
        return self.finish(fwd, grads, trainable, lam, eff, active)

    def _squared_norms(self, tape, fwd, ctx):
        """``(‖∇_W L_i‖² [T], global values)``, the norms of the all-reduced gradients."""
        layer, num = self.weighting.layer, len(fwd.per_task)
        if self.weighting.vectorize:
            rows = _flat_rows(tape.jacobian(fwd.scaled, layer, experimental_use_pfor=True), layer, num)
        elif ctx.replicas == 1:     # the local gradients are the global ones: only their norms are needed
            sq = []
            for i in range(num):
                grads = tape.gradient(fwd.per_task[i], layer)
                sq.append(tf.add_n([tf.reduce_sum(tf.square(_dense(g))) for g in grads if g is not None]
                                   or [tf.zeros(())]))
            return tf.stack(sq) / tf.square(fwd.loss_scale), fwd.values
        else:
            rows = tf.stack([_flat_row(tape.gradient(fwd.per_task[i], layer), layer) for i in range(num)])
        global_values, jac = _all_reduce(fwd.values, rows)
        jac = jac / fwd.loss_scale
        return tf.reduce_sum(tf.square(jac), 1), global_values


class Parameters(PerTask):
    """Per-task gradients of every trainable variable; the strategy combines those of the shared ones."""

    def gradients(self, model, tape, fwd):
        trainable = model.trainable_weights
        ctx, s, active = self.inputs(fwd)
        per_var, connected = self._per_variable(tape, fwd, trainable)
        is_shared = self._shared(per_var, connected, trainable)
        update, lam, global_values = self._shared_update(fwd, per_var, is_shared, s, active, ctx, tape, trainable)
        eff = s * lam
        head = s * tf.stop_gradient(self.weighting.strategy.head_scale(global_values, active))
        grads, offset = [], 0
        for g, sh, v in zip(per_var, is_shared, trainable):
            if g is None:
                grads.append(None)
            elif sh and update is not None:
                size = int(np.prod(v.shape))
                grads.append(tf.reshape(update[offset:offset + size], v.shape))
                offset += size
            else:
                grads.append(tf.tensordot(eff if sh else head, g, 1))
        grads = _with_regularization(tape, fwd.scaled_reg, trainable, grads)
        grads = _own_gradients(self.weighting.strategy, trainable, grads, global_values, s, active, ctx, fwd)
        return self.finish(fwd, grads, trainable, lam, eff, active)

    def _per_variable(self, tape, fwd, trainable):
        """``([T, *shape] per variable or None, how many tasks reach each variable or None)``."""
        if self.weighting.vectorize:
            jac = tape.jacobian(fwd.scaled, trainable, experimental_use_pfor=True)
            return [None if j is None else _dense(j) for j in jac], None
        num = len(fwd.per_task)
        per_task = [tape.gradient(fwd.per_task[i], trainable) for i in range(num)]
        per_var, connected = [], []
        for k, v in enumerate(trainable):
            col = [per_task[i][k] for i in range(num)]
            connected.append(sum(g is not None for g in col))
            per_var.append(None if connected[-1] == 0 else _stack_rows(col, v.shape, v.dtype))
        return per_var, connected

    def _shared(self, per_var, connected, trainable) -> list[bool]:
        """Which variables the strategy combines: named, read off the graph, or reached by two or more tasks."""
        if getattr(self.weighting.strategy.params, "scope", "shared") == "all":      # PCGrad's whole gradient
            return [g is not None for g in per_var]
        if self.weighting.shared is not None:
            ids = {id(v) for v in self.weighting.shared}
            return [id(v) in ids for v in trainable]
        return [c >= 2 for c in connected]

    def _shared_update(self, fwd, per_var, is_shared, s, active, ctx, tape, trainable):
        """``(update of the shared part or None, λ, global values)`` from the strategy."""
        strategy, num = self.weighting.strategy, len(fwd.per_task)
        shared_rows = [tf.reshape(g, [num, -1]) for g, sh in zip(per_var, is_shared) if sh and g is not None]
        if not shared_rows:
            return None, tf.ones([num], "float32"), fwd.values * ctx.replicas
        if fwd.sub is not None:     # [k, T, P]: each sub-batch's per-task gradients of the shared variables
            shared = [v for v, g, sh in zip(trainable, per_var, is_shared) if sh and g is not None]
            rows = tf.stack([tf.stack([_flat_row(tape.gradient(v, shared), shared) for v in part])
                             for part in fwd.sub])
            global_values, jac = _all_reduce(fwd.values, rows)
            update, lam = aggregate(strategy, jac * s[None, :, None] / fwd.loss_scale, global_values * s, active,
                                    ctx)
            return update * fwd.loss_scale / ctx.replicas, lam, global_values
        global_values, jac = _all_reduce(fwd.values, tf.concat(shared_rows, 1))
        jac = jac * s[:, None] / fwd.loss_scale
        if strategy.active_kind() is RowAggregator:
            update, lam = aggregate(strategy, jac, global_values * s, active, ctx)
            return update * fwd.loss_scale / ctx.replicas, lam, global_values
        gram = tf.matmul(jac, jac, transpose_b=True)
        return None, combine(strategy, gram, global_values * s, active, ctx), global_values


class Representation(PerTask):
    """Per-task gradients of the shared representation Z (MGDA-UB), one backward pass through the trunk."""

    def forward(self, model, x, y, sample_weight):
        z, y_pred = self.weighting.representation(x, training=True)
        # The T passes start at the numerators: no per-term division.
        parts = self.composite.parts(y, y_pred, sample_weight)
        return self._scaled(model, Forward(y_pred, parts.stacked(), present=parts.present, z=z, parts=parts))

    def gradients(self, model, tape, fwd):
        """T short passes, each from one term's numerator back to Z and to the head variables through its
        head, with the output gradient ``s_i·loss_scale/den_i``: they give the rows s_i ∇_Z L_i and the
        heads' s_i ∇L_i (loss-scaled) with no further product.  The strategy works on the Gram matrix of
        the rows (summed over replicas: rows are local samples); one pass of the combined ∇_Z through the
        trunk gives the trunk's gradients."""
        trainable = model.trainable_weights
        ctx, s, active = self.inputs(fwd)
        rep, strategy = self.weighting.representation, self.weighting.strategy
        raw, per_head = self._rows(tape, fwd, s)                     # [T, N]: s_i ∇_Z L_i, loss-scaled
        inv = 1.0 / fwd.loss_scale
        global_values, gram = _all_reduce(fwd.values, tf.matmul(raw, raw, transpose_b=True) * (inv * inv))
        if strategy.active_kind() is RowAggregator:
            update, lam = aggregate(strategy, raw * inv, global_values * s, active, ctx)
            dz = update * fwd.loss_scale
        else:
            lam = combine(strategy, gram, global_values * s, active, ctx)
            dz = tf.matmul(tf.reshape(lam, [1, len(per_head)]), raw)                     # [1, N]
        trunk = tape.gradient(fwd.z, rep.trunk, output_gradients=self._pieces(dz, fwd.z))
        head_grads = self._head_gradients(strategy, per_head, rep.heads, global_values, active)
        found = {id(v): g for v, g in zip(rep.trunk + rep.heads, list(trunk) + head_grads)}
        grads = _with_regularization(tape, fwd.scaled_reg, trainable, [found.get(id(v)) for v in trainable])
        grads = _own_gradients(strategy, trainable, grads, global_values, s, active, ctx, fwd)
        return self.finish(fwd, grads, trainable, lam, s * lam, active)

    def _rows(self, tape, fwd, s):
        """``([T, N] rows s_i ∇_Z L_i, each task's gradients of the head variables)``, loss-scaled."""
        z, heads, nums = fwd.z, self.weighting.representation.heads, fwd.parts.numerators
        num = len(nums)
        coef = tf.unstack(tf.math.divide_no_nan(s * fwd.loss_scale, fwd.parts.denominators), num)
        rows, per_head = [], []
        for i in range(num):
            grads = tape.gradient(nums[i], [*z, *heads], output_gradients=coef[i])
            gz = [tf.zeros_like(t) if g is None else _dense(g) for g, t in zip(grads[:len(z)], z)]
            per_head.append(grads[len(z):])
            rows.append(gz[0] if len(z) == 1 else tf.concat([tf.reshape(g, [-1]) for g in gz], 0))
        return tf.reshape(_stack(rows), [num, -1]), per_head

    @staticmethod
    def _pieces(dz, z):
        """The combined gradient ``dz`` split into the shapes of the tensors Z."""
        if len(z) == 1:
            return [tf.reshape(dz, tf.shape(z[0]))]
        dz, pieces, offset = tf.reshape(dz, [-1]), [], 0
        for t in z:
            size = tf.reduce_prod(tf.shape(t))
            pieces.append(tf.reshape(dz[offset:offset + size], tf.shape(t)))
            offset += size
        return pieces

    @staticmethod
    def _head_gradients(strategy, per_head, heads, global_values, active):
        """Each head variable's gradient: the sum over tasks, scaled by the strategy's head scale (if any)."""
        num = len(per_head)
        # The heads' gradients already carry s_i; a strategy may scale them further (DB-MTL: 1/L_i).
        if type(strategy).head_scale is Strategy.head_scale:
            factor = [None] * num
        else:
            factor = tf.unstack(tf.stop_gradient(strategy.head_scale(global_values, active)), num)
        return [_combine_rows([(factor[i], per_head[i][k]) for i in range(num) if per_head[i][k] is not None])
                for k in range(len(heads))]


def _combine_rows(parts):
    """``Σ c·g`` over ``[(c, g)]`` (c None: 1; None for no parts); IndexedSlices stay sparse, as backprop
    sums them."""
    if not parts:
        return None

    def times(c, t):
        return t if c is None else t * tf.cast(c, t.dtype)

    if all(isinstance(g, tf.IndexedSlices) for _, g in parts):
        scaled = [tf.IndexedSlices(times(c, g.values), g.indices, g.dense_shape) for c, g in parts]
        if len(scaled) == 1:
            return scaled[0]
        return tf.IndexedSlices(tf.concat([g.values for g in scaled], 0), tf.concat([g.indices for g in scaled], 0),
                                scaled[0].dense_shape)
    dense = [times(c, _dense(g)) for c, g in parts]
    return dense[0] if len(dense) == 1 else tf.add_n(dense)


__all__ = ["STITCH_MAX", "Forward", "Gradients", "Layer", "Parameters", "PerTask", "Provider", "Representation",
           "SinglePass", "aggregate", "batch_size", "combine"]
