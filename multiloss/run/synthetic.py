"""Synthetic targets for ``multiloss check`` without ``--data``.

Each target is made for the losses that read it: class ids for sparse losses,
label sequences for CTC, one-hot rows for categorical losses, 0/1 values for
binary ones, positive reals for regression, teacher logits for distillation.
Every candidate is tried through the composite loss itself (the same shape
checks, label checks and masking as in training); the first one that every
term reading that target accepts is kept.  When none fits, a
:class:`~multiloss.spec.errors.SpecError` names the term and says to pass ``--data``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..spec.errors import SpecError
from ..spec.loss_table import canonical_name

_ONE_HOT = {"categorical_crossentropy", "categorical_focal_crossentropy", "kl_divergence",
            "categorical_hinge", "cosine_similarity", "poisson"}
_BINARY = {"binary_crossentropy", "binary_focal_crossentropy", "hinge", "squared_hinge", "dice", "tversky"}
_REAL = {"mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
         "mean_squared_logarithmic_error", "huber", "log_cosh"}
_LABELS = {"sparse_categorical_crossentropy", "categorical_generalized_cross_entropy"}


def _shape(pred) -> tuple[int, ...]:
    return tuple(int(d) for d in (pred[0] if isinstance(pred, list) else pred).shape)


def _one_hot(shape, rng):
    return np.eye(shape[-1], dtype="float32")[rng.integers(0, shape[-1], size=shape[:-1])]


def _candidates(kind: str | None, pred, rng) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """``(description, maker)`` pairs, the most fitting first."""
    shape = _shape(pred)
    batch = shape[0]
    same = not isinstance(pred, list)
    c = {
        "labels": ("class ids", lambda: rng.integers(0, max(shape[-1], 1), size=shape[:-1]).astype("int32")),
        "one_hot": ("one-hot rows", lambda: _one_hot(shape, rng)),
        "binary": ("0/1 values", lambda: rng.integers(0, 2, size=shape).astype("float32")),
        "real": ("positive reals", lambda: rng.uniform(0.5, 1.5, size=shape).astype("float32")),
        "logits": ("logits", lambda: rng.normal(size=shape).astype("float32")),
        "pair": ("0/1 per sample", lambda: rng.integers(0, 2, size=(batch,)).astype("float32")),
        "group": ("class ids per sample", lambda: rng.integers(0, max(1, batch // 2), size=(batch,))
                  .astype("int32")),
    }
    if shape[-1] < 2:
        del c["one_hot"]
    if len(shape) == 3 and shape[-1] >= 2:
        length = max(1, shape[1] // 2)
        c["ctc"] = ("label sequences", lambda: rng.integers(1, shape[-1], size=(batch, length)).astype("int32"))
    order = {
        "ctc": ["ctc"], "circle": ["group"], "contrastive": ["pair"], "triplet": ["pair"],
        "knowledge_distillation": ["logits"],
    }.get(kind)
    if order is None:
        if kind in _LABELS:
            order = ["labels"]
        elif kind in _ONE_HOT:
            order = ["one_hot"]
        elif kind in _BINARY:
            order = ["binary"]
        elif kind in _REAL:
            order = ["real"]
        else:
            order = []
    fallback = (["one_hot", "binary", "labels"] if same else []) + ["pair", "group", "ctc"]
    keys = list(dict.fromkeys(k for k in order + fallback if k in c))
    return [c[k] for k in keys]


def synthetic_targets(composite, y_pred: dict, batch: int, rng: np.random.Generator) -> dict:
    """Targets for every term of ``composite``, keyed like ``y``, that its losses accept.

    Raises :class:`SpecError` naming the term when no synthetic target fits.
    """
    by_target: dict[str, list] = {}
    for t in composite.terms:
        if t.target is not None:
            by_target.setdefault(t.target, []).append(t)
    y: dict[str, np.ndarray] = {}
    for target, terms in by_target.items():
        first = terms[0]
        preds = [y_pred[o] for o in first.outputs if o in y_pred]
        if len(preds) != len(first.outputs):
            continue  # the composite names the missing output itself
        pred = preds[0] if len(preds) == 1 else preds
        tried, chosen = [], None
        for what, make in _candidates(canonical_name(first.loss), pred, rng):
            candidate = make()
            if _fits(composite, terms, target, candidate, y_pred):
                chosen = candidate
                break
            tried.append(f"{what} {candidate.shape}")
        if chosen is None:
            names = ", ".join(repr(t.name) for t in terms)
            raise composite.spec.error([(first.path, (
                f"term {names}: no synthetic target fits loss {first.loss_label!r} on a prediction "
                f"shaped {_shape(pred)} (tried {'; '.join(tried)}); pass real data with "
                "`--data package.module:function` returning (x, y)"))])
        y[target] = chosen
    return y


def _fits(composite, terms, target: str, candidate, y_pred: dict) -> bool:
    for t in terms:
        try:
            values, _ = composite.elementwise({target: candidate}, y_pred, terms=[t.name])[t.name]
            if not np.all(np.isfinite(np.asarray(values))):
                return False
        except (SpecError, ValueError, TypeError, IndexError):
            return False
        except Exception as exc:  # TensorFlow's InvalidArgumentError and friends
            if type(exc).__module__.startswith(("tensorflow", "keras")):
                return False
            raise
    return True


__all__ = ["synthetic_targets"]
