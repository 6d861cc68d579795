"""What `make smoke` checks on every other supported Python (CI runs it on 3.12 and 3.13): the console
scripts as a user starts them, on the 1,200-step CNN, and one quick experiment of the reproduction.
The equalities with PAIR in test_methods.py are marked `smoke` too."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CHEAP_CNN

pytestmark = pytest.mark.smoke
BIN = Path(sys.executable).parent


def _run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=os.environ | {"CI": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_harness_script_runs_a_cascade_on_the_early_cnn(tmp_path):
    """The `harness` console script of this interpreter's venv: a cascade of two methods on 3 images."""
    done = _run(str(BIN / "harness"), f"model.source={CHEAP_CNN}", "data.count=3", "method=gradient",
                f"results_dir={tmp_path / 'results'}", "progress=false", cwd=tmp_path)
    folder = Path(done.stdout.strip().splitlines()[-1].removeprefix("results: "))
    scores = pd.read_csv(folder / "scores.csv")
    cascade = scores[(scores["schedule"] == "cascading") & (scores["metric"] == "spearman_abs")]
    assert list(cascade["block"].drop_duplicates()) == ["original", "logits", "fc1", "conv2", "conv1"]
    assert np.isfinite(cascade["value"]).all()
    assert (cascade.loc[cascade["step"] == 0, "value"] == 1.0).all()
    # a randomized network draws other maps: if restoring or randomizing silently did nothing, the
    # last step would read 1.0 like the first
    assert cascade.loc[cascade["step"] == cascade["step"].max(), "value"].max() < 0.9


def test_one_quick_experiment_of_the_reproduction_runs_to_its_report(tmp_path):
    out = tmp_path / "reproduce"
    done = _run(str(BIN / "python"), "-m", "harness.reproduce", "--quick", "cascading_cnn", "--out", str(out),
                cwd=tmp_path)
    assert "== cascading_cnn: done" in done.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert {"gradient", "guided_backprop", "gradcam", "integrated_gradients"} <= set(summary["method"])
    assert (out / "report.html").is_file()
