"""Spec loading: both forms, YAML details, and every error naming path and line."""

import json
import textwrap

import pytest

import multiloss as ml

SIAMESE = """\
outputs:
  ctg_out_1: {loss: categorical_crossentropy, weight: 1.0, metrics: [accuracy]}
  ctg_out_2: {loss: categorical_crossentropy, weight: 1.0, metrics: [accuracy]}
  bin_out:   {loss: categorical_crossentropy, weight: 0.5, metrics: [accuracy]}
"""

COMPILE_FORM = """\
loss: {ctg_out_1: categorical_crossentropy, ctg_out_2: categorical_crossentropy, bin_out: categorical_crossentropy}
loss_weights: {ctg_out_1: 1.0, ctg_out_2: 1, bin_out: 0.5}
metrics: [accuracy]
"""


def _summary(spec):
    return [(t.name, t.outputs, t.target, t.loss.name, t.weight, t.reduction) for t in spec.resolve()]


def test_canonical_form_resolves_to_one_term_per_head():
    spec = ml.load_spec(SIAMESE)
    assert _summary(spec) == [
        ("ctg_out_1", ("ctg_out_1",), "ctg_out_1", "categorical_crossentropy", 1.0, "sum_over_batch_size"),
        ("ctg_out_2", ("ctg_out_2",), "ctg_out_2", "categorical_crossentropy", 1.0, "sum_over_batch_size"),
        ("bin_out", ("bin_out",), "bin_out", "categorical_crossentropy", 0.5, "sum_over_batch_size"),
    ]
    assert spec.head_metrics() == {h: ["accuracy"] for h in ("ctg_out_1", "ctg_out_2", "bin_out")}


def test_compile_form_means_the_same():
    assert _summary(ml.load_spec(COMPILE_FORM)) == _summary(ml.load_spec(SIAMESE))
    assert ml.load_spec(COMPILE_FORM).head_metrics() == ml.load_spec(SIAMESE).head_metrics()


def test_shipped_configs_are_valid(tmp_path):
    from pathlib import Path

    from multiloss.run.config import load_run_config
    from multiloss.spec.yamlio import load_yaml

    files = sorted(Path(__file__).parent.parent.glob("configs/*.yaml"))
    assert len(files) >= 4
    for f in files:
        if f.name.startswith(("incremental_", "weighting_")):
            continue  # class-incremental / weighting configs: validated by their own tests
        data, _ = load_yaml(f.read_text(), str(f))
        if ("data" in data or "tasks" in data) and "model" in data:  # a run config
            assert load_run_config(f).spec.resolve()
        elif "outputs" in data or "loss" in data:
            assert ml.load_spec(f).resolve()
    a, b = ml.load_spec("configs/siamese_heads.yaml"), ml.load_spec("configs/siamese_compile_form.yaml")
    assert _summary(a) == _summary(b)


def test_exponent_floats_and_int_weights():
    spec = ml.load_spec("outputs: {a: {loss: mse, weight: 1e-4}, b: {loss: mae, weight: 2}}")
    assert [t.weight for t in spec.resolve()] == [1e-4, 2.0]


def test_loss_with_params_and_several_terms_on_a_head():
    spec = ml.load_spec(textwrap.dedent("""
        outputs:
          seg:
            weight: 2.0
            loss:
              - dice
              - {name: binary_focal_crossentropy, params: {gamma: 3.0}}
              - {loss: mse, weight: 0.25, name: seg_l2}
    """))
    terms = spec.resolve()
    assert [(t.name, t.weight) for t in terms] == [
        ("seg_dice", 2.0), ("seg_binary_focal_crossentropy", 2.0), ("seg_l2", 0.5)
    ]
    assert terms[1].loss.params == {"gamma": 3.0}


def test_cross_output_term():
    spec = ml.load_spec(textwrap.dedent("""
        terms:
          - {name: pair, outputs: [emb_a, emb_b], target: same, loss: {name: contrastive, params: {margin: 2.0}}, weight: 0.5}
    """))
    (t,) = spec.resolve()
    assert (t.name, t.outputs, t.target, t.weight, t.loss.params) == (
        "pair", ("emb_a", "emb_b"), "same", 0.5, {"margin": 2.0})


def test_import_string_loss(tmp_path, monkeypatch):
    (tmp_path / "userloss.py").write_text(
        "from keras import ops\n"
        "def scaled_l1(y_true, y_pred, scale=1.0):\n"
        "    return scale * ops.mean(ops.abs(y_true - y_pred), axis=-1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ml.load_spec("outputs: {a: {loss: {name: 'userloss:scaled_l1', params: {scale: 3.0}}}}")
    (t,) = spec.resolve()
    import numpy as np

    value = np.asarray(t.loss(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))
    np.testing.assert_allclose(value, [3.0 * 1.5])


def _problems(text, **kw):
    with pytest.raises(ml.SpecError) as info:
        ml.load_spec(text, **kw)
    return info.value.problems, str(info.value)


@pytest.mark.parametrize(
    "text, path, line, fragment",
    [
        ("outputs:\n  a: {loss: categorical_crossentropy}\n  b: {loss: categorial_crossentropy}\n",
         ("outputs", "b", "loss"), 3, "did you mean 'categorical_crossentropy'"),
        ("outputs:\n  a:\n    loss: mse\n    weight: -1\n", ("outputs", "a", "weight"), 4, "≥ 0"),
        ("outputs:\n  a:\n    loss: mse\n    weight: heavy\n", ("outputs", "a", "weight"), 4,
         "non-negative number, got 'heavy'"),
        ("outputs:\n  a:\n    loss: mse\n    metrics: [acuracy]\n", ("outputs", "a", "metrics", 0), 4,
         "did you mean 'accuracy'"),
        ("outputs:\n  a:\n    loss: {name: huber, params: {delt: 2}}\n", ("outputs", "a", "loss", "params"), 3,
         "valid parameters: delta"),
        ("outputs:\n  a: {loss: 'nosuchpkg.mod:fn'}\n", ("outputs", "a", "loss"), 2, "does not import"),
        ("outputs:\n  a: {loss: mse, reduction: avg}\n", ("outputs", "a", "reduction"), 2,
         "sum_by_nonzero_weights"),
        ("outputs:\n  a: {loss: mse, wieght: 1}\n", ("outputs", "a", "wieght"), 2, "unknown key"),
        ("outputs:\n  a: {loss: [dice, dice]}\n", ("outputs", "a", "loss", 1), 2, "duplicate term name"),
        ("outputs:\n  a: {loss: mse}\nterms:\n  - {name: a, outputs: [b], loss: mse}\n",
         ("terms", 0, "loss"), 4, "duplicate term name 'a'"),
        ("loss: {a: mse}\nloss_weights: {a: -2}\n", ("loss_weights", "a"), 2, "≥ 0"),
        ("loss: {a: msee}\n", ("loss", "a"), 1, "did you mean 'mse'"),
    ],
)
def test_errors_name_path_and_line(text, path, line, fragment):
    problems, message = _problems(text)
    assert (path, line) in [(p, ln) for p, ln, _ in problems], problems
    assert fragment in message
    assert isinstance(ml.SpecError(problems), ValueError)


def test_error_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("outputs:\n  a: {loss: mse, weight: -3}\n")
    _, message = _problems(f)
    assert message.startswith(f"{f}:2: outputs.a.weight:")


def test_yaml_syntax_error_has_line():
    problems, message = _problems("outputs:\n  a: {loss: mse\n  b: [1, 2\n")
    assert problems[0][1] in (2, 3, 4) and "YAML syntax error" in message


def test_python_tags_are_refused():
    problems, message = _problems("outputs:\n  a: !!python/object/apply:os.system ['echo hi']\n")
    assert problems[0][1] == 2
    assert "refused YAML tag" in message and "python/object/apply:os.system" in message


def test_unknown_output_lists_model_outputs():
    import keras

    x = keras.Input((3,))
    model = keras.Model(x, {"a": keras.layers.Dense(1, name="a")(x), "b": keras.layers.Dense(1, name="b")(x)})
    with pytest.raises(ml.SpecError) as info:
        ml.build_loss("outputs:\n  a: {loss: mse}\n  c: {loss: mse}\n", model)
    assert info.value.problems == [(("outputs", "c"), 3,
                                    "the model has no output 'c'; its outputs are ['a', 'b']")]


def test_schema_is_json_schema_of_the_spec():
    schema = ml.LossSpec.model_json_schema()
    json.dumps(schema)
    assert set(schema["properties"]) >= {"outputs", "terms", "metrics", "loss", "loss_weights"}
    head = schema["$defs"]["HeadSpec"]["properties"]
    assert set(head) == {"loss", "weight", "metrics", "class_weight", "mask_value", "reduction"}


@pytest.mark.parametrize("text, path, line, fragments", [
    # an output `val` logs `val_loss`: the key of the validation total, which replaces it
    ("outputs:\n  val: {loss: mse}\n  b: {loss: mse}\n", ("outputs", "val", "loss"), 2,
     ["output 'val' logs 'val_loss', the key of the validation value of the total loss", "rename output 'val'"]),
    ("outputs:\n  score: {loss: mse}\n  val_score: {loss: mse}\n", ("outputs", "val_score", "loss"), 3,
     ["'val_score_loss', 'val_score_weight', the keys of the validation values of output 'score'",
      "rename output 'val_score' or output 'score'"]),
    ("outputs:\n  a: {loss: mse, metrics: [mae]}\n  val_a: {metrics: [mae]}\n", ("outputs", "val_a"), 3,
     ["metric 'mae' of output 'val_a' logs 'val_a_mae'", "of metric 'mae' of output 'a'"]),
    ("outputs:\n  a: {loss: mse}\nterms:\n  - {name: val_a, outputs: [a, b], loss: contrastive}\n",
     ("terms", 0, "loss"), 4, ["term 'val_a' logs 'val_a_loss', 'val_a_weight'", "rename term 'val_a' or output 'a'"]),
])
def test_log_keys_that_clash_with_validation_keys_are_refused(text, path, line, fragments):
    problems, message = _problems(text)
    assert [(p, ln) for p, ln, _ in problems] == [(path, line)], problems
    for fragment in fragments:
        assert fragment in message


def test_log_keys_logged_twice_are_refused(tmp_path, monkeypatch):
    (tmp_path / "mymetrics.py").write_text("def mse_loss(y_true, y_pred):\n    return (y_true - y_pred) ** 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the term `a_mse` logs `a_mse_loss`, and so does output a's metric `mse_loss` (Keras names it by its function)
    problems, message = _problems("outputs:\n  a:\n    loss: [mse, mae]\n    metrics: ['mymetrics:mse_loss']\n")
    assert [(p, ln) for p, ln, _ in problems] == [(("outputs", "a"), 2)], problems
    assert ("metric 'mymetrics:mse_loss' of output 'a' logs 'a_mse_loss', as term 'a_mse' of output 'a' does, "
            "so one hides the other in the history; rename output 'a' or term 'a_mse' of output 'a'") in message
    # names that only look alike are fine: an output `val` with metrics only, `validation`, `a` and `val_b`
    ml.load_spec("outputs:\n  val: {metrics: [mae]}\n  b: {loss: mse}\n")
    ml.load_spec("outputs:\n  validation: {loss: mse}\n  a: {loss: mse}\n  val_b: {loss: mse}\n")


LOSSES_MODULE = """\
import keras
from keras import ops


def one_arg(y_true):
    return y_true


def three_req(y_true, y_pred, extra):
    return extra * ops.mean(ops.abs(y_true - y_pred), axis=-1)


class ScaledL1(keras.losses.Loss):
    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * ops.mean(ops.abs(y_true - y_pred), axis=-1)


class OneArgLoss(keras.losses.Loss):
    def call(self, y_true):
        return y_true


class NotCallable:
    pass
"""


def test_loss_that_cannot_be_called_as_a_loss_is_refused(tmp_path, monkeypatch):
    (tmp_path / "badlosses.py").write_text(LOSSES_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    f = tmp_path / "v.yaml"
    f.write_text("outputs:\n  a: {loss: mse}\n  score:\n    loss: 'badlosses:one_arg'\n"
                 "  b: {loss: {name: 'badlosses:three_req', params: {}}}\n"
                 "  c: {loss: 'badlosses:OneArgLoss'}\n  d: {loss: 'badlosses:NotCallable'}\n")
    problems, message = _problems(f)
    assert [(p, ln) for p, ln, _ in problems] == [
        (("outputs", "score", "loss"), 4), (("outputs", "b", "loss", "name"), 5), (("outputs", "c", "loss"), 6),
        (("outputs", "d", "loss"), 7)], problems
    assert (f"{f}:4: outputs.score.loss: loss 'badlosses:one_arg' cannot be called as f(y_true, y_pred): too many "
            "positional arguments; a loss is a function f(y_true, y_pred, **params), or a class made with its "
            "params and called (y_true, y_pred)") in message
    assert "'badlosses:three_req' cannot be called as f(y_true, y_pred): missing a required argument: 'extra'" \
        in message
    assert "OneArgLoss.call cannot be called as (y_true, y_pred): too many positional arguments" in message
    assert "class NotCallable has no `__call__` method" in message
    # given its parameter, a Keras Loss subclass, Keras's and multiloss's own losses are fine
    spec = ml.load_spec("outputs:\n  a: {loss: {name: 'badlosses:three_req', params: {extra: 2}}}\n"
                        "  b: {loss: {name: 'badlosses:ScaledL1', params: {scale: 2}}}\n"
                        "  c: {loss: {name: 'keras.losses:Huber', params: {delta: 2}}}\n"
                        "  d: {loss: 'keras.losses:mean_squared_error'}\n  e: {loss: [dice, mse, Huber]}\n"
                        "  f: {loss: {name: incremental_classification, params: {num_old: 2}}}\n")
    assert len(spec.resolve()) == 8


def test_head_without_a_loss_suggests_the_output_it_may_misspell():
    problems, message = _problems("outputs:\n  kind: {loss: scce}\n  knd: {weight: 2}\n")
    assert [(p, ln) for p, ln, _ in problems] == [(("outputs", "knd"), 3)]
    assert message.endswith("head 'knd' has neither `loss` nor `metrics`: add a loss (or metrics to watch it), "
                            "or remove the head; did you mean 'kind'?")
    _, message = _problems("outputs:\n  kind: {loss: scce}\n  other: {weight: 2}\n")
    assert "did you mean" not in message


def test_a_decorated_loss_is_checked_by_the_decorators_own_signature():
    """functools.wraps copies the wrapped function's signature; the wrapper may supply its arguments."""
    import functools

    from multiloss.spec.validation import bind_problem

    def scaled(y_true, y_pred, scale):
        return scale

    @functools.wraps(scaled)
    def fixed(y_true, y_pred):
        return scaled(y_true, y_pred, scale=3.0)

    assert bind_problem(fixed, "y_true", "y_pred") is None
    assert bind_problem(scaled, "y_true", "y_pred") == "missing a required argument: 'scale'"
