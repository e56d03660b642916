"""The spec layer needs no TensorFlow (``MULTILOSS_SPEC_ONLY=1``, what the console script sets for
``describe``, ``schema`` and a spec-only ``validate``), and gives the same answers as the full import."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC_ONLY = textwrap.dedent("""\
    import glob, json, sys
    import multiloss as ml
    from multiloss.spec.configfile import config_kind, read_config

    checked = []
    for f in sorted(glob.glob("configs/*.yaml")) + sorted(glob.glob("multiloss/configs/*.yaml")):
        data, _ = read_config(f)
        if config_kind(data) == "spec":
            ml.load_spec(f)
            checked.append(f)
    spec = ml.load_spec({
        "outputs": {"a": {"loss": {"name": "Huber", "params": {"delta": 2.0}}, "metrics": ["MeanAbsoluteError"]},
                    "b": {"loss": "incremental_distillation", "weight": 0.5},
                    "c": {"loss": "dice"}},
        "weighting": {"strategy": "cagrad", "params": {"c": 0.4}, "gradients": "representation"},
        "schedules": {"a": {"kind": "linear", "start": 1.0, "end": 0.1, "steps": 10}},
    })
    errors = []
    for bad in ({"outputs": {"a": {"loss": {"name": "huber", "params": {"delat": 2.0}}}}},
                {"outputs": {"a": {"loss": "mse"}}, "weighting": {"strategy": "cagrad", "params": {"cc": 1}}},
                {"outputs": {"a": {"loss": "mse", "metrics": ["acuracy"]}}}):
        try:
            ml.load_spec(bad)
        except ml.SpecError as exc:
            errors.append(str(exc))
    before = {"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}
    # The lazily resolved Keras loss computes once Keras is there.
    import numpy as np
    huber = spec.resolve()[0].loss
    value = np.asarray(huber(np.array([[0.0, 0.0]], "float32"), np.array([[1.0, 3.0]], "float32"))).tolist()
    print(json.dumps({"checked": checked, "before": before, "errors": errors, "huber": value,
                      "compile": callable(ml.compile), "keras": "keras" in sys.modules}))
""")


def _run(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_spec_layer_loads_and_validates_without_tensorflow():
    got = _run(SPEC_ONLY, MULTILOSS_SPEC_ONLY="1")
    assert got["before"] == {"tensorflow": False, "keras": False}
    assert "configs/siamese.yaml" in got["checked"] and "configs/depth_segmentation.yaml" in got["checked"]
    # Errors are the full ones: Keras's parameter names, the strategy's params, Keras's metric names.
    assert len(got["errors"]) == 3
    assert "no parameter 'delat'" in got["errors"][0] and "valid parameters: delta" in got["errors"][0]
    assert "'cc'" in got["errors"][1] and "valid: c" in got["errors"][1]
    assert "did you mean 'accuracy'" in got["errors"][2]
    # Huber with delta 2 by hand: |e| = 1 -> ½·1² = 0.5; |e| = 3 -> 2·(3 − 1) = 4; mean over the last axis.
    assert got["huber"] == [2.25]
    assert got["compile"] and got["keras"]


def test_full_import_gives_the_same_answers():
    got = _run(SPEC_ONLY)
    assert got["before"] == {"tensorflow": True, "keras": True}
    assert got["huber"] == [2.25] and len(got["errors"]) == 3


def test_console_script_describes_a_spec_without_tensorflow():
    code = textwrap.dedent("""\
        import sys, multiloss_cli
        rc = multiloss_cli.main(["describe", "configs/depth_segmentation.yaml"])
        rc += multiloss_cli.main(["validate", "configs/siamese.yaml"])
        print(rc, "tensorflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "0 False"
    assert any(line.startswith("segmentation_dice") for line in lines)
    assert any("configs/siamese.yaml: OK" in line for line in lines)
