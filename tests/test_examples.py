"""examples/*.py: notebook "percent" scripts (`# %%` cells) that run, at quick settings, in the suite.

Each takes 40-85 s on the 2 loaded cores measured here (TensorFlow's import, Keras's first traces,
a run): slow. The static check below is not, so a new example without the quick switch fails fast.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
QUICK = "HARNESS_EXAMPLE_QUICK"


def test_the_examples_are_percent_notebooks_with_a_quick_switch():
    assert {p.name for p in EXAMPLES} >= {"quickstart.py", "repairs.py", "segmentation.py"}
    for path in EXAMPLES:
        text = path.read_text()
        assert text.startswith("# %% [markdown]\n"), path.name  # jupytext opens it as a notebook
        assert text.count("\n# %%\n") >= 2, path.name
        assert f'os.environ.get("{QUICK}") == "1"' in text, path.name  # the suite's quick settings


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, QUICK: "1", "HARNESS_EXAMPLE_OUT": str(tmp_path / "out")}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=work, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "inconclusive" in done.stdout or "pass" in done.stdout  # a verdict matrix was printed
    assert not list(work.iterdir())  # runs went to temporary folders, closed: nothing in the working folder
