"""harness.summary: the bootstrap CI and the per-group statistics of summary.csv."""
import numpy as np
import pandas as pd
import pytest

from harness import summary
from harness.results import GROUP_COLUMNS


def _choice_ci(values, seed, level=0.95):
    """The CI as the percentile bootstrap defines it: resample with `choice`, take the quantiles."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(summary.BOOTSTRAP_SAMPLES, len(values)), replace=True).mean(axis=1)
    alpha = (1 - level) / 2
    return np.quantile(means, alpha), np.quantile(means, 1 - alpha)


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_ci_is_the_seeded_choice_resampling(seed):
    """Bit for bit what drawing the resamples with choice gives, for each size, and for two groups
    of one size that share the cached indices (a stale or shifted cache changes the bounds)."""
    rng = np.random.default_rng(3)
    for n in (2, 3, 50, 100, 100):
        values = rng.normal(size=n)
        assert summary.bootstrap_ci(values, seed) == _choice_ci(values, seed)
        assert summary.bootstrap_ci(values, seed, level=0.9) == _choice_ci(values, seed, 0.9)
    with_nan = np.array([0.2, np.nan, 0.5, 0.9])
    assert summary.bootstrap_ci(with_nan, seed) == _choice_ci(with_nan[~np.isnan(with_nan)], seed)
    assert all(np.isnan(summary.bootstrap_ci(np.array([0.3, np.nan]), seed)))
    with pytest.raises(ValueError, match="read-only"):
        summary._resamples(3, seed)[0, 0] = 1


def test_summary_leaves_out_undefined_scores_and_counts_flagged_finite_ones():
    rows = []
    for step, values in ((0, [1.0, 1.0, 1.0]), (1, [0.2, 0.6, np.nan, 0.4])):
        for k, value in enumerate(values):
            rows.append(dict.fromkeys(GROUP_COLUMNS, "x") | {"step": step, "value": value, "degenerate": k == 3 or np.isnan(value)})
    rows[-1]["value"] = 0.99  # a finite but degenerate score (SSIM of a constant map): in the mean, flagged
    out = summary.summarize(pd.DataFrame(rows)).set_index("step")
    assert out.loc[1, "n"] == 3 and out.loc[1, "n_degenerate"] == 1 and out.loc[1, "n_flagged"] == 1
    kept = np.array([0.2, 0.6, 0.99])
    assert out.loc[1, "mean"] == pytest.approx(kept.mean()) and out.loc[1, "sd"] == pytest.approx(np.std(kept, ddof=1))
    assert out.loc[1, "se"] == pytest.approx(out.loc[1, "sd"] / np.sqrt(3))
    assert (out.loc[1, "ci_low"], out.loc[1, "ci_high"]) == _choice_ci(kept, 0)
    assert out.loc[0, "n"] == 3 and out.loc[0, "mean"] == 1.0 and out.loc[0, "ci_low"] == out.loc[0, "ci_high"] == 1.0
    assert out.loc[0, "n_flagged"] == 0


def test_an_emprt_collapse_counts_as_minus_one_in_the_mean():
    """Three randomized maps collapse to a constant (q = -1, flagged), one does not (0.3): the mean
    is -0.675 over 4 images, not 0.3 over 1."""
    rows = [dict.fromkeys(GROUP_COLUMNS, "x") | {"metric": "emprt", "value": v, "degenerate": v == -1.0}
            for v in (-1.0, -1.0, -1.0, 0.3)]
    out = summary.summarize(pd.DataFrame(rows)).iloc[0]
    assert out["mean"] == pytest.approx(-0.675) and out["n"] == 4 and out["n_flagged"] == 3
    assert out["n_degenerate"] == 0


def test_summary_lists_groups_in_order_of_first_appearance_with_their_own_rows():
    """Rows of groups interleaved (as a run's units and controls are), a group keyed by a missing
    block: each summary row has its own group's keys and values, in the order the groups first
    appear. Catches rows gathered by position instead of by group, groups sorted by key, and a
    group with a missing key dropped."""
    rows = []
    for k in range(12):
        name, block = [("later", "b"), ("first", "a"), ("nan", np.nan)][k % 3]
        base = {"later": 10.0, "first": 0.0, "nan": -5.0}[name]
        undefined = name == "first" and k == 1
        rows.append(dict.fromkeys(GROUP_COLUMNS, "x") | {"model": name, "block": block,
                                                          "value": np.nan if undefined else base + k,
                                                          "degenerate": undefined})
    out = summary.summarize(pd.DataFrame(rows))
    assert out["model"].tolist() == ["later", "first", "nan"]
    assert out["block"].tolist()[:2] == ["b", "a"] and pd.isna(out["block"].iloc[2])
    assert out["mean"].tolist() == [10.0 + np.mean([0, 3, 6, 9]), np.mean([4, 7, 10]), -5.0 + np.mean([2, 5, 8, 11])]
    assert out["n"].tolist() == [4, 3, 4] and out["n_degenerate"].tolist() == [0, 1, 0]
    assert (out.loc[1, "ci_low"], out.loc[1, "ci_high"]) == _choice_ci(np.array([4.0, 7.0, 10.0]), 0)
