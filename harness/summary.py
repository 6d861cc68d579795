"""summary.csv: the per-(model, variant, step, metric) statistics of the long `scores.csv` rows.

Pure pandas/numpy, so the report can rebuild everything from a results folder without TensorFlow.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from harness.results import GROUP_COLUMNS, SUMMARY_COLUMNS

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN when fewer than two values): the means of
    BOOTSTRAP_SAMPLES resamples drawn as `default_rng(seed).choice(values, (samples, n))` draws them."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    means = values[_resamples(len(values), seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@functools.lru_cache(maxsize=8)
def _resamples(n: int, seed: int) -> np.ndarray:
    """The indices a seeded choice of n values with replacement draws, shared by every group of n
    values: drawing them costs 7x the rest of a group's CI (2,000 x 100 indices), and a summary has
    hundreds of groups of the same size. Read-only: a cached array must not change."""
    indices = np.random.default_rng(seed).choice(n, size=(BOOTSTRAP_SAMPLES, n), replace=True)
    indices.flags.writeable = False
    return indices


def summarize(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean, SD, SE and a 95 % bootstrap CI per group over its defined rows.

    Only undefined scores (NaN) are left out of the mean, SD, SE and CI. A finite score flagged
    ``degenerate`` is the test's real outcome (eMPRT's -1 when the randomized map collapses to a
    constant, SSIM against a constant map; docs/protocol.md §5.1): it enters the mean and is counted
    in ``n_flagged``. ``n`` = the rows that entered the mean, ``n_degenerate`` = the undefined rows
    left out, so n + n_degenerate = rows, and n_flagged <= n.
    """
    grouped = scores.groupby(GROUP_COLUMNS, sort=False, dropna=False)
    group = grouped.ngroup().to_numpy()  # numbered in order of first appearance, as the groups are listed
    # Each group's rows as positions into plain arrays: a sub-DataFrame per group (pandas' iteration
    # over the groups) cost ~0.3 ms each, a quarter of summarizing a cascading_mlp run (224 groups).
    order = np.argsort(group, kind="stable")
    rows = np.split(order, np.cumsum(np.bincount(group, minlength=grouped.ngroups))[:-1]) if len(order) else []
    first_rows = scores.iloc[[r[0] for r in rows]][GROUP_COLUMNS].itertuples(index=False, name=None)
    all_values = scores["value"].to_numpy(dtype=float)
    all_undefined = np.isnan(all_values)
    all_flagged = scores["degenerate"].astype(bool).to_numpy() & ~all_undefined
    records = []
    for keys, at in zip(first_rows, rows, strict=True):
        values, undefined = all_values[at], all_undefined[at]
        valid = values[~undefined]
        n = len(valid)
        sd = float(np.std(valid, ddof=1)) if n > 1 else float("nan")
        low, high = bootstrap_ci(valid, seed)
        records.append(dict(zip(GROUP_COLUMNS, keys)) | {
            "n": n, "mean": float(np.mean(valid)) if n else float("nan"), "sd": sd,
            "se": sd / np.sqrt(n) if n > 1 else float("nan"), "ci_low": low, "ci_high": high,
            "n_degenerate": int(undefined.sum()), "n_flagged": int(all_flagged[at].sum()),
        })
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)
