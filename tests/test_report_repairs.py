"""The report's method x test table of the repaired sanity checks, from a hand-made summary."""
from __future__ import annotations

import pandas as pd

from harness.report.load import Experiment
from harness.report.page import Table
from harness.report.sections import repairs_section, repairs_table
from harness.report.tables import MISSING
from harness.results import SUMMARY_COLUMNS


def _row(method, schedule, step, block, metric, mean, low, high, n=10, degenerate=0):
    return {"model": "mnist_cnn", "method": method, "variant": method, "schedule": schedule, "step": step,
            "block": block, "metric": metric, "n": n, "mean": mean, "sd": 0.1, "se": 0.03, "ci_low": low,
            "ci_high": high, "n_degenerate": degenerate}


SUMMARY = pd.DataFrame.from_records([
    _row("gradient", "cascading", 0, "original", "spearman_abs", 1.0, 1.0, 1.0),
    _row("gradient", "cascading", 1, "logits", "spearman_abs", 0.7, 0.6, 0.8),
    _row("gradient", "cascading", 2, "conv1", "spearman_abs", 0.1, 0.05, 0.15),        # the last step: read
    _row("gradient", "bottom_up", 2, "logits", "spearman_abs", 0.45, 0.4, 0.55),        # CI reaches 0.5: fail
    _row("gradient", "bottom_up", 1, "conv1", "emprt", -0.5, -0.6, -0.4),
    _row("gradient", "bottom_up", 2, "logits", "emprt", 0.3, 0.2, 0.4),
    _row("gradient", "smprt", 2, "logits", "spearman_abs", 0.2, 0.1, 0.3),
    _row("gradient", "control", -1, "random_logit", "ssim", 0.2, 0.1, 0.3),
    _row("gradient", "control", -1, "random_logit", "spearman_abs", 0.9, 0.8, 0.95),  # not the test's metric
    _row("gradcam", "cascading", 2, "conv1", "spearman_abs", float("nan"), float("nan"), float("nan"), n=0,
         degenerate=10),
    _row("gradcam", "bottom_up", 2, "logits", "emprt", -0.1, -0.2, 0.05),
], columns=SUMMARY_COLUMNS)


def test_each_cell_is_the_last_step_or_the_control_with_its_verdict():
    table = repairs_table(SUMMARY).set_index("method")
    assert list(table.columns) == ["MPRT top-down", "MPRT bottom-up", "sMPRT", "eMPRT", "random logit"]
    gradient = table.loc["Gradient"]
    assert gradient["MPRT top-down"] == "0.10 [0.05, 0.15] **pass** (n=10)"
    assert gradient["MPRT bottom-up"] == "0.45 [0.40, 0.55] **fail** (n=10)"
    assert gradient["eMPRT"] == "0.30 [0.20, 0.40] **pass** (n=10)"
    assert gradient["sMPRT"] == "0.20 [0.10, 0.30] **pass** (n=10)"
    assert gradient["random logit"] == "0.20 [0.10, 0.30] **pass** (n=10)"
    gradcam = table.loc["Grad-CAM"]
    assert gradcam["MPRT top-down"] == "undefined (10 of 10 degenerate)"
    assert gradcam["eMPRT"] == "-0.10 [-0.20, 0.05] **fail** (n=10)" and gradcam["sMPRT"] == MISSING
    assert list(table.index) == ["Gradient", "Grad-CAM"]  # the paper's method order


def test_the_section_states_each_rule_and_appears_only_with_repairs_runs(tmp_path):
    assert repairs_section([]) == []
    experiment = Experiment("repairs", tmp_path, runs=[None])
    experiment.__dict__["summary"] = SUMMARY  # what its runs' summaries give
    tables = [b for b in repairs_section([experiment]) if isinstance(b, Table)]
    assert [t.title for t in tables] == ["Repaired sanity checks, MNIST CNN"]
    assert "MPRT top-down: `spearman_abs` at the last step of `cascading`; pass = 95% CI below 0.5" in tables[0].note
    assert "eMPRT: `emprt` at the last step of `bottom_up`; pass = 95% CI above 0" in tables[0].note
    assert "random logit: `ssim` at the control `random_logit`" in tables[0].note


def test_curves_draw_every_registered_control(tmp_path):
    # Catches: the curve figure knowing only the paper's controls (a run with the random-logit control
    # crashed the report of `make reproduce`).
    from harness import controls
    from harness.report.figures import similarity_curves

    rows = [_row("gradient", "bottom_up", 0, "original", "ssim", 1.0, 1.0, 1.0),
            _row("gradient", "bottom_up", 1, "conv1", "ssim", 0.4, 0.3, 0.5)]
    rows += [_row("gradient", "control", -1, name, "ssim", 0.2, 0.1, 0.3) for name in controls.CONTROLS]
    path = similarity_curves(pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS), "bottom_up", "t",
                             tmp_path / "curves.png")
    assert path.is_file() and path.stat().st_size > 0
