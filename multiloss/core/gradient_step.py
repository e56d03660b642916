"""The train step of the gradient strategies (GradNorm, PCGrad, MGDA, CAGrad).

It replaces Keras's ``train_step`` only when such a strategy is configured;
everything else (static, schedules, uncertainty, DWA, RLW) keeps Keras's own
step with one backward pass.  Per step:

1. One forward pass under a persistent tape; the composite gives each term's
   value L_i (per replica; exact global values are their cross-replica sum)
   and whether the term is present in the batch.
2. Per-task gradients, only where the strategy needs them:

   * GradNorm: ∇_W L_i for its layer W only (T short backward passes, each
     through one head to W; or one ``tape.jacobian`` with ``vectorize``), then
     one full backward pass of Σ s_i w_i L_i.
   * PCGrad / MGDA / CAGrad: ∇L_i for every trainable variable, in T
     backward passes — or, with ``weighting.vectorize: true``, in one
     vectorised ``tape.jacobian`` (``pfor``).  The gradients of the shared
     variables are stacked into G (``[T, P]``, all-reduced across replicas)
     and only the Gram matrix G Gᵀ reaches the strategy.

   * ``weighting.gradients: representation`` (MGDA-UB, Sener & Koltun §3.3):
     the forward pass also returns the shared representation Z (the trunk
     output the heads read); T short backward passes give s_i ∇_Z L_i (through
     the heads only; each starts at the term's numerator Σ W·L with the output
     gradient s_i/denominator), the strategy sees their Gram matrix (summed over
     replicas: each replica's rows are its own samples), and ONE backward pass
     of Σ_i s_i λ_i ∇_Z L_i through the trunk gives the trunk's gradients; the
     heads get s_i ∇L_i from the same T short passes (each also reaches the
     head variables), combined per variable.
   * A ``direct`` strategy (GradDrop, DB-MTL with averaging) gets the rows
     themselves and returns the update of the shared part.

3. The strategy returns λ; the shared variables get Σ_i s_i λ_i ∇L_i (local
   per-replica gradients, so the optimizer's cross-replica sum is exact), the
   task-specific ones s_i ∇L_i (GradNorm: s_i w_i ∇L_i for every variable),
   plus the gradient of the model's regularization losses.
4. The effective weights s·λ go into the composite's weights variable, and the
   loss tracker, the term tracker and the metrics are updated as in Keras.

Terms absent from the batch, and terms whose scaled weight s_i is 0, are
left out of the strategy (``present`` = 0).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..weighting.base import Strategy
from .guard import apply_if_finite, restore_unless, snapshot
from .keras_access import unpack_x_y_sample_weight, unscale_loss_for_distribution


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


def _batch_size(x):
    flat = [t for t in tf.nest.flatten(x) if t is not None]
    return tf.shape(flat[0])[0]


def _all_reduce(values, jac):
    """Global term values and per-task gradients, in ONE all-reduce.

    (Independent collectives may run in a different order on each replica.)
    """
    if red.num_replicas() == 1:
        return values, jac
    n = values.shape[0]
    packed = red.cross_replica_sum(tf.concat([values, tf.reshape(tf.cast(jac, values.dtype), [-1])], 0))
    return packed[:n], tf.reshape(packed[n:], tf.shape(jac))


def gradient_train_step(model, data, weighting):
    """One training step of a gradient strategy (see the module docstring)."""
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    composite = model._compile_loss
    strategy = weighting.strategy
    num = len(composite.terms)
    trainable = model.trainable_weights
    rep = weighting.representation if strategy.gradients == "shared" else None
    state = weighting.state_variables()
    saved = snapshot(state)     # put back if this step turns out non-finite
    with tf.GradientTape(persistent=True) as tape:
        if rep is not None:
            z, y_pred = rep(x, training=True)
            # The T passes start at the numerators (see _representation_step): no per-term division.
            nums, dens, present = composite.term_parts(y, y_pred, sample_weight)
            values = ops.divide_no_nan(ops.stack(nums), dens)
        else:
            y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
            per_term, present = composite._values(y, y_pred, sample_weight)
            values = ops.stack(per_term)
        reg = None
        if model.losses:
            reg = ops.sum(ops.stack([model._aggregate_additional_loss(extra) for extra in model.losses]))
        loss_scale = ops.convert_to_tensor(model.optimizer.scale_loss(ops.ones((), values.dtype)))
        if rep is None:
            # Each term's (scaled) value is its own scalar: its gradient touches only its subgraph.
            per_task_losses = [v * loss_scale for v in per_term]
            scaled = ops.stack(per_task_losses)
        scaled_reg = reg * loss_scale if reg is not None else None
    ctx = weighting.context()
    s = weighting.scale()
    active = present * ops.cast(s > 0, "float32")

    if strategy.gradients == "layer":                       # GradNorm
        layer = weighting.layer
        if weighting.vectorize:
            jac = tape.jacobian(scaled, layer, experimental_use_pfor=True)
            rows = tf.concat([tf.reshape(tf.zeros((num, *v.shape), v.dtype) if g is None else g, [num, -1])
                              for g, v in zip(jac, layer)], 1)
            global_values, jac = _all_reduce(values, rows)
            jac = jac / loss_scale
            sq = tf.reduce_sum(tf.square(jac), 1)
        elif ctx.replicas == 1:
            sq = []
            for i in range(num):
                grads = tape.gradient(per_task_losses[i], layer)
                sq.append(tf.add_n([tf.reduce_sum(tf.square(_dense(g))) for g in grads if g is not None]
                                   or [tf.zeros(())]))
            sq = tf.stack(sq) / tf.square(loss_scale)
            global_values = values
        else:
            rows = []
            for i in range(num):
                grads = tape.gradient(per_task_losses[i], layer)
                rows.append(tf.concat([tf.reshape(tf.zeros_like(v) if g is None else _dense(g), [-1])
                                       for g, v in zip(grads, layer)], 0))
            global_values, jac = _all_reduce(values, tf.stack(rows))
            jac = jac / loss_scale
            sq = tf.reduce_sum(tf.square(jac), 1)
        lam = tf.stop_gradient(strategy.combine(tf.linalg.diag(sq), global_values, active, ctx))
        eff = s * lam
        if reg is None:
            grads = tape.gradient(scaled, trainable, output_gradients=eff)
        else:
            grads = tape.gradient([scaled, scaled_reg], trainable,
                                  output_gradients=[eff, tf.ones_like(scaled_reg)])
    elif rep is not None:                                     # gradients: representation
        grads, lam = _representation_step(tape, strategy, rep, z, nums, dens, scaled_reg, values,
                                          s, active, ctx, loss_scale, trainable)
        eff = s * lam
    else:                                                     # PCGrad, MGDA, CAGrad, ...
        if weighting.vectorize:
            jac = tape.jacobian(scaled, trainable, experimental_use_pfor=True)
            per_var = [None if j is None else _dense(j) for j in jac]
            connected = None
        else:
            per_task = [tape.gradient(per_task_losses[i], trainable) for i in range(num)]
            per_var = []
            connected = []
            for k, v in enumerate(trainable):
                col = [per_task[i][k] for i in range(num)]
                connected.append(sum(g is not None for g in col))
                per_var.append(None if connected[-1] == 0 else _stack_rows(col, v.shape, v.dtype))
        if getattr(strategy.params, "scope", "shared") == "all":          # PCGrad's whole gradient
            is_shared = [g is not None for g in per_var]
        elif weighting.shared is not None:
            ids = {id(v) for v in weighting.shared}
            is_shared = [id(v) in ids for v in trainable]
        else:
            is_shared = [c >= 2 for c in connected]
        shared_rows = [tf.reshape(g, [num, -1]) for g, sh in zip(per_var, is_shared) if sh and g is not None]
        s_col = s[:, None]
        update = None
        global_values = values * ctx.replicas
        if shared_rows:
            global_values, jac = _all_reduce(values, tf.concat(shared_rows, 1))
            jac = jac * s_col / loss_scale
            if strategy.direct:
                update, lam = strategy.aggregate(jac, global_values * s, active, ctx)
                update = tf.stop_gradient(update) * loss_scale / ctx.replicas
                lam = tf.stop_gradient(lam)
            else:
                gram = tf.matmul(jac, jac, transpose_b=True)
                lam = tf.stop_gradient(strategy.combine(gram, global_values * s, active, ctx))
        else:
            lam = tf.ones([num], "float32")
        eff = s * lam
        head = s * tf.stop_gradient(strategy.head_scale(global_values, active))
        grads = []
        offset = 0
        for g, sh, v in zip(per_var, is_shared, trainable):
            if g is None:
                grads.append(None)
                continue
            if sh and update is not None:
                size = int(np.prod(v.shape))
                grads.append(tf.reshape(update[offset:offset + size], v.shape))
                offset += size
                continue
            grads.append(tf.tensordot(eff if sh else head, g, 1))
        if reg is not None:
            reg_grads = tape.gradient(scaled_reg, trainable)
            grads = [r if g is None else (g if r is None else g + _dense(r)) for g, r in zip(grads, reg_grads)]
    del tape

    weighting.record(lam, active)
    total = ops.sum(eff * values) + (reg if reg is not None else 0.0)
    pairs = [(g, v) for g, v in zip(grads, trainable) if g is not None]
    # The non-finite guard: a step with a NaN/Inf term, total or gradient is not applied.
    composite.weights.assign(eff)
    ok = composite.guard.update(values, total, [g for g, _ in pairs])
    if pairs:
        apply_if_finite(model.optimizer, pairs, ok)
    restore_unless(ok, state, saved)
    batch = _batch_size(x)
    composite.tracker.update_state(values * ctx.replicas, composite.weights, batch)
    model._loss_tracker.update_state(unscale_loss_for_distribution(total), sample_weight=batch)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)



def _representation_step(tape, strategy, rep, z, nums, dens, scaled_reg, values, s, active, ctx, loss_scale,
                         trainable):
    """``(gradients of every trainable variable, λ)`` with per-task gradients of the representation Z.

    T short passes, each from one term's numerator back to Z and to the head variables through
    its head, with the output gradient ``s_i·loss_scale/den_i``: they give the rows s_i ∇_Z L_i
    and the heads' s_i ∇L_i (loss-scaled) with no further product.  The strategy works on the
    Gram matrix of the rows (summed over replicas: rows are local samples); one pass of the
    combined ∇_Z through the trunk gives the trunk's gradients.
    """
    num = len(nums)
    heads = rep.heads
    coef = tf.unstack(tf.math.divide_no_nan(s * loss_scale, dens), num)
    rows, per_head = [], []
    for i in range(num):
        grads = tape.gradient(nums[i], [*z, *heads], output_gradients=coef[i])
        gz = [tf.zeros_like(t) if g is None else _dense(g) for g, t in zip(grads[:len(z)], z)]
        per_head.append(grads[len(z):])
        rows.append(gz[0] if len(z) == 1 else tf.concat([tf.reshape(g, [-1]) for g in gz], 0))
    raw = tf.reshape(_stack(rows), [num, -1])                  # [T, N]: s_i ∇_Z L_i, loss-scaled
    inv = 1.0 / loss_scale
    global_values, gram = _all_reduce(values, tf.matmul(raw, raw, transpose_b=True) * (inv * inv))
    if strategy.direct:
        update, lam = strategy.aggregate(raw * inv, global_values * s, active, ctx)
        dz = tf.stop_gradient(update) * loss_scale
        lam = tf.stop_gradient(lam)
    else:
        lam = tf.stop_gradient(strategy.combine(gram, global_values * s, active, ctx))
        dz = tf.matmul(tf.reshape(lam, [1, num]), raw)                     # [1, N]
    if len(z) == 1:
        pieces = [tf.reshape(dz, tf.shape(z[0]))]
    else:
        dz, pieces, offset = tf.reshape(dz, [-1]), [], 0
        for t in z:
            size = tf.reduce_prod(tf.shape(t))
            pieces.append(tf.reshape(dz[offset:offset + size], tf.shape(t)))
            offset += size
    trunk = tape.gradient(z, rep.trunk, output_gradients=pieces)
    # The heads' gradients already carry s_i; a strategy may scale them further (DB-MTL: 1/L_i).
    if type(strategy).head_scale is Strategy.head_scale:
        factor = [None] * num
    else:
        factor = tf.unstack(tf.stop_gradient(strategy.head_scale(global_values, active)), num)
    head_grads = [_combine_rows([(factor[i], per_head[i][k]) for i in range(num) if per_head[i][k] is not None])
                  for k in range(len(heads))]
    found = {id(v): g for v, g in zip(rep.trunk + heads, list(trunk) + head_grads)}
    grads = [found.get(id(v)) for v in trainable]
    if scaled_reg is not None:
        reg_grads = tape.gradient(scaled_reg, trainable)
        grads = [r if g is None else (g if r is None else g + _dense(r)) for g, r in zip(grads, reg_grads)]
    return grads, lam


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

