"""harness.verdicts: each verdict from the CI, the minimum n and the controls' calibration."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness import runner, verdicts
from harness.results import GROUP_COLUMNS, SUMMARY_COLUMNS, read_table

from conftest import CHEAP_CNN
from test_cli import config


def _row(method="gradient", mean=0.2, low=0.1, high=0.3, n=20, schedule="cascading", metric="spearman_abs",
         step=3, block="logits", n_degenerate=0) -> dict:
    return {"model": "mnist_cnn", "method": method, "variant": method, "schedule": schedule, "step": step,
            "block": block, "metric": metric, "n": n, "mean": mean, "sd": 0.1, "se": 0.02, "ci_low": low,
            "ci_high": high, "n_degenerate": n_degenerate, "n_flagged": 0}


def _table(*rows, min_n=verdicts.MIN_N) -> pd.DataFrame:
    summary = pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS)
    return verdicts.verdict_table(summary, "cascading_cnn", min_n=min_n)


def _one(table: pd.DataFrame, method="gradient", test="MPRT cascading") -> pd.Series:
    return table[(table["method"] == method) & (table["test"] == test)].iloc[0]


def test_a_ci_straddling_the_threshold_is_inconclusive_and_a_ci_on_one_side_decides():
    straddles = _one(_table(_row(mean=0.45, low=0.35, high=0.55)))
    assert straddles["verdict"] == "inconclusive" and "contains the threshold 0.5" in straddles["reason"]
    assert _one(_table(_row(mean=0.2, low=0.1, high=0.3)))["verdict"] == "pass"
    assert _one(_table(_row(mean=0.8, low=0.6, high=0.9)))["verdict"] == "fail"
    # eMPRT: higher is better; a CI that ends on 0 from below (the edge detector's q = 0) fails
    emprt = dict(schedule="bottom_up", metric="emprt")
    assert _one(_table(_row(mean=0.3, low=0.1, high=0.5, **emprt)), test="eMPRT")["verdict"] == "pass"
    assert _one(_table(_row(mean=0.0, low=0.0, high=0.0, **emprt)), test="eMPRT")["verdict"] == "fail"
    assert _one(_table(_row(mean=0.1, low=-0.1, high=0.3, **emprt)), test="eMPRT")["verdict"] == "inconclusive"


def test_n_below_the_minimum_is_inconclusive_and_the_rule_says_the_minimum():
    few = _one(_table(_row(n=9)))
    assert few["verdict"] == "inconclusive" and "below the minimum 10" in few["reason"]
    assert "at least 10 images" in few["rule"]
    assert _one(_table(_row(n=10)))["verdict"] == "pass"
    assert _one(_table(_row(n=2), min_n=2))["verdict"] == "pass"  # configurable


def test_no_defined_score_is_undefined():
    row = _one(_table(_row(n=0, mean=np.nan, low=np.nan, high=np.nan, n_degenerate=20)))
    assert row["verdict"] == "undefined" and "20 undefined" in row["reason"]


def test_the_test_reads_the_last_step_and_the_controls_give_floor_and_ceiling():
    table = _table(_row(step=1, block="conv1", mean=0.9, low=0.8, high=0.95), _row(step=3),
                   _row(schedule="control", step=-1, block="random_model", mean=0.05),
                   _row(schedule="control", step=-1, block="ceiling", mean=1.0),
                   _row(schedule="control", step=-1, block="random_logit", mean=0.7, low=0.6, high=0.8))
    mprt = _one(table)
    assert (mprt["step"], mprt["block"], mprt["verdict"]) == (3, "logits", "pass")
    assert (mprt["floor"], mprt["ceiling"]) == (0.05, 1.0)
    assert _one(table, test="random logit")["verdict"] == "fail"


def test_a_control_failing_its_role_marks_the_test_uninformative_on_the_model():
    good = [_row(method="random_attribution", mean=0.0, low=-0.02, high=0.02),
            _row(method="edge_detector", mean=1.0, low=1.0, high=1.0)]
    held = _one(_table(_row(), *good))
    assert held["verdict"] == "pass" and held["calibration"] == "controls hold"
    # the edge detector passes MPRT: the test cannot tell a map that ignores the model on this model
    bad = _one(_table(_row(), good[0], _row(method="edge_detector", mean=0.1, low=0.05, high=0.15)))
    assert bad["calibration"].startswith("uninformative on this model: edge_detector 0.10 [0.05, 0.15]")
    assert "is pass, not fail" in bad["calibration"]
    noisy = _one(_table(_row(), _row(method="random_attribution", mean=0.6, low=0.55, high=0.65), good[1]))
    assert "random_attribution 0.60 [0.55, 0.65] (n = 20) is fail, not pass" in noisy["calibration"]
    assert _one(_table(_row()))["calibration"] == ""  # no controls in the run: not calibrated


def test_verdicts_csv_is_written_in_a_run_folder_and_two_images_decide_nothing(tmp_path, capsys):
    run_dir = runner.run(config("data.count=2", f"model.source={CHEAP_CNN}", "methods=[gradient]",
                                f"results_dir={tmp_path}", "progress=false"), log=lambda _: None)
    table = read_table(run_dir / "verdicts.csv")
    assert list(table.columns) == verdicts.VERDICT_COLUMNS
    assert set(table["test"]) == {"MPRT cascading", "input dominance"}
    assert set(table["metric"]) <= set(verdicts.SIMILARITIES)
    assert set(table["verdict"]) == {"inconclusive"}
    assert table["reason"].str.contains("n = 2 images with a defined score, below the minimum 10").all()
    summary = read_table(run_dir / "summary.csv")
    last = summary[(summary["schedule"] == "cascading") & (summary["metric"] == "spearman_abs")]["step"].max()
    assert (table["step"] == last).all()
    assert not math.isnan(table["floor"].iloc[0])  # the default controls: random_model gives the floor
    assert set(GROUP_COLUMNS) - {"step", "block"} <= set(table.columns)
    # `harness verdicts PATH`: the matrix, and --csv the same table; --min-n decides
    assert verdicts.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "MPRT cascading" in out and "gradient" in out and "inconclusive" in out
    assert verdicts.main([str(tmp_path), "--csv"]) == 0  # a folder above the run
    assert capsys.readouterr().out.splitlines()[0] == ",".join(verdicts.VERDICT_COLUMNS)
    assert verdicts.main([str(run_dir), "--min-n", "2", "--csv"]) == 0
    assert "below the minimum" not in capsys.readouterr().out
    assert verdicts.main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("harness: error: no summary.csv in or below")


def test_input_dominance_is_a_verdict_of_its_own_at_0_9():
    # Catches the paper's input-dominance check missing from the table, or judged at MPRT's 0.5.
    def verdicts_of(mean, low, high):
        table = _table(_row(mean=mean, low=low, high=high))
        return _one(table)["verdict"], _one(table, test="input dominance")["verdict"]

    assert verdicts_of(0.95, 0.93, 0.97) == ("fail", "fail")          # the input's map
    assert verdicts_of(0.70, 0.65, 0.75) == ("fail", "pass")          # not the model's, not the input's either
    assert verdicts_of(0.20, 0.10, 0.30) == ("pass", "pass")
    assert verdicts_of(0.90, 0.85, 0.95) == ("fail", "inconclusive")
    rule = _one(_table(_row()), test="input dominance")["rule"]
    assert "wholly below 0.9" in rule and "cascading" in rule
