"""A corpus of malformed specs, run configs and incremental configs, run through the CLI.

Each case asserts what a user sees: a non-zero exit status, no traceback, the
place named (file and line, YAML path, or the ``--set`` that caused it), and
a did-you-mean where the mistake is a typo.
"""

import textwrap

import numpy as np
import pytest
import yaml

from multiloss.cli.commands import main

RUN = textwrap.dedent("""\
    name: corpus
    seed: 0
    data: {source: digits}
    model:
      builder: mlp
      params:
        hidden: [8]
        heads: {class: {kind: classification}, image: {kind: reconstruction, hidden: 8}}
    loss:
      outputs:
        class: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        image: {loss: mse, weight: 0.5}
    optimizer: {name: adam, params: {learning_rate: 0.003}}
    train:
      epochs: 1
      batch_size: 256
      verbose: 0
      callbacks:
        early_stopping: {monitor: val_loss, patience: 2}
""")

INC = textwrap.dedent("""\
    name: inc
    data: {source: digits}
    model: {builder: cnn, params: {filters: [4], dense: 8}}
    scenario: {initial: 2, increment: 2}
    memory: {budget: 20}
    method: {name: icarl}
    optimizer: {name: sgd, params: {learning_rate: 0.05}}
    train: {epochs: 1, batch_size: 64}
""")

SPEC = "outputs:\n  a: {loss: mse, weight: 2.0}\n  b: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}\n"

# (id, kind, text or (base, old, new), extra CLI args, substrings the message must hold)
CASES = [
    # --- loss specs ---------------------------------------------------------------------------
    ("spec-duplicate-head", "spec", "outputs:\n  a: {loss: mse}\n  a: {loss: mae}\n", [],
     [":3: outputs.a: duplicate key 'a' (first at line 2)"]),
    ("spec-duplicate-field", "spec", "outputs:\n  a:\n    loss: mse\n    loss: mae\n", [],
     [":4: outputs.a.loss: duplicate key 'loss' (first at line 3)"]),
    ("spec-inf-weight", "spec", "outputs:\n  a: {loss: mse, weight: .inf}\n", [],
     [":2: outputs.a.weight: must be a finite number"]),
    ("spec-nan-weight", "spec", "outputs:\n  a: {loss: mse, weight: .nan}\n", [],
     [":2: outputs.a.weight: must be a finite number"]),
    ("spec-weight-no-loss", "spec", "outputs:\n  a: {loss: mse}\n  b: {weight: 2.0}\n", [],
     [":3: outputs.b: head 'b' has neither `loss` nor `metrics`"]),
    ("spec-weight-metrics-no-loss", "spec", "outputs:\n  a: {loss: mse}\n  b: {weight: 2.0, metrics: [mae]}\n", [],
     [":3: outputs.b.weight: head 'b' has a weight but no loss"]),
    ("spec-inf-param", "spec", "outputs:\n  a: {loss: {name: huber, params: {delta: .inf}}}\n", [],
     [":2: outputs.a.loss.params.delta: must be a finite number"]),
    ("spec-loss-typo", "spec", "outputs:\n  a: {loss: mean_squared_eror}\n", [],
     [":2: outputs.a.loss: unknown loss 'mean_squared_eror'", "did you mean 'mean_squared_error'"]),
    ("spec-field-typo", "spec", "outputs:\n  a: {loss: mse, wieght: 2}\n", [],
     [":2: outputs.a.wieght: unknown key 'wieght'; did you mean 'weight'?"]),
    ("spec-top-typo", "spec", "output:\n  a: {loss: mse}\n", [],
     [":1: output: unknown key 'output'; did you mean 'outputs'?"]),
    ("spec-reduction", "spec", "outputs:\n  a: {loss: mse, reduction: summ}\n", [],
     [":2: outputs.a.reduction:", "'summ'"]),
    ("spec-negative-weight", "spec", "outputs:\n  a: {loss: mse, weight: -1}\n", [],
     [":2: outputs.a.weight: must be ≥ 0"]),
    ("spec-string-weight", "spec", "outputs:\n  a: {loss: mse, weight: heavy}\n", [],
     [":2: outputs.a.weight:", "'heavy'"]),
    ("spec-metric-typo", "spec", "outputs:\n  a: {loss: mse, metrics: [accuracyy]}\n", [],
     [":2: outputs.a.metrics.0: unknown metric 'accuracyy'; did you mean 'accuracy'"]),
    ("spec-class-weight-negative", "spec", "outputs:\n  a: {loss: mse, class_weight: {3: -5}}\n", [],
     [":2: outputs.a.class_weight.3: must be ≥ 0"]),
    ("spec-yaml-syntax", "spec", "outputs:\n  a: {loss: mse\n", [], ["YAML syntax error"]),
    ("spec-python-tag", "spec", "outputs: !!python/object:os.system {}\n", [], [":1:", "refused YAML tag"]),
    ("spec-empty", "spec", "", [], ["is empty"]),
    ("spec-list", "spec", "- a\n- b\n", [], [":1:", "must be a mapping"]),
    ("spec-strategy-typo", "spec", SPEC + "weighting: {strategy: gradnrom}\n", [],
     [":4: weighting.strategy: unknown strategy 'gradnrom'", "did you mean 'gradnorm'"]),
    ("spec-strategy-inf-param", "spec", SPEC + "weighting: {strategy: dwa, params: {temperature: .inf}}\n", [],
     [":4: weighting.params.temperature: must be a finite number"]),
    ("spec-schedule-term", "spec", SPEC + "schedules:\n  aa: {kind: linear, start: 0, end: 1, steps: 10}\n", [],
     [":5: schedules.aa: no term named 'aa'", "did you mean 'a'"]),
    ("spec-term-no-outputs", "spec", "terms:\n  - {name: t, loss: mse}\n", [],
     [":2: terms.0.outputs: required key is missing"]),
    ("spec-duplicate-term", "spec",
     "outputs:\n  a: {loss: mse}\nterms:\n  - {name: a, outputs: [a], target: a, loss: mae}\n", [],
     ["terms.0.loss: duplicate term name 'a'"]),
    # --- run configs: validate ------------------------------------------------------------------
    ("run-optimizer-param-typo", "run", ("learning_rate: 0.003", "learnin_rate: 0.003"), [],
     [":13: optimizer.params.learnin_rate: unknown parameter 'learnin_rate'; did you mean 'learning_rate'?"]),
    ("run-lr-string", "run", ("learning_rate: 0.003", "learning_rate: fast"), [],
     [":13: optimizer.params.learning_rate: the learning rate must be a number, got 'fast'"]),
    ("run-lr-negative", "run", ("learning_rate: 0.003", "learning_rate: -0.1"), [],
     [":13: optimizer.params.learning_rate: the learning rate must be a finite number > 0, got -0.1"]),
    ("run-optimizer-typo", "run", ("name: adam", "name: adamm"), [],
     [":13: optimizer.name: unknown optimizer 'adamm'; did you mean 'adam'"]),
    ("run-schedule-typo", "run", ("params: {learning_rate: 0.003}",
                                  "schedule: {name: CosineDecai, params: {initial_learning_rate: 0.1}}"), [],
     [":13: optimizer.schedule.name: unknown schedule 'CosineDecai'; did you mean 'CosineDecay'"]),
    ("run-monitor-typo", "run", ("monitor: val_loss", "monitor: val_los"), [],
     [":19: train.callbacks.early_stopping.monitor: 'val_los' is not a logged key; did you mean 'val_loss'"]),
    ("run-monitor-without-val", "run", None, ["--set", "train.validation_split=0"],
     ["train.callbacks.early_stopping.monitor: 'val_loss' needs a validation split, and the data has none"]),
    ("run-min-delta-nan", "run", ("patience: 2}", "patience: 2, min_delta: .nan}"), [],
     [":19: train.callbacks.early_stopping.min_delta: must be a finite number, got nan"]),
    ("run-min-delta-negative", "run", ("patience: 2}", "patience: 2, min_delta: -0.5}"), [],
     [":19: train.callbacks.early_stopping.min_delta: must be ≥ 0.0, got -0.5"]),
    ("run-top-typo", "run", ("train:", "trian:"), [],
     [":14: trian: unknown key 'trian'; did you mean 'train'?"]),
    ("run-nested-typo", "run", ("epochs: 1", "epoch: 1"), [],
     [":15: train.epoch: unknown key 'epoch'; did you mean 'epochs'?"]),
    ("run-set-unknown-top", "run", None, ["--set", "trainn.epochs=3"],
     ["trainn: unknown key 'trainn'; did you mean 'train'? ", "(from --set trainn.epochs=3)"]),
    ("run-set-bad-value", "run", None, ["--set", "train.batch_size=big"],
     ["train.batch_size:", "'big' (from --set train.batch_size=big)"]),
    ("run-set-no-equals", "run", None, ["--set", "train.epochs"], ["--set", "expected key.path=value"]),
    ("run-set-into-scalar", "run", None, ["--set", "seed.x=1"], ["seed: is int 0, not a mapping"]),
    ("run-source-typo", "run", ("source: digits", "source: digitz"), [],
     [":3: data.source: unknown data source 'digitz'; did you mean 'digits'"]),
    ("run-model-param-typo", "run", ("hidden: [8]", "hiden: [8]"), [],
     [":7: model.params.hiden: unknown parameter 'hiden'; did you mean 'hidden'"]),
    ("run-missing-npz", "run", ("{source: digits}", "{source: npz, params: {path: no_such.npz, inputs: [x]}}"), [],
     [":3: data: data source 'npz' failed: No such file or directory: no_such.npz"]),
    ("run-pairs-zero", "run", ("{source: digits}", "{source: digits_pairs, params: {pairs_per_image: 0}}"), [],
     [":3: data: data source 'digits_pairs' failed: data.params.pairs_per_image: must be a number above 0, got 0"]),
    ("run-pairs-word", "run", ("{source: digits}", "{source: digits_pairs, params: {pairs_per_image: two}}"), [],
     ["data.params.pairs_per_image: must be a number above 0, got 'two'"]),
    ("run-pairs-same-fraction", "run", ("{source: digits}", "{source: digits_pairs, params: {same_fraction: 2}}"),
     [], ["data.params.same_fraction: must be a number in [0, 1], got 2"]),
    ("run-empty-splits", "run", ("{source: digits}", "{source: digits_pairs, params: {pairs_per_image: 0.001}}"),
     [], [":3: data: data source 'digits_pairs' gave no examples in its val, test splits (params: "
          "{'pairs_per_image': 0.001}); give it more data, or params that draw some"]),
    ("run-target-typo", "run", ("image: {loss: mse, weight: 0.5}", "image: {loss: mse, weight: 0.5}\n"
                                                                    "targets: {class: clas}"), [],
     [":13: targets.class: the train data has no target 'clas' for 'class'; did you mean 'class'?"]),
    ("run-validation-split-overlap", "run", None, ["--set", "train.validation_split=0.85"],
     ["train.validation_split: data source 'digits' failed: it is the source's val_fraction, and val_fraction + "
      "test_fraction must be below 1, got 0.85 + 0.2 (from --set train.validation_split=0.85)"]),
    ("run-head-model-lacks", "run", ("image: {loss: mse, weight: 0.5}", "imag: {loss: mse, weight: 0.5}"), [],
     [":12: loss.outputs.imag: the model has no output 'imag'; its outputs are ['class', 'image']"]),
    ("run-missing-spec-file", "run", (None, "loss: no_such_spec.yaml"), [],
     [":9: loss: the loss spec file", "no_such_spec.yaml does not exist"]),
    ("run-zero-epochs", "run", ("epochs: 1", "epochs: 0"), [], [":15: train.epochs: must be ≥ 1, got 0"]),
    ("run-bad-name", "run", ("name: corpus", "name: a/b"), [], [":1: name: String should match pattern", "'a/b'"]),
    ("run-nonfinite-mode", "run", ("verbose: 0", "verbose: 0\n  nonfinite: ignore"), [],
     [":18: train.nonfinite:", "'stop' or 'skip'", "'ignore'"]),
    ("run-distribute-typo", "run", ("seed: 0", "seed: 0\ndistribute: mirored"), [],
     [":3: distribute:", "'mirored'"]),
    ("run-class-weight-range", "run", ("sparse_categorical_crossentropy, metrics",
                                       "sparse_categorical_crossentropy, class_weight: {12: 2.0}, metrics"), [],
     [":11: loss.outputs.class.class_weight: class id(s) [12] out of range: output 'class' has 10 classes"]),
    ("run-class-weight-range-set", "run", None, ["--set", "loss.outputs.class.class_weight={12: 2.0}"],
     ["loss.outputs.class.class_weight: class id(s) [12] out of range: output 'class' has 10 classes (ids 0..9) "
      "(from --set loss.outputs.class.class_weight={12: 2.0})"]),
    ("run-shared-layer", "run", ("image: {loss: mse, weight: 0.5}", "image: {loss: mse, weight: 0.5}\n"
                                 "  weighting: {strategy: pcgrad, shared: [no_such_layer]}"), [],
     ["weighting.shared.0", "no_such_layer"]),
    ("run-checkpoint-keep", "run", ("patience: 2}", "patience: 2}\n    checkpoint: {keep: 0}"), [],
     [":20: train.callbacks.checkpoint.keep: must be ≥ 1"]),
    ("run-directory", "path", "DIR", [], ["is a directory; give a YAML file"]),
    ("run-no-suffix", "path", "config.txt", [], ["config.txt: not a YAML file"]),
    ("run-missing-file", "path", "missing.yaml", [], ["missing.yaml: no such file"]),
    # --- incremental configs ------------------------------------------------------------------
    ("inc-method-typo", "inc", ("name: icarl", "name: icarll"), [],
     [":6: method.name: unknown method 'icarll'", "did you mean 'icarl'"]),
    ("inc-increment", "inc", ("increment: 2", "increment: 3"), [],
     ["scenario.increment: the 8 classes after the first step do not split into steps of 3"]),
    ("inc-memory-both", "inc", ("{budget: 20}", "{budget: 20, per_class: 2}"), [],
     [":5: memory: give either `budget`"]),
    ("inc-top-typo", "inc", ("scenario:", "senario:"), [],
     [":4: senario: unknown key 'senario'; did you mean 'scenario'?"]),
    ("inc-lr-negative", "inc", ("learning_rate: 0.05", "learning_rate: -1"), [],
     [":7: optimizer.params.learning_rate: the learning rate must be a finite number > 0"]),
    ("inc-optimizer-typo", "inc", ("learning_rate: 0.05", "learning_rat: 0.05"), [],
     [":7: optimizer.params.learning_rat: unknown parameter", "did you mean 'learning_rate'"]),
]


def _write(tmp_path, kind, text):
    if kind == "spec":
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        return path
    base = INC if kind == "inc" else RUN
    if text is not None:
        old, new = text
        if old is None:   # replace the whole loss block
            head, _, rest = base.partition("loss:\n")
            rest = rest.split("optimizer:", 1)[1]
            base = head + new + "\noptimizer:" + rest
        else:
            assert old in base, old
            base = base.replace(old, new, 1)
    path = tmp_path / ("inc.yaml" if kind == "inc" else "run.yaml")
    path.write_text(base)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_cleanly(case, tmp_path, capsys, monkeypatch):
    name, kind, text, extra, expected = case
    monkeypatch.chdir(tmp_path)
    if kind == "path":
        (tmp_path / "DIR").mkdir()
        (tmp_path / "config.txt").write_text(RUN)
        path = tmp_path / text
    else:
        path = _write(tmp_path, kind, text)
    rc = main(["validate", str(path), *extra])
    out = capsys.readouterr()
    assert rc != 0, out.out
    assert "Traceback" not in out.err
    for piece in expected:
        assert piece in out.err, f"{piece!r} not in:\n{out.err}"
    assert out.err.startswith("error: ") and out.err.count("\n") <= 8, out.err


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_train_refuses_the_same_malformed_config(tmp_path, capsys, monkeypatch):
    """`train` goes through the same loader as `validate`: one message, no run folder."""
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "run", ("learning_rate: 0.003", "learnin_rate: 0.003"))
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'learning_rate'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_label_out_of_range_during_training_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 64)).astype("float32")
    label = rng.integers(0, 10, 200)
    label[150] = 12
    np.savez(tmp_path / "d.npz", x=x, label=label)
    data = yaml.safe_load(RUN)
    data["data"] = {"source": "npz", "params": {"path": "d.npz", "inputs": ["x"]}}
    data["model"]["params"]["heads"] = {"class": {"kind": "classification", "units": 10}}
    data["loss"] = {"outputs": {"class": {"loss": "sparse_categorical_crossentropy"}}}
    data["targets"] = {"class": "label"}
    data["train"].pop("callbacks")
    data["train"]["shuffle"] = False
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", "run.yaml"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    line = 1 + next(i for i, t in enumerate((tmp_path / "run.yaml").read_text().splitlines())
                    if "sparse_categorical_crossentropy" in t)
    assert f"run.yaml:{line}: loss.outputs.class.loss: term 'class': label 12 out of range for sparse loss " \
           "'sparse_categorical_crossentropy': valid class ids are 0..9" in err
