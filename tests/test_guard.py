"""The non-finite guard: a NaN or Inf in a term, the total or a gradient never reaches the weights."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import multiloss as ml
from multiloss.spec.errors import NonFiniteError

SPEC = {"outputs": {"a": {"loss": "mse"}, "b": {"loss": "mse", "weight": 0.5}}}


def _model(strategy=None, spec=SPEC, nonfinite="stop", jit=False, lr=0.1):
    with (strategy or tf.distribute.get_strategy()).scope():
        keras.utils.set_random_seed(0)
        x = keras.Input((3,))
        h = keras.layers.Dense(4, activation="tanh", name="trunk")(x)
        model = keras.Model(x, {"a": keras.layers.Dense(2, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})
        ml.compile(model, spec, optimizer=keras.optimizers.SGD(lr), nonfinite=nonfinite, jit_compile=jit)
    return model


def _data(bad_row=None, bad_head="b"):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = {"a": rng.normal(size=(8, 2)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    if bad_row is not None:
        y[bad_head][bad_row] = np.nan
    return x, y


def test_stop_names_the_term_epoch_and_step_and_keeps_the_weights():
    model = _model()
    x, y = _data(bad_row=5)                       # in the second batch of 4
    before = model.get_weights()
    with pytest.raises(NonFiniteError, match=r"in term 'b', the gradients at epoch 1, step 2; training stopped.*"
                                             r"a NaN target is a missing label only under `mask_value: \.nan`"):
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 1    # the first batch's update only
    reference = _model()
    reference.fit(x[:4], {k: v[:4] for k, v in y.items()}, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert np.isfinite(got).all()
    assert any(not np.allclose(g, s) for g, s in zip(model.get_weights(), before))


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_skip_withholds_exactly_the_bad_updates(jit):
    model = _model(nonfinite="skip", jit=jit)
    x, y = _data(bad_row=5)
    hist = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    assert hist["nonfinite_skipped"] == [1.0, 1.0]
    assert int(model.optimizer.iterations) == 2    # batch 1 of each epoch
    reference = _model()
    reference.fit(x[:4], {k: v[:4] for k, v in y.items()}, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("strategy, gradients", [("pcgrad", "parameters"), ("mgda", "representation"), ("dwa", None),
                                                 ("uncertainty", None)])
def test_weighting_strategies_train_steps_are_guarded(strategy, gradients):
    weighting = {"strategy": strategy, **({"gradients": gradients} if gradients else {})}
    spec = {**SPEC, "weighting": weighting}
    x, y = _data(bad_row=5)
    with pytest.raises(NonFiniteError, match=r"in term 'b'.* at epoch 1, step 2"):
        _model(spec=spec).fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    model = _model(spec=spec, nonfinite="skip")
    hist = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    assert hist["nonfinite_skipped"] == [1.0, 1.0] and int(model.optimizer.iterations) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(v) for v in model.loss.get_weights().values())


def test_a_nan_gradient_under_a_finite_loss_is_caught():
    """‖y − ŷ‖ at y = ŷ is 0, but its gradient is 0/0."""
    @ml.register_loss("_norm_for_guard_test")
    def norm(y_true, y_pred):
        return ops.sqrt(ops.sum(ops.square(y_true - y_pred), axis=-1))

    model = _model(spec={"outputs": {"a": {"loss": "_norm_for_guard_test"}, "b": {"loss": "mse"}}})
    x, y = _data()
    y["a"] = model.predict(x, verbose=0)["a"]      # the loss is exactly 0: finite
    with pytest.raises(NonFiniteError, match=r"non-finite values \(NaN or Inf\) in the gradients at epoch 1, "
                                             r"step 1"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0


@pytest.mark.slow
def test_mirrored_replicas_skip_together():
    """The NaN is in one replica's half only; both replicas withhold the update alike."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    model = _model(ml.mirrored_strategy(devices), nonfinite="skip")
    x, y = _data(bad_row=6)                                     # global batch 2, replica 2 only
    before = model.get_weights()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # two global batches of 4 (2 + 2)
    hist = model.fit(data, epochs=1, verbose=0).history
    assert hist["nonfinite_skipped"] == [1.0], hist
    assert int(model.optimizer.iterations.numpy()) == 1
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert any(not np.allclose(w, b) for w, b in zip(weights, before))
    for var in model.trainable_variables:   # both replicas hold the same values
        values = [v.numpy() for v in var.value.values]
        assert len(values) == 2 and all(np.array_equal(values[0], v) for v in values[1:]), var.path


INCREMENTAL = textwrap.dedent("""\
    name: nan_inc
    data: {source: digits}
    model: {builder: cnn, params: {filters: [4], dense: 8}}
    scenario: {initial: 2, increment: 4}
    method: {name: lwf}
    optimizer: {name: sgd, params: {learning_rate: 1.0e+30}}
    train: {epochs: 1, batch_size: 32}
""")


@pytest.mark.slow
def test_incremental_run_stops_on_nan_with_exit_status_3(tmp_path):
    path = tmp_path / "inc.yaml"
    path.write_text(INCREMENTAL + f"output_dir: {tmp_path / 'runs'}\n")
    out = subprocess.run([sys.executable, "-m", "multiloss", "incremental", str(path)], capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert out.returncode == 3, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "non-finite values (NaN or Inf) in term" in out.stderr
    assert not (tmp_path / "runs" / "nan_inc" / "metrics.json").exists()


def test_the_gradient_check_sees_every_nan_and_inf_and_passes_large_finite_values():
    """One sum per shape of gradient: NaN, +Inf, −Inf, +Inf with −Inf, and a NaN inside sparse (IndexedSlices)
    gradients all make it non-finite; finite gradients up to 1e30 do not."""
    import tensorflow as tf

    from multiloss.core.guard import gradient_sum

    dense = tf.ones((3, 4))

    def sparse(values):
        return tf.IndexedSlices(tf.constant(values, "float32"), tf.constant([0, 2]), tf.constant([5, 2]))

    def finite(*grads):
        return bool(tf.math.is_finite(gradient_sum(list(grads))))

    for bad in (np.nan, np.inf, -np.inf):
        assert not finite(dense, tf.constant([[1.0, bad]]))
    assert not finite(dense, tf.constant([np.inf, -np.inf]))            # their sum is NaN
    assert not finite(dense, sparse([[1.0, np.nan], [2.0, 3.0]]))
    assert finite(dense, sparse([[1.0, 2.0], [2.0, 3.0]]), None, tf.fill((4, 4), 1e30))
    assert finite()                                                      # no gradients at all
    # Gradients of one shape are added before the sum: a NaN in any of them still shows.
    assert not finite(dense, dense, dense * np.nan, tf.ones((4,)))
    assert finite(dense, 2.0 * dense, tf.ones((4,)), tf.ones((4,)))

    @tf.function(input_signature=[tf.TensorSpec((None, 2))] * 2)
    def rows_of_unknown_count(a, b):   # sparse rows of unknown count are never added to each other
        return tf.math.is_finite(gradient_sum([tf.IndexedSlices(a, tf.range(tf.shape(a)[0])),
                                                tf.IndexedSlices(b, tf.range(tf.shape(b)[0]))]))

    assert bool(rows_of_unknown_count(tf.ones((2, 2)), tf.ones((3, 2))))
    assert not bool(rows_of_unknown_count(tf.ones((2, 2)), tf.fill((3, 2), np.nan)))


def _conds(model, x, y) -> int:
    """How many ``If`` ops (``tf.cond``) the traced train step holds."""
    step = tf.function(lambda x, y: model.train_step((x, y)))
    graph = step.get_concrete_function(tf.constant(x), {k: tf.constant(v) for k, v in y.items()}).graph
    return sum(op.type in ("If", "StatelessIf") for op in graph.get_operations())


def test_stop_mode_fails_the_step_before_the_update_and_the_trackers_without_a_cond():
    """The default guard needs no ``tf.cond`` around the update (the cost benchmarks/overhead.py
    measures): the bad step fails before the optimizer runs."""
    x, y = _data(bad_row=5)
    assert _conds(_model(), x[:4], {k: v[:4] for k, v in y.items()}) == 0
    assert _conds(_model(nonfinite="skip"), x[:4], {k: v[:4] for k, v in y.items()}) == 1

    model = _model()
    with pytest.raises(NonFiniteError, match=r"in term 'b', the gradients at epoch 1, step 2"):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 1
    # The loss trackers are updated in the forward pass (as in Keras's step): the NaN shows, as on every path.
    assert np.isnan(float(model.get_metrics_result()["loss"]))


@pytest.mark.parametrize("way", ["eager", "steps_per_execution"])
def test_stop_mode_cuts_the_step_short_eagerly_and_inside_a_multi_step_execution(way):
    model = _model()
    if way == "eager":
        model.run_eagerly = True
    x, y = _data()
    x, y = np.concatenate([x, x]), {k: np.concatenate([v, v]) for k, v in y.items()}
    y["b"][9] = np.nan                                    # batch 3 of 4 (in the second execution of 2)
    if way == "steps_per_execution":
        ml.compile(model, SPEC, optimizer=keras.optimizers.SGD(0.1), steps_per_execution=2)
    with pytest.raises(NonFiniteError, match=r"in term 'b', the gradients at epoch 1, step 3"):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_an_error_of_the_users_own_code_is_not_taken_for_a_non_finite_step():
    @ml.register_loss("_raises_for_guard_test")
    def raises(y_true, y_pred):
        tf.debugging.assert_less(tf.reduce_max(y_true), -1e9, message="my own check")
        return ops.mean(ops.square(y_true - y_pred), axis=-1)

    model = _model(spec={"outputs": {"a": {"loss": "_raises_for_guard_test"}, "b": {"loss": "mse"}}})
    x, y = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match="my own check"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)


def _batches(y, rows):
    return {k: v[rows] for k, v in y.items()}


@pytest.mark.parametrize("jit", [False, True], ids=["cut_short", "xla_cond"])
def test_train_on_batch_raises_at_the_bad_batch_and_the_next_call_trains(jit):
    """Outside ``fit`` no callback reports the guard: ``train_on_batch`` itself raises, without the
    update, and the next finite batch trains as if the bad one had never been given."""
    model = _model(jit=jit)
    x, y = _data(bad_row=5)
    good, bad = slice(0, 4), slice(4, 8)
    model.train_on_batch(x[good], _batches(y, good))
    with pytest.raises(NonFiniteError, match=r"in term 'b', the gradients in a train step outside `fit`"):
        model.train_on_batch(x[bad], _batches(y, bad))
    model.train_on_batch(x[good], _batches(y, good))
    assert int(model.optimizer.iterations) == 2
    reference = _model()
    for _ in range(2):
        reference.train_on_batch(x[good], _batches(y, good))
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_train_on_batch_in_skip_mode_warns_of_the_skipped_batch():
    model = _model(nonfinite="skip")
    x, y = _data(bad_row=5)
    before = model.get_weights()
    with pytest.warns(UserWarning, match=r"skipped 1 batch\(es\) with non-finite values in term 'b'"):
        model.train_on_batch(x[4:], _batches(y, slice(4, 8)))
    assert int(model.optimizer.iterations) == 0
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_after_fit_raised_a_bad_train_on_batch_still_raises():
    model = _model()
    x, y = _data(bad_row=5)
    with pytest.raises(NonFiniteError, match="at epoch 1, step 2"):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    with pytest.raises(NonFiniteError, match="outside `fit`"):
        model.train_on_batch(x[4:], _batches(y, slice(4, 8)))
