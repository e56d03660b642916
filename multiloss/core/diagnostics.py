"""Where heads conflict: per-task gradient norms and pairwise cosine similarities.

For a batch, the per-task gradient g_i = ∇_θ L_i of every term's loss on the
*shared* parameters θ (see :mod:`multiloss.core.shared_params` for how they are
found) gives

* ``<term>_grad_norm`` = ‖g_i‖, and
* ``<a>__<b>_grad_cos`` = g_a·g_b / (‖g_a‖‖g_b‖) for every pair a < b
  (0 when either gradient is 0); negative values are conflicts.

:class:`GradientDiagnostics` adds both to the logs at the end of each epoch
(or every ``every`` epochs), on a fixed probe batch, so they land in
``model.fit``'s history and in TensorBoard (``model.fit`` puts multiloss's
callbacks before a ``TensorBoard`` callback).  The gradients are those of the
unweighted L_i, with the model in inference mode (``training=False``).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from .keras_access import compiled_loss


class TaskGradients(NamedTuple):
    """Per-task gradients on the shared parameters."""

    names: list[str]
    matrix: np.ndarray      # [T, P]: row i is g_i flattened
    variables: list         # the shared variables, in the order of the columns


def gradient_norms(matrix) -> np.ndarray:
    """‖g_i‖ for each row of ``matrix``."""
    return np.linalg.norm(np.asarray(matrix, "float64"), axis=1)


def cosine_similarity(matrix) -> np.ndarray:
    """Pairwise cosine similarity of the rows (0 where a row is 0)."""
    g = np.asarray(matrix, "float64")
    norms = np.linalg.norm(g, axis=1)
    denom = np.outer(norms, norms)
    return np.divide(g @ g.T, denom, out=np.zeros_like(denom), where=denom > 0)


def _shared_variables(model, composite, per_task):
    weighting = composite.weighting
    if weighting is not None and weighting.shared is not None:
        return weighting.shared
    from .shared_params import infer_shared

    shared = infer_shared(model, composite.terms)
    if shared is not None:
        return shared
    trainable = model.trainable_variables
    return [v for k, v in enumerate(trainable) if sum(g[k] is not None for g in per_task) >= 2]


def _per_task(model, x, y, sample_weight, training):
    composite = compiled_loss(model)
    trainable = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=training)
        values = composite.parts(y, y_pred, sample_weight).values()
    per_task = [tape.gradient(v, trainable) for v in values]
    del tape
    return per_task


def task_gradients(model, x, y, sample_weight=None, variables=None, training: bool = False) -> TaskGradients:
    """Per-task gradients of the shared parameters of a model compiled with ``ml.compile``.

    ``variables`` overrides the shared parameters.
    """
    from .composite import CompositeLoss

    composite = compiled_loss(model)
    if not isinstance(composite, CompositeLoss):
        raise TypeError("task_gradients needs a model compiled with ml.compile")
    per_task = _per_task(model, x, y, sample_weight, training)
    if variables is None:
        variables = _shared_variables(model, composite, per_task)
    index = {id(v): k for k, v in enumerate(model.trainable_variables)}
    rows = []
    for grads in per_task:
        parts = []
        for v in variables:
            g = grads[index[id(v)]]
            g = tf.zeros(v.shape, v.dtype) if g is None else tf.convert_to_tensor(g)
            parts.append(tf.reshape(g, [-1]))
        rows.append(tf.concat(parts, 0) if parts else tf.zeros([0]))
    matrix = np.stack([r.numpy() for r in rows]) if rows else np.zeros((0, 0))
    return TaskGradients(composite.term_names, matrix, list(variables))


def diagnostics_logs(grads: TaskGradients) -> dict[str, float]:
    """``{<term>_grad_norm, <a>__<b>_grad_cos}`` from per-task gradients."""
    norms = gradient_norms(grads.matrix)
    cos = cosine_similarity(grads.matrix)
    out = {f"{n}_grad_norm": float(v) for n, v in zip(grads.names, norms)}
    for i, a in enumerate(grads.names):
        for j in range(i + 1, len(grads.names)):
            out[f"{a}__{grads.names[j]}_grad_cos"] = float(cos[i, j])
    return out


class GradientDiagnostics(keras.callbacks.Callback):
    """Logs per-task gradient norms and pairwise cosines on the shared parameters each epoch.

    ``data`` is ``(x, y)`` or ``(x, y, sample_weight)`` — one probe batch —
    or a ``tf.data.Dataset`` whose first ``batches`` batches are averaged.
    """

    #: Placed before the user's callbacks by ``model.fit`` (its logs reach History and TensorBoard).
    multiloss_logs_first = True

    def __init__(self, data, every: int = 1, batches: int = 1, training: bool = False):
        super().__init__()
        self.data = data
        self.every = max(1, int(every))
        self.batches = max(1, int(batches))
        self.training = training

    def _batches(self):
        if isinstance(self.data, tf.data.Dataset):
            for item in self.data.take(self.batches):
                yield item if len(item) == 3 else (*item, None)
        else:
            item = tuple(self.data)
            yield item if len(item) == 3 else (*item, None)

    def compute(self) -> dict[str, float]:
        total, n = None, 0
        for x, y, sw in self._batches():
            g = task_gradients(self.model, x, y, sw, training=self.training)
            total = g if total is None else total._replace(matrix=total.matrix + g.matrix)
            n += 1
        return diagnostics_logs(total._replace(matrix=total.matrix / n))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 and logs is not None:
            logs.update(self.compute())


__all__ = ["GradientDiagnostics", "TaskGradients", "cosine_similarity", "diagnostics_logs",
           "gradient_norms", "task_gradients"]
