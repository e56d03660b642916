"""The README's Python examples run, in order, in one namespace."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "'kind_loss', 'kind_weight'" in printed
    # The first example prints what its comment says: no accuracy for the Huber head.
    assert "'loss', 'score_loss', 'score_mae', 'score_weight']" in printed and "score_accuracy" not in printed
    assert namespace["model"].loss.get_weights()["score"] == pytest.approx(0.2)
