"""The composite loss: ``final_loss = Σ wᵢ·lossᵢ`` over named outputs.

:class:`CompositeLoss` is what ``ml.compile`` installs as the model's loss.
It speaks the interface Keras's trainer expects of its compiled loss
(``__call__``, ``build``, ``built``, ``metrics``), so ``fit``, ``evaluate``
and ``tf.distribute`` work unchanged.  Term weights live in one
non-trainable variable; per-term values and weights are tracked as exact
batch-size-weighted epoch means, the same convention as Keras's ``loss``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ..losses import reduction as red
from ..spec.errors import SpecError
from ..spec.loss_spec import LossSpec, Term, load_spec
from ..spec.loss_table import canonical_name, contract
from ..spec.validation import did_you_mean, unknown_key


def as_output_dict(y, names: list[str], what: str) -> dict:
    """Key ``y`` (a dict, a list in output order, or one tensor) by output name."""
    if isinstance(y, dict):
        return y
    if isinstance(y, (list, tuple)):
        if len(y) != len(names):
            raise ValueError(f"{what} is a list of {len(y)} but the model has {len(names)} outputs "
                             f"{names}; pass a dict keyed by output name")
        return dict(zip(names, y))
    if len(names) != 1:
        raise ValueError(f"{what} is a single tensor but there are outputs {names}; "
                         "pass a dict keyed by output name")
    return {names[0]: y}


class LossResult(NamedTuple):
    """What :meth:`CompositeLoss.compute` returns."""

    total: Any
    losses: dict[str, Any]
    weights: dict[str, Any]


class TermParts(NamedTuple):
    """What :meth:`CompositeLoss.parts` returns: L_i = Σ_replicas numerators[i] / denominators[i].

    The denominators hold no trainable dependency, so ∇L_i = ∇num_i / den_i: a
    backward pass can start at ``numerators[i]`` with the output gradient ``1/den_i``.
    """

    numerators: list        # per term, this replica's numerator (a scalar)
    denominators: Any       # [T], summed over replicas
    present: Any            # [T]: 1 where an element of the term has a nonzero weight (any replica); or None

    def values(self) -> list:
        """Each term's value, its own scalar: the gradient of one touches only that term's part of the graph."""
        return [ops.divide_no_nan(num, self.denominators[i]) for i, num in enumerate(self.numerators)]

    def stacked(self):
        """The term values as one ``[T]`` vector."""
        return ops.divide_no_nan(ops.stack(self.numerators), self.denominators)


class TermTracker(keras.metrics.Metric):
    """Epoch means of every term's loss and weight, in vector variables.

    Each batch counts in proportion to its size, among the batches that carry the term
    (``present``: an element with a nonzero weight); a batch without the term (all its labels
    missing, or another task's batch) leaves its means as they are; a term no batch of the epoch
    carried logs 0 for both (as ``tests/test_weighting_training.py`` expects of a head without labels).  When every batch carries every
    term, the logged ``loss`` equals Σ ``<term>_weight``·``<term>_loss`` (plus regularization) even
    when the last batch is smaller.
    """

    def __init__(self, term_names, name: str = "multiloss_terms", **kwargs):
        super().__init__(name=name, **kwargs)
        self.term_names = list(term_names)
        n = len(self.term_names)
        self.loss_sums = self.add_variable((n,), "zeros", name="loss_sums")
        self.weight_sums = self.add_variable((n,), "zeros", name="weight_sums")
        self.counts = self.add_variable((n,), "zeros", name="counts")

    def update_state(self, losses, weights, batch_size, present=None):
        """``present`` [T]: 1 for the terms this batch carries (None: all)."""
        n = ops.cast(batch_size, self.loss_sums.dtype)
        if present is not None:
            n = n * ops.cast(present, self.loss_sums.dtype)
        self.loss_sums.assign_add(ops.cast(losses, self.loss_sums.dtype) * n)
        self.weight_sums.assign_add(ops.cast(weights, self.weight_sums.dtype) * n)
        self.counts.assign_add(n * ops.ones_like(self.counts))

    def result(self):
        losses = self._mean(self.loss_sums)
        out = {f"{name}_loss": losses[i] for i, name in enumerate(self.term_names)}
        if tf.executing_eagerly():
            # Weights are read at epoch end only: as per-step outputs of the
            # compiled step they cost more than the loss itself on small models.
            weights = self._mean(self.weight_sums)
            out.update({f"{name}_weight": weights[i] for i, name in enumerate(self.term_names)})
        return out

    def _mean(self, sums):
        """``sums / counts``; 0 for a term no batch carried."""
        return ops.divide_no_nan(sums, self.counts)

    def get_config(self):
        return {"name": self.name, "term_names": self.term_names}


class CompositeLoss:
    """Σ wᵢ·lossᵢ over the terms of a :class:`LossSpec`.

    ``y_true`` and ``y_pred`` are dicts keyed by output (or target) name;
    lists and single tensors are matched to ``output_names``.
    ``sample_weight`` is one array for every term, or a dict keyed by head
    (or by a cross-output term's target).
    """

    def __init__(self, spec: LossSpec | dict | str, output_names=None):
        self.spec = load_spec(spec)
        self.terms: list[Term] = self.spec.resolve()
        self.output_names = list(output_names) if output_names else None
        self.name = "multiloss"
        self.dtype = "float32"
        names = [t.name for t in self.terms]
        self._index = {n: i for i, n in enumerate(names)}
        dynamic = _is_dynamic(self.spec)
        self.weights = keras.Variable(
            np.array([t.weight for t in self.terms], "float32"),
            trainable=False, name="multiloss_term_weights",
            # Dynamic weights are written inside the (replica) train step.
            **({"aggregation": "only_first_replica"} if dynamic else {}),
        )
        self.tracker = TermTracker(names)
        self.built = False
        #: The term values [T] of the latest call, for the train step's guard (same trace).
        self.last_values = None
        #: The non-finite guard's state (installed by ``ml.compile``).
        self.guard = None
        #: The weighting controller (strategy and schedules), or None for static weights.
        self.weighting = None
        if dynamic:
            from .weight_control import Weighting

            self.weighting = Weighting(self)
            self.weighting.refresh()

    # --- the interface Keras's trainer uses ----------------------------------

    @property
    def metrics(self) -> list:
        return [self.tracker]

    def build(self, y_true, y_pred) -> None:
        """Check static shapes before the first step (Keras calls this symbolically)."""
        yt, yp = self.keyed(y_true, "y_true"), self.keyed(y_pred, "y_pred")
        for t in self.terms:
            self._inputs(t, yt, yp)
        self.built = True

    def __call__(self, y_true, y_pred, sample_weight=None):
        result, values, present = self._compute(y_true, y_pred, sample_weight)
        first = next(iter(self.keyed(y_pred, "y_pred").values()))
        first = first[0] if isinstance(first, (list, tuple)) else first
        self.last_values = values
        # Per-replica values are fractions of the global value; scale back as
        # Keras does for its own `loss` tracker.
        self.tracker.update_state(values * red.num_replicas(), self.weights, ops.shape(first)[0], present)
        return result.total

    # --- public API ------------------------------------------------------------

    def compute(self, y_true, y_pred, sample_weight=None) -> LossResult:
        """Total, each term's unweighted value, and each term's current weight."""
        return self._compute(y_true, y_pred, sample_weight)[0]

    def elementwise(self, y_true, y_pred, sample_weight=None, terms=None) -> dict[str, tuple[Any, Any]]:
        """Each term's per-element values L and element weights W (None: all 1).

        A head evaluated per element (:func:`~multiloss.losses.reduction.per_element`: masked, or weighted
        per label) has L shaped like its prediction.

        ``terms``: the names of the terms to compute (default: every term; then
        ``y_true`` needs only those terms' targets).
        """
        y_true, y_pred = self.keyed(y_true, "y_true"), self.keyed(y_pred, "y_pred")
        self.check_weight_keys(sample_weight, y_true)
        chosen = self.terms if terms is None else [self.terms[self.term_index(n)] for n in terms]
        return {t.name: self._term(t, y_true, y_pred, sample_weight) for t in chosen}

    def parts(self, y_true, y_pred, sample_weight=None, present: bool = True) -> TermParts:
        """Each term's numerator and cross-replica denominator, and (``present``) whether it is in the batch.

        ``present=False`` leaves out the counts of nonzero-weight elements (``present`` is then None).
        """
        y_true = self.keyed(y_true, "y_true")
        y_pred = self.keyed(y_pred, "y_pred")
        self.check_weight_keys(sample_weight, y_true)
        replicas = red.num_replicas()
        nums, dens, nonzero = [], [], []
        for t in self.terms:
            values, weights = self._term(t, y_true, y_pred, sample_weight)
            if len(values.shape) == 0:
                # A scalar loss is a per-replica mean: each replica holds 1/R.
                num, den = values, ops.ones((), self.dtype)
            else:
                per_element = red.per_element(t.loss, y_pred[t.outputs[0]], t.mask_value,
                                              self._weight_of(t, sample_weight))
                num, den = red.numerator_denominator(values, weights, t.reduction, per_element)
                if t.reduction == "sum":
                    den = den / replicas
            nums.append(num)
            dens.append(den)
            if present:
                nonzero.append(_nonzero_count(values, weights, self.dtype))
        if not present:
            return TermParts(nums, red.cross_replica_sum(ops.stack(dens)), None)
        both = red.cross_replica_sum(ops.stack([ops.stack(dens), ops.stack(nonzero)]))
        return TermParts(nums, both[0], ops.cast(both[1] > 0, self.dtype))

    def check_weight_keys(self, sample_weight, y_true: dict) -> None:
        """Refuse a dict of sample weights with a key that is no output, term target or target given:
        a misspelt key would leave its head unweighted without a word."""
        if not isinstance(sample_weight, dict):
            return
        valid = list(dict.fromkeys([*(self.output_names or self.spec.outputs),
                                    *(t.target for t in self.terms if t.target is not None), *y_true]))
        unknown = [k for k in sample_weight if k not in valid]
        if unknown:
            raise SpecError([(("sample_weight",), None, f"{unknown_key(unknown[0], valid)} (the outputs, "
                              "the terms' targets and the targets given); a head without a key is unweighted")])

    def keyed(self, y, what: str) -> dict:
        """``y`` (a dict, a list in output order, or one tensor) keyed by output name."""
        return as_output_dict(y, self.output_names or list(self.spec.outputs), what)

    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]

    def term_index(self, name: str) -> int:
        """The position of term ``name`` (in ``terms``, ``weights`` and every ``[T]`` vector)."""
        if name not in self._index:
            raise KeyError(f"unknown term {name!r}; terms: {self.term_names}")
        return self._index[name]

    def get_weights(self) -> dict[str, float]:
        """Current term weights as Python floats.

        With ``schedules:`` and no strategy these are static × schedule at the optimizer's current
        step: the weights the next step uses (after ``fit``, and after loading a saved model).  With a
        ``weighting:`` strategy they are the effective weights (static × schedule × strategy) last
        computed: inside an epoch, the latest step's; after it (and after loading a saved model, at
        the step it was saved at), those the next epoch starts with.
        """
        if self.weighting is not None and self.weighting.strategy.name == "static":
            self.weighting.refresh()        # the schedule at the current step, not where it was computed
        elif self.weighting is not None:
            self.weighting.refresh_if_stale()   # a loaded model's: at the step it was saved at, not step 0
        return dict(zip(self.term_names, map(float, ops.convert_to_numpy(self.weights))))

    def get_static_weights(self) -> dict[str, float]:
        """The static weights (the spec's, or those :meth:`set_weights` gave), which the schedule and
        strategy weights multiply: ``set_weights(get_static_weights())`` changes nothing, where
        ``set_weights(get_weights())`` would make the effective weights the static ones."""
        target = self.weights if self.weighting is None else self.weighting.base
        return dict(zip(self.term_names, map(float, ops.convert_to_numpy(target))))

    def set_weights(self, weights: dict[str, float]) -> None:
        """Change term weights; takes effect at the next step (no retracing).

        With a ``weighting:`` strategy or ``schedules:`` this sets the static
        weights (:meth:`get_static_weights`), which multiply the schedule and strategy weights.
        """
        unknown = set(weights) - set(self._index)
        if unknown:
            raise KeyError(f"unknown term(s) {sorted(unknown)}; terms: {self.term_names}")
        vec = np.asarray(list(self.get_static_weights().values()), "float32")
        for name, w in weights.items():
            try:
                value = None if isinstance(w, (bool, np.bool_, str, bytes)) else float(w)
            except (TypeError, ValueError):
                value = None
            if value is None or not 0 <= value <= np.finfo(np.float32).max:     # a float32 weight, NaN out
                raise ValueError(f"weight of term {name!r} must be a finite number ≥ 0, got {w!r}")
            vec[self._index[name]] = value
        if self.weighting is None:
            self.weights.assign(vec)
        else:
            self.weighting.set_base(vec)

    def get_config(self) -> dict:
        if self.weighting is None:
            return {"spec": self.spec.to_dict(), "weights": self.get_weights(),
                    "output_names": self.output_names}
        return {"spec": self.spec.to_dict(), "weights": self.weighting.get_base(),
                "output_names": self.output_names, "weighting": self.weighting.get_config()}

    @classmethod
    def from_config(cls, config: dict) -> CompositeLoss:
        obj = cls(load_spec(config["spec"], name="<saved model>"), config.get("output_names"))
        obj.set_weights(config.get("weights", {}))
        if obj.weighting is not None and "weighting" in config:
            obj.weighting.set_config(config["weighting"])
        return obj

    # --- internals ---------------------------------------------------------------

    def _where(self, term: Term, msg: str) -> SpecError:
        return self.spec.error([(term.path, f"term {term.name!r}: {msg}")])

    def _inputs(self, t: Term, y_true: dict, y_pred: dict):
        missing = [o for o in t.outputs if o not in y_pred]
        if missing:
            raise self._where(t, f"the model has no output {missing[0]!r}; outputs: {sorted(y_pred)}")
        preds = [_full_precision(y_pred[o]) for o in t.outputs]
        pred = preds[0] if len(preds) == 1 else preds
        target = None
        if t.target is not None:
            if t.target not in y_true:
                raise self._where(t, f"y has no target {t.target!r}; "
                                     f"{did_you_mean(t.target, [str(k) for k in y_true])}targets given: {sorted(y_true)}")
            target = y_true[t.target]
            if target is not None and not hasattr(target, "shape"):      # a plain Python list
                target = ops.convert_to_tensor(target)
            if target is not None and not isinstance(pred, list):
                self._check_shapes(t, target, pred)
        return target, pred

    def _check_shapes(self, t: Term, target, pred) -> None:
        kind = t.loss.target
        if kind == "custom":
            return
        ts, ps = tuple(target.shape), tuple(pred.shape)
        if kind == "sparse":
            want = ps[:-1]
            ts = ts[:-1] if len(ts) == len(ps) and ts[-1] == 1 else ts
            rule = f"integer class ids shaped {want} (the prediction without its class axis)"
        else:
            want = ps
            if len(ts) == len(ps) - 1 and ps[-1] == 1:
                ts = ts + (1,)
            rule = f"targets shaped like the prediction {ps}"
        ok = len(ts) == len(want) and all(a is None or b is None or a == b for a, b in zip(ts, want))
        if not ok:
            raise self._where(
                t, f"target shape {tuple(target.shape)} cannot match prediction shape {ps}: "
                   f"loss {t.loss_label!r} expects {rule}")

    def _check_sample_weight(self, t: Term, sw: Any) -> Any:
        """A sample weight is finite and ≥ 0: a negative one would maximise the term's loss on its examples
        (Keras accepts it), a NaN poison the total.  In a graph, one assert on the host, as for labels."""
        rule = "sample weights must be finite numbers ≥ 0 (a weight of 0 leaves the example out)"
        if tf.executing_eagerly():
            arr = np.asarray(ops.convert_to_numpy(sw), dtype="float64")
            bad = arr[~(np.isfinite(arr) & (arr >= 0))]
            if bad.size:
                raise self._where(t, f"its sample weight holds {bad[0]:g}; {rule}")
            return sw
        sw = ops.convert_to_tensor(sw)
        flat = tf.reshape(tf.cast(sw, "float32"), [-1])
        ok = tf.logical_and(tf.math.is_finite(flat), flat >= 0)
        return self._asserted(t, sw, flat, ok, f"its sample weight holds {{}}; {rule}")

    def _check_labels(self, t: Term, ids, n_classes: int):
        rule = f"out of range for sparse loss {t.loss_label!r}: valid class ids are 0..{n_classes - 1}"
        if tf.executing_eagerly():
            arr = ops.convert_to_numpy(ids)
            if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
                bad = arr[(arr < 0) | (arr >= n_classes)][0]
                raise self._where(t, f"label {bad} {rule}")
            return ids
        # In a graph the check is an assert whose message core.model.guard_labels
        # turns back into one SpecError line (with the first bad label).
        flat = tf.reshape(ids, [-1])
        ok = tf.logical_and(flat >= 0, flat < tf.cast(n_classes, flat.dtype))
        return self._asserted(t, ids, flat, ok, f"label {{}} {rule}")

    def _check_label_range(self, t: Term, target, label_range: tuple[float, float]):
        """Targets outside the range a loss declared (contrastive's [0, 1]): a −1/+1 pair label gave a
        negative loss that training then maximised."""
        low, high = label_range
        rule = f"is not in {low:g}..{high:g}, the labels {t.loss_label!r} takes"     # no "]": see guard_labels
        if canonical_name(t.loss) == "contrastive":
            rule += " (1 for a same pair, 0 for a different one)"
        if tf.executing_eagerly():
            arr = np.asarray(ops.convert_to_numpy(target), "float32").ravel()
            bad = arr[~((arr >= low) & (arr <= high))]
            if bad.size:
                raise self._where(t, f"label {bad[0]:g} {rule}")
            return target
        flat = tf.reshape(tf.cast(target, "float32"), [-1])
        return self._asserted(t, target, flat, (flat >= low) & (flat <= high), f"label {{}} {rule}")

    def _asserted(self, t: Term, value: Any, flat: Any, ok: Any, message: str) -> Any:
        """``value`` after a graph assert that every ``ok`` holds, naming the first entry of ``flat`` that
        fails in ``message`` (its ``{}``); ``core.model.guard_labels`` turns it into one SpecError line."""
        msg = label_check_message(*self.spec.locate(t.path), f"term {t.name!r}: {message}")
        check = tf.debugging.Assert(tf.reduce_all(ok), [msg, tf.boolean_mask(flat, tf.logical_not(ok))[:1]],
                                    summarize=1)
        with tf.control_dependencies([check]):
            return tf.identity(value)

    @staticmethod
    def _weight_of(t: Term, sample_weight):
        """The sample weight of term ``t``: its target's in a dict, or the one array for every term."""
        return sample_weight.get(t.target) if isinstance(sample_weight, dict) else sample_weight

    def _check_class_weight_ids(self, t: Term, pred) -> None:
        """Ids beyond the prediction's classes weight nothing: refused when tracing (``ml.compile``
        refuses them earlier where the model's output shapes are known, not on a subclassed model)."""
        head = t.outputs[0]
        problem = red.class_weight_problem(t.class_weight, tuple(pred.shape), red.class_axis(t.loss), f"output {head!r}")
        if problem:
            raise self.spec.error([(self.spec.head_path(head, "class_weight"), problem)])

    @staticmethod
    def _own_target_hint(t: Term, sw, values) -> str:
        """For a per-sample term (Dice) given its target's per-element weight: how to weight it apart."""
        if sw is None or len(getattr(sw, "shape", np.shape(sw))) <= len(values.shape):
            return ""
        whose = f"target {t.target!r}'s sample weight" if t.target else "the one sample_weight of every term"
        return (f". Term {t.name!r} is weighted by {whose}; to weight it apart from that head, give the term a "
                f"target of its own (`target: {t.name}_{t.target or 'y'}`, the same labels under that key in y) "
                "and sample_weight as a dict, where that key is left out (unweighted) or has a [B] weight")

    def _check_sparse_axis(self, t: Term, pred) -> None:
        """Keras's sparse crossentropy on TensorFlow takes its classes from the last axis only."""
        axis, rank = red.class_axis(t.loss), len(pred.shape)
        if canonical_name(t.loss) == "sparse_categorical_crossentropy" and rank and axis % rank != rank - 1:
            raise self._where(
                t, f"sparse_categorical_crossentropy with axis {axis} on a prediction of shape {tuple(pred.shape)}: "
                   "Keras's TensorFlow backend supports only the last axis; for a channels-first prediction use "
                   "categorical_crossentropy with one-hot targets and `params: {axis: 1}`, or put the classes last")

    def _term(self, t: Term, y_true: dict, y_pred: dict, sample_weight):
        """Per-element values L and element weights W (or None) for one term."""
        target, pred = self._inputs(t, y_true, y_pred)
        factors, valid, described = [], None, {}
        if t.mask_value is not None:
            # Missing targets are replaced by 0 so that no NaN can leak through 0·L.
            target, valid = red.mask_targets(target, t.mask_value)
        label_range = contract(t.loss.name).label_range
        if label_range is not None and target is not None:
            target = self._check_label_range(t, target, label_range)
        sparse = t.loss.target == "sparse"
        if sparse and not isinstance(pred, list):
            self._check_sparse_axis(t, pred)
        if sparse and "ignore_class" not in t.loss.params and not isinstance(pred, list):
            axis = red.class_axis(t.loss)
            ids = self._check_labels(t, red.class_ids(target, pred, True, axis), pred.shape[axis])
            if not tf.executing_eagerly():
                # The loss must consume the checked ids: otherwise TensorFlow may run
                # the loss first and fail with its own message about the label.
                target = ops.reshape(ops.cast(ids, target.dtype), ops.shape(target))
        sw = self._weight_of(t, sample_weight)
        if red.per_element(t.loss, pred, t.mask_value, sw):
            values = red.per_element_values(t.loss, target, pred)
        else:
            values = t.loss(target, pred)
        values = self._check_values(t, values, target, pred)
        if sw is not None:
            factors.append(("sample_weight", self._check_sample_weight(t, sw)))
        if t.class_weight:
            self._check_class_weight_ids(t, pred)
            ids = red.class_ids(target, pred, sparse, red.class_axis(t.loss))
            factors.append(("class_weight", red.class_weight_map(ids, t.class_weight, values.dtype)))
        if valid is not None:
            mask = red.reduce_axes_to(valid, len(values.shape), red.loss_axes(t.loss.params))
            shown = f"the mask derived from mask_value on y_true of shape {tuple(valid.shape)}"
            if len(mask.shape) != len(valid.shape):
                shown += f" (per position: {tuple(mask.shape)})"
            factors.append(("mask_value", mask))
            described["mask_value"] = shown
        if len(values.shape) == 0 and factors:
            raise self._where(
                t, f"its loss returns a scalar, so {' and '.join(k for k, _ in factors)} cannot apply; "
                   "return per-sample values shaped [B] or per-element values [B, d1..dk] instead")
        try:
            factors = [(k, red.align(f, values, k, described.get(k))) for k, f in factors]
        except ValueError as exc:
            raise self._where(t, str(exc) + self._own_target_hint(t, sw, values)) from None
        weights = None
        for _, f in factors:
            weights = f if weights is None else weights * f
        if valid is not None:
            values = ops.where(ops.cast(weights, "bool"), values, ops.zeros_like(values))
        return values, weights

    def _check_values(self, t: Term, values, target, pred):
        """The loss's values L as a float tensor, checked against the term's contract: L is ``[B]`` or
        ``[B, d1..dk]``, its further axes axes of ``y_pred`` (or ``y_true``) past the batch, in order; for a
        term over several outputs only the batch axis is checked (its values may be per pair).

        The check is on static shapes, so it costs nothing per step; only where L has a size unknown
        when tracing at an axis whose size the output fixes (a loss that broadcasts ``[B, 1]`` against
        ``[1, B]`` gives ``[None, None]`` for ``[None, 1]``), the step checks L's size there: a few
        integer ops on the shapes and one assert on the host, no device work (XLA drops the assert).
        """
        if values is None or not _is_numeric(values):
            got = "None" if values is None else f"{type(values).__name__} {values!r}"[:80]
            raise self._where(t, f"its loss returns {got}; a loss must return a tensor of per-sample values "
                                 "[B] or per-element values [B, d1..dk]")
        values = ops.cast(values, self.dtype)
        shape = red.static_shape(values)
        if not shape:       # a scalar (refused where weights apply), or a rank unknown when tracing
            return values
        several = isinstance(pred, list)
        names = [f"y_pred[{i}]" if several else "y_pred" for i in range(len(pred) if several else 1)]
        refs = {n: red.static_shape(p) for n, p in zip(names, pred if several else [pred])}
        if target is not None:
            refs["y_true"] = red.static_shape(target)
        refs = {n: s for n, s in refs.items() if s is not None}
        if not refs:
            return values
        found = red.check_loss_shape(shape, refs, batch_only=several)
        outputs = ", ".join(map(repr, t.outputs))
        of = f"output{'s' if several else ''} {outputs} ({', '.join(f'{n} {s}' for n, s in refs.items())})"
        valid = ("[B, ...] with B the batch axis" if several else
                 "[B] or [B, d1..dk] with d1..dk axes of y_pred or y_true past the batch, in their order (e.g. "
                 + " or ".join(map(str, red.valid_loss_shapes(refs))) + ")")
        if found.problem is not None:
            raise self._where(t, f"its loss returns values L of shape {shape}, which cannot be per-sample or "
                                 f"per-element values of {of}: {found.problem}; L must be {valid}")
        if not found.pending or tf.executing_eagerly():
            return values
        sizes = tf.shape(values)
        ok = tf.reduce_any(tf.stack([tf.reduce_all(tf.stack([tf.equal(sizes[a], n) for a, n in alt]))
                                     for alt in found.pending]))
        axis = found.pending[0][0][0]
        # No "]" in the message: core.model.guard_labels reads it up to the first one.
        msg = label_check_message(
            *self.spec.locate(t.path),
            f"term {t.name!r}: its loss returns values L of shape {shape} with {{}} entries on axis {axis}, "
            f"which cannot be per-sample or per-element values of {of}: L must be "
            + valid.replace("[", "(").replace("]", ")"))
        check = tf.debugging.Assert(ok, [msg, sizes[axis]], summarize=1)
        with tf.control_dependencies([check]):
            return tf.identity(values)

    def _compute(self, y_true, y_pred, sample_weight):
        """``(LossResult, values [T], present [T] or None)``; ``present`` is counted only with sample
        weights (without them every term with a target is in every batch, unless masked: ``mask_value``)."""
        counted = sample_weight is not None or any(t.mask_value is not None for t in self.terms)
        if self.weighting is None:
            parts = self.parts(y_true, y_pred, sample_weight, present=counted)
            values = parts.stacked()
            weights = ops.convert_to_tensor(self.weights)
            total = ops.sum(values * weights)
        else:
            parts = self.parts(y_true, y_pred, sample_weight)
            values = ops.stack(parts.values())
            total, weights = self.weighting.objective(values, parts.present)
        names = self.term_names
        result = LossResult(
            total,
            {n: values[i] for i, n in enumerate(names)},
            {n: weights[i] for i, n in enumerate(names)},
        )
        return result, values, parts.present


LABEL_CHECK = "multiloss label check"


def label_check_message(source: str, path: tuple, message: str) -> str:
    """The text of a graph-mode label assert: parsed back by ``core.model.guard_labels``."""
    return f"{LABEL_CHECK}|{source}|{'.'.join(map(str, path))}|{message}"


def _is_numeric(x) -> bool:
    """Whether ``x`` converts to a tensor of numbers (or booleans): what a loss returns."""
    try:
        dtype = keras.backend.standardize_dtype(x.dtype if hasattr(x, "dtype") else ops.convert_to_tensor(x).dtype)
    except (TypeError, ValueError):
        return False
    return dtype == "bool" or "int" in dtype or "float" in dtype


def _full_precision(x):
    """A float16 or bfloat16 output (mixed precision) in float32: the losses compute in float32, as
    Keras's own do (``Loss.dtype``).  Plain Python lists become tensors."""
    if x is not None and not hasattr(x, "dtype"):
        x = ops.convert_to_tensor(x)
    if x is not None and keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def _nonzero_count(values, weights, dtype):
    """How many elements of L carry a nonzero weight (all of them when W is None)."""
    if weights is None:
        return ops.cast(ops.size(values), dtype)
    return ops.sum(ops.cast(ops.not_equal(weights, 0), dtype))


def _is_dynamic(spec: LossSpec) -> bool:
    """Whether a spec needs the weighting controller (a strategy other than static, or schedules)."""
    return bool(spec.schedules) or (spec.weighting is not None and spec.weighting.strategy != "static")
