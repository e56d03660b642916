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
