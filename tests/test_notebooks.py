"""Every notebook in notebooks/ runs top to bottom without error.

The notebooks are committed with their outputs (plots inline); here they run
under the non-interactive Agg backend (``MPLBACKEND``, set for this test only:
the notebooks themselves never switch backends).
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_do_not_switch_backends_and_keep_their_outputs():
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any("matplotlib.use(" in "".join(c["source"]) for c in code), path.name
        assert all(c.get("execution_count") for c in code), f"{path.name}: run it and save the outputs"
        images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{path.name}: no plot in the saved outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
