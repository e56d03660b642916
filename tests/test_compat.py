"""Module paths of 0.1 keep working: imports in users' code and import strings in their configs."""

import importlib
import subprocess
import sys
import textwrap

import pytest

import multiloss as ml
from multiloss.compat import MOVED
from multiloss.spec.imports import import_object


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_module_at_its_new_home(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_old_import_strings_resolve_to_the_same_objects():
    from multiloss.run import examples, models

    assert import_object("multiloss.examples:siamese_model") is examples.siamese_model
    assert import_object("multiloss.examples:depth_model") is examples.depth_model
    assert import_object("multiloss.models:mlp") is models.mlp


def test_the_public_names_of_0_1_stay():
    names = {"CompositeLoss", "GradientDiagnostics", "LossResult", "LossSpec", "NonFiniteError", "REDUCTIONS",
             "RunError", "STRATEGIES", "SpecError", "WeightLogger", "allow_import", "build_loss", "compile",
             "compile_kwargs", "diagnostics", "incremental", "load_spec", "losses", "models", "register_loss",
             "register_strategy", "schedules", "weighting"}
    assert names <= set(ml.__all__)
    for name in names:
        assert getattr(ml, name) is not None, name
    for name in ("STRATEGIES", "Context", "Params", "Strategy", "WeightCollapseWarning", "WeightLogger",
                 "check_spec", "infer_shared", "register_strategy"):
        assert getattr(ml.weighting, name) is not None, name
    for name in ("run_incremental", "check_incremental", "evaluate_incremental", "plot_incremental",
                 "register_method", "get_method", "METHODS", "IncrementalNet", "ExemplarMemory"):
        assert getattr(ml.incremental, name) is not None, name


def test_a_config_naming_an_old_module_path_trains_in_a_fresh_process(tmp_path):
    """What a user's config of 0.1 says still runs: `multiloss check` with an old import string."""
    code = textwrap.dedent("""\
        import sys
        from multiloss.cli.commands import main
        from multiloss.data import register_data            # an import a user's code of 0.1 has
        sys.exit(main(["check", "configs/siamese.yaml", "--model", "multiloss.examples:siamese_model"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(importlib.import_module("multiloss").__path__[0] + "/.."))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
