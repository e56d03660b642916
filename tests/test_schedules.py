"""Weight schedules: every kind against its formula, validation, and the logged weights of a fit."""

import math

import keras
import numpy as np
import pytest

import multiloss as ml
from multiloss.spec import schedules


def _reference(kind, start, end, steps, warmup, stages, step):
    """The schedule formulas of the docs, written out independently in plain Python."""
    if step <= warmup:
        u = 0.0
    else:
        u = min(1.0, (step - warmup) / steps)
    if kind == "linear":
        return start + (end - start) * u
    if kind == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * u)) / 2
    if kind == "exponential":
        return start * (end / start) ** u
    return start + (end - start) * math.floor(u * stages) / stages


CASES = [
    ("linear", 0.0, 0.5, 1000, 100, 1),
    ("linear", 2.0, 0.1, 7, 0, 1),
    ("cosine", 1.0, 0.0, 50, 10, 1),
    ("cosine", 0.2, 0.9, 3, 0, 1),
    ("exponential", 1e-3, 1.0, 40, 5, 1),
    ("exponential", 4.0, 0.5, 9, 0, 1),
    ("step", 0.0, 1.0, 100, 20, 1),
    ("step", 1.0, 0.0, 90, 0, 3),
]


@pytest.mark.parametrize("kind,start,end,steps,warmup,stages", CASES)
def test_every_kind_matches_its_formula(kind, start, end, steps, warmup, stages):
    spec = schedules.ScheduleSpec(kind=kind, start=start, end=end, steps=steps, warmup=warmup, stages=stages)
    probe = sorted({0, 1, warmup - 1, warmup, warmup + 1, warmup + steps // 3, warmup + steps // 2,
                    warmup + steps - 1, warmup + steps, warmup + steps + 1, 10 * (warmup + steps)} - {-1})
    got = [float(schedules.factor(spec, s)) for s in probe]
    want = [_reference(kind, start, end, steps, warmup, stages, s) for s in probe]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Holds start through the warm-up and end after the ramp.
    assert got[0] == pytest.approx(start, abs=1e-6)
    assert got[-1] == pytest.approx(end, rel=1e-5)


def test_step_kind_jumps_exactly_at_the_stage_boundaries():
    spec = schedules.ScheduleSpec(kind="step", start=1.0, end=0.0, steps=90, warmup=10, stages=3)
    got = {s: float(schedules.factor(spec, s)) for s in (10, 39, 40, 69, 70, 99, 100)}
    assert got == pytest.approx({10: 1.0, 39: 1.0, 40: 2 / 3, 69: 2 / 3, 70: 1 / 3, 99: 1 / 3, 100: 0.0})


@pytest.mark.parametrize("yaml_text,where,message", [
    ("schedules: {a: {kind: linar, steps: 10}}", "schedules.a.kind",
     "linear"),
    ("schedules: {a: {kind: exponential, start: 0.0, end: 1.0, steps: 10}}", "schedules.a",
     "exponential schedule needs start > 0"),
    ("schedules: {a: {kind: linear, steps: 0}}", "schedules.a.steps", "must be > 0"),
    ("schedules: {a: {kind: linear, steps: true}}", "schedules.a.steps", "valid integer, got True"),
    ("schedules: {a: {kind: linear, steps: 5, speed: 2}}", "schedules.a.speed", "unknown key 'speed'"),
    ("schedules: {a: {kind: cosine, steps: 5, stages: 2}}", "schedules.a", "`stages` applies to kind 'step'"),
    ("schedules: {aa: {kind: linear, steps: 10}}", "schedules.aa",
     "no term named 'aa'; did you mean 'a'? schedules are keyed by term name; terms: ['a', 'b']"),
])
def test_schedule_errors_name_the_yaml_path(yaml_text, where, message):
    text = "outputs:\n  a: {loss: mse}\n  b: {loss: mae}\n" + yaml_text + "\n"
    with pytest.raises(ml.SpecError) as info:
        ml.load_spec(text)
    rendered = str(info.value)
    assert f"<spec>:4: {where}:" in rendered or f":4: {where}:" in rendered, rendered
    assert message in rendered, rendered


def test_logged_weight_is_spec_weight_times_the_scheduled_factor():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,))
    h = keras.layers.Dense(4)(x_in)
    model = keras.Model(x_in, {"a": keras.layers.Dense(1, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})
    spec = """
    outputs:
      a: {loss: mse, weight: 2.0}
      b: {loss: mse, weight: 0.5}
    schedules:
      b: {kind: linear, start: 0.0, end: 1.0, steps: 6, warmup: 2}
    """
    ml.compile(model, spec, optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"a": rng.normal(size=(16, 1)).astype("float32"), "b": rng.normal(size=(16, 1)).astype("float32")}
    # Before any step the effective weight is the factor at step 0.
    assert model.loss.get_weights() == pytest.approx({"a": 2.0, "b": 0.0})
    hist = model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False).history  # 4 steps an epoch
    for epoch in range(3):
        steps = range(4 * epoch, 4 * epoch + 4)
        want_b = np.mean([0.5 * _reference("linear", 0.0, 1.0, 6, 2, 1, s) for s in steps])
        assert hist["b_weight"][epoch] == pytest.approx(want_b, rel=1e-6)
        assert hist["a_weight"][epoch] == pytest.approx(2.0)
    # set_weights changes the static weight; the schedule still multiplies it (step 12: factor 1).
    model.loss.set_weights({"b": 3.0})
    assert model.loss.get_weights()["b"] == pytest.approx(3.0)
    res = model.evaluate(x, y, verbose=0, return_dict=True)
    assert res["loss"] == pytest.approx(2.0 * res["a_loss"] + 3.0 * res["b_loss"], rel=1e-5)


def test_get_weights_is_the_scheduled_weight_at_the_current_step_after_fit_and_after_loading(tmp_path):
    """get_weights() gives the weights the next step uses, at the optimizer's step: after fit, and after
    loading the saved model (before, it showed the factor of step 0 until the model trained again)."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,))
    h = keras.layers.Dense(4)(x_in)
    model = keras.Model(x_in, {"a": keras.layers.Dense(1, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)})
    ml.compile(model, "outputs: {a: {loss: mse}, b: {loss: mse}}\n"
                      "schedules: {b: {kind: linear, start: 1.0, end: 0.0, steps: 4}}", optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = {"a": rng.normal(size=(8, 1)).astype("float32"), "b": rng.normal(size=(8, 1)).astype("float32")}
    hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0).history          # one step an epoch: steps 0, 1, 2
    assert hist["b_weight"] == pytest.approx([1.0, 0.75, 0.5])                  # 1 − step/4, by hand
    assert model.loss.get_weights() == pytest.approx({"a": 1.0, "b": 0.25})     # step 3, the next one
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == 3
    assert loaded.loss.get_weights() == pytest.approx({"a": 1.0, "b": 0.25})


def test_static_weights_round_trip_where_the_effective_ones_would_not():
    """get_weights() is static × schedule × strategy; writing it back as the static weights rescaled every
    term (uncertainty: a 0.7151 -> 0.5113 in a probe).  get_static_weights() round-trips."""
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,))
    model = keras.Model(x_in, {"a": keras.layers.Dense(1, name="a")(x_in), "b": keras.layers.Dense(1, name="b")(x_in)})
    ml.compile(model, """
    outputs:
      a: {loss: mse, weight: 2.0}
      b: {loss: mse, weight: 0.5}
    weighting: uncertainty
    schedules:
      b: {kind: linear, start: 0.0, end: 1.0, steps: 10}
    """, optimizer=keras.optimizers.SGD(0.05))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = {"a": rng.normal(size=(16, 1)).astype("float32"), "b": rng.normal(size=(16, 1)).astype("float32")}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)      # 4 steps: factor 0.4 for b
    assert model.loss.get_static_weights() == pytest.approx({"a": 2.0, "b": 0.5})
    before = model.loss.get_weights()      # static × f, f = schedule × strategy (½e^(-s) for mse)
    model.loss.set_weights(model.loss.get_static_weights())
    assert model.loss.get_weights() == pytest.approx(before, rel=1e-6)
    model.loss.set_weights(before)         # static' = static × f: the effective weights become static × f²
    static = {"a": 2.0, "b": 0.5}
    assert model.loss.get_weights() == pytest.approx({k: before[k] ** 2 / static[k] for k in static}, rel=1e-5)
    assert before["b"] != pytest.approx(before["b"] ** 2 / static["b"])
    for bad in ("big", b"2", True, float("nan"), -1.0, 1e39):      # 1e39: inf as the float32 weight
        with pytest.raises(ValueError, match="weight of term 'a' must be a finite number ≥ 0"):
            model.loss.set_weights({"a": bad})
