"""eMPRT as the metric `emprt`: hand-made maps against a histogram and an entropy worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness import runner
from harness.config import group_defaults
from harness.errors import HarnessError
from harness.metrics import MetricSettings, compare

from test_runner import config, image_folder, tiny_overrides  # noqa: F401 - image_folder is a fixture

EMPRT = MetricSettings(metrics=("emprt",))


def emprt(reference, compared, **settings) -> tuple[float, str]:
    score = compare(reference, compared, MetricSettings(**{"metrics": ("emprt",), **settings}))[0]
    return score.value, score.reason


def entropy_of_counts(*counts: int) -> float:
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts)


# 12 zeros and 4 ones: whatever the bin count, two bins hold 12 and 4 values.
TWO_LEVELS = np.where(np.arange(16) < 12, 0.0, 1.0).reshape(4, 4, 1)
RAMP = np.arange(16, dtype=np.float64).reshape(4, 4, 1)  # 0..15: with 100 bins over 0..15, one value a bin


def test_emprt_on_hand_made_maps_equals_the_entropies_worked_out_by_hand():
    h_two = entropy_of_counts(12, 4)
    value, reason = emprt(TWO_LEVELS, RAMP)
    assert value == pytest.approx((math.log(16) - h_two) / h_two, rel=1e-12) and reason == ""
    # bins over each map's own range: shifted and scaled maps have the same histogram
    assert emprt(5 * TWO_LEVELS - 2, RAMP / 100 - 7)[0] == pytest.approx(value, rel=1e-12)
    value, _ = emprt(RAMP, TWO_LEVELS)
    assert value == pytest.approx((h_two - math.log(16)) / math.log(16), rel=1e-12)
    # two bins: 0..7 and 8..15 -> 8 and 8
    assert emprt(TWO_LEVELS, RAMP, emprt_bins=2)[0] == pytest.approx((math.log(2) - h_two) / h_two, rel=1e-12)
    # Sturges: ceil(log2 16) + 1 = 5 bins of width 3 over 0..15 -> 3, 3, 3, 3, 4
    h_sturges = entropy_of_counts(3, 3, 3, 3, 4)
    assert emprt(TWO_LEVELS, RAMP, emprt_bins="sturges")[0] == pytest.approx((h_sturges - h_two) / h_two, rel=1e-12)
    # every channel's values go into the one histogram
    three = np.concatenate([RAMP, RAMP + 16, RAMP + 32], axis=2)
    assert emprt(TWO_LEVELS.repeat(3, axis=2), three)[0] == pytest.approx((math.log(48) - h_two) / h_two, rel=1e-12)
    signed = np.where(np.arange(16) < 8, -1.0, 1.0).reshape(4, 4, 1)  # signs count: 8 and 8, not one bin
    assert emprt(TWO_LEVELS, signed)[0] == pytest.approx((math.log(2) - h_two) / h_two, rel=1e-12)
    assert emprt(RAMP, RAMP) == (0.0, "")


def test_constant_maps_make_emprt_undefined_or_flagged():
    value, reason = emprt(np.full((4, 4, 1), 3.0), RAMP)
    assert math.isnan(value) and reason == "zero entropy: constant map (reference)"
    score = compare(RAMP, np.zeros((4, 4, 1)), EMPRT)[0]
    assert score.value == -1.0 and score.degenerate and score.reason == "constant map (compared)"


def test_one_bin_from_the_bin_rule_is_undefined_and_says_why():
    """`fd` on a map of mostly zeros (interquartile range 0) gives one bin, so entropy 0 for a map
    that is not constant: q is undefined, and the reason names the bin rule, not a constant map."""
    sparse = np.zeros((4, 4, 1))
    sparse[0, 0, 0], sparse[1, 1, 0] = 1.0, 2.0  # 14 zeros: IQR 0
    assert np.histogram(sparse, bins="fd")[0].size == 1
    for reference, compared, side in ((sparse, RAMP, "reference"), (RAMP, sparse, "compared")):
        value, reason = emprt(reference, compared, emprt_bins="fd")
        assert math.isnan(value) and "emprt_bins=fd gives one histogram bin" in reason and side in reason
    assert emprt(RAMP, RAMP, emprt_bins="fd") == (0.0, "")
    assert emprt(sparse, RAMP)[1] == ""  # 100 bins: a defined value


@pytest.mark.parametrize("bins, ok", [(100, True), ("fd", True), ("50", True), (0, False), ("octaves", False),
                                      (True, False)])
def test_bin_rule_is_a_count_or_a_numpy_rule(bins, ok):
    if ok:
        assert MetricSettings.from_config({"emprt_bins": bins}).emprt_bins in (100, "fd", 50)
        return
    with pytest.raises(HarnessError, match=r"emprt_bins must be an integer >= 1 or one of auto, fd, .*sqrt, got"):
        MetricSettings.from_config({"emprt_bins": bins})


def test_repairs_preset_is_the_paper_preset_plus_emprt():
    repairs = MetricSettings.from_config(group_defaults("metrics", "repairs"))
    paper = MetricSettings.from_config(group_defaults("metrics", "paper"))
    assert repairs.metrics == (*paper.metrics, "emprt") and repairs.emprt_bins == 100
    assert {k: v for k, v in vars(repairs).items() if k not in ("metrics", "preset")} == {
        k: v for k, v in vars(paper).items() if k not in ("metrics", "preset")}


def test_emprt_rows_go_into_the_same_tidy_tables(tmp_path, tiny_saved_model, image_folder):  # noqa: F811
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), "metrics=repairs",
                                "schedule=bottom_up", "controls=[]"), log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    rows = scores[scores["metric"] == "emprt"]
    assert list(rows.columns) == list(scores.columns) and len(rows) == 5 * 6  # every step, every image
    assert (rows.loc[rows["step"] == 0, "value"] == 0).all()  # the original map against itself
    with np.load(run_dir / "maps.npz") as maps:  # the fully randomized model's row, by hand from the kept maps
        original, randomized = maps["gradient/000"], maps["gradient/004"]
    last = rows[rows["step"] == 4].set_index("image_id")["value"]
    for i, image_id in enumerate(sorted(last.index)):
        h0 = -sum(p * math.log(p) for p in np.histogram(original[i], 100)[0] / original[i].size if p > 0)
        h1 = -sum(p * math.log(p) for p in np.histogram(randomized[i], 100)[0] / randomized[i].size if p > 0)
        assert last[image_id] == pytest.approx((h1 - h0) / h0, rel=1e-9)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert set(summary.loc[summary["metric"] == "emprt", "step"]) == {0, 1, 2, 3, 4}
