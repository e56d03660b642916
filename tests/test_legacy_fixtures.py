"""Models saved by multiloss at commit e8064d8 (before the package was split into folders) still load.

``tests/fixtures/legacy`` holds ``.keras`` files made once by its
``make_fixtures.py`` against e8064d8, and ``expected.json``: what that code
gave after reloading them in a fresh process.  Here one fresh process
(``read_fixtures.py``, public API only, ``safe_mode=True``) loads them with
the code under test; predictions, term weights, the weighting strategies'
state, ``evaluate`` and one step of ``fit`` must match.

Two behaviours of e8064d8 are pinned as they were:

* ``subclassed.keras`` does not load in a fresh process: ``ml.compile``
  registers the class it derives from the user's (``multiloss>TwoHead``) only
  when it first compiles one.  The plain load is an expected failure while
  that holds; ``subclassed_after_compile`` loads after compiling a throwaway
  TwoHead, and its values are the reference for both.
* ``weighting_dwa.keras`` (a schedule): right after loading, e8064d8's
  ``get_weights()`` showed the schedule factor at step 0 (the effective weights
  were refreshed before the optimizer's step was restored); ``evaluate`` then
  showed the right ones.  That was a bug, fixed since: the code under test
  gives the right ones at once, those of ``expected.json``'s ``before_save``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import fcntl
except ImportError:  # Windows: each worker reloads on its own
    fcntl = None

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["reloaded"]
EXPECTED_BEFORE_SAVE = json.loads((FIXTURES / "expected.json").read_text())["before_save"]
MODELS = ["functional", "sequential", "subclassed", "subclassed_after_compile", "weighting", "weighting_dwa",
          "weighting_pcgrad", "incremental_lsc"]
STRATEGIES = ["weighting", "weighting_dwa", "weighting_pcgrad"]
SUBCLASS_NOT_REGISTERED = "Could not locate class 'TwoHead'"

pytestmark = pytest.mark.slow


def _reload() -> dict:
    """Every fixture loaded, read and trained one step in one fresh process."""
    code = (FIXTURES / "read_fixtures.py").read_text()
    child = subprocess.run([sys.executable, "-c", code, str(FIXTURES)], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1], timeout=900,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert child.returncode == 0, child.stderr[-5000:]
    line = next((s for s in child.stdout.splitlines() if s.startswith("LEGACY_FIXTURES ")), None)
    assert line is not None, child.stdout[-3000:] + child.stderr[-3000:]
    return json.loads(line.removeprefix("LEGACY_FIXTURES "))


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory) -> dict:
    """``_reload()`` once per test run: pytest-xdist workers share the result through a locked file."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or fcntl is None:
        return _reload()
    shared = tmp_path_factory.getbasetemp().parent / "legacy_fixtures.json"  # this run's, shared by workers
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shared.exists():
            shared.write_text(json.dumps(_reload()))
    return json.loads(shared.read_text())


def pair(reloaded: dict, name: str) -> tuple[dict, dict]:
    """What the code under test gives for ``name``, and what e8064d8 gave."""
    got = reloaded[name]
    want = EXPECTED[name]
    if name == "subclassed":
        want = EXPECTED["subclassed_after_compile"]
        if SUBCLASS_NOT_REGISTERED in got.get("load_error", ""):
            pytest.xfail("as at e8064d8: a subclassed model saved after ml.compile loads only once "
                         "ml.compile has registered multiloss>TwoHead in this process")
    for key in ("load_error", "read_error"):
        assert key not in got, f"{name}: {got[key]}"
    return got, want


def close(got, want, rtol: float, atol: float, what: str) -> None:
    """Nested dicts/lists of numbers equal up to tolerances (same keys, same shapes)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{what}: keys {got} != {want}"
        for k in want:
            close(got[k], want[k], rtol, atol, f"{what}.{k}")
    elif isinstance(want, (list, float, int)) and not isinstance(want, bool):
        np.testing.assert_allclose(np.asarray(got, "float64"), np.asarray(want, "float64"), rtol=rtol, atol=atol,
                                   err_msg=what)
    else:
        assert got == want, f"{what}: {got!r} != {want!r}"


@pytest.mark.parametrize("name", MODELS)
def test_loads_as_the_same_model(reloaded, name):
    got, want = pair(reloaded, name)
    for key in ("class", "loss_class", "optimizer", "iterations"):
        assert got[key] == want[key], (name, key)
    assert got["loss_class"] == "CompositeLoss"
    assert got["spec"] == want["spec"], name


@pytest.mark.parametrize("name", MODELS)
def test_predictions(reloaded, name):
    got, want = pair(reloaded, name)
    close(got["pred"], want["pred"], 1e-5, 1e-6, f"{name}.pred")


@pytest.mark.parametrize("name", MODELS)
def test_term_weights(reloaded, name):
    got, want = pair(reloaded, name)
    # weighting_dwa: e8064d8 showed step 0's schedule right after loading (reg 0.09996); the weights
    # before saving (reg 0.29987) are right.
    after_load = EXPECTED_BEFORE_SAVE[name]["weights"] if name == "weighting_dwa" else want["weights_after_load"]
    close(got["weights_after_load"], after_load, 1e-6, 1e-7, f"{name}.weights_after_load")
    close(got["weights_after_evaluate"], want["weights_after_evaluate"], 1e-6, 1e-7,
          f"{name}.weights_after_evaluate")


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_state(reloaded, name):
    got, want = pair(reloaded, name)
    assert want["strategy"] is not None
    close(got["strategy"], want["strategy"], 1e-6, 1e-7, f"{name}.strategy")
    close(got["log_vars"], want["log_vars"], 1e-6, 1e-7, f"{name}.log_vars")


def test_uncertainty_log_variances_are_trained_variables(reloaded):
    got, _ = pair(reloaded, "weighting")
    assert list(got["log_vars"]) == ["multiloss_log_vars"]
    assert got["log_vars"] != got["log_vars_after_fit"]


@pytest.mark.parametrize("name", MODELS)
def test_evaluate(reloaded, name):
    got, want = pair(reloaded, name)
    np.testing.assert_allclose(got["evaluate"]["loss"], want["evaluate"]["loss"], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    close(got["evaluate"], want["evaluate"], 1e-5, 1e-6, f"{name}.evaluate")


@pytest.mark.parametrize("name", MODELS)
def test_one_fit_step_after_loading(reloaded, name):
    """The compile config (optimizer and its state, loss, metrics, strategy) came back with the model."""
    got, want = pair(reloaded, name)
    assert got["iterations_after_fit"] == want["iterations"] + 1
    close(got["fit"], want["fit"], 1e-5, 1e-6, f"{name}.fit")
    close(got["weights_after_fit"], want["weights_after_fit"], 1e-5, 1e-6, f"{name}.weights_after_fit")
    close(got["log_vars_after_fit"], want["log_vars_after_fit"], 1e-5, 1e-6, f"{name}.log_vars_after_fit")
    close(got["pred_after_fit"], want["pred_after_fit"], 1e-4, 1e-6, f"{name}.pred_after_fit")


def test_incremental_checkpoint_weights_restore_the_network(reloaded):
    """``runner.save_checkpoint``'s weight list still fits a PODNet network grown as the runner grows it."""
    got = reloaded["incremental_lsc_checkpoint"]
    assert "read_error" not in got, got.get("read_error")
    close(got["logits"], EXPECTED["incremental_lsc_checkpoint"]["logits"], 1e-5, 1e-6, "checkpoint logits")
    close(got["logits"], EXPECTED["incremental_lsc"]["pred"]["logits"], 1e-5, 1e-6, "checkpoint vs .keras")
