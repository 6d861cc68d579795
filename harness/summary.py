"""summary.csv: the per-(model, variant, step, metric) statistics of the `scores.csv` rows (TensorFlow-free)."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from harness.results import GROUP_COLUMNS, SUMMARY_COLUMNS

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN when fewer than two values) over BOOTSTRAP_SAMPLES
    resamples drawn as `default_rng(seed).choice(values, (samples, n))` draws them."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    means = values[_resamples(len(values), seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@functools.lru_cache(maxsize=8)
def _resamples(n: int, seed: int) -> np.ndarray:
    """The indices a seeded choice of n values draws, shared by every group of n values (drawing them
    costs most of a group's CI). Read-only: a cached array must not change."""
    indices = np.random.default_rng(seed).choice(n, size=(BOOTSTRAP_SAMPLES, n), replace=True)
    indices.flags.writeable = False
    return indices


def summarize(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean, SD, SE and a 95 % bootstrap CI per group. Undefined scores (NaN) are left out and counted
    in `n_degenerate`; a finite score flagged `degenerate` is the test's real outcome (eMPRT's -1 for a
    collapsed map, docs/protocol.md §5.1): in the mean and in `n`, and counted in `n_flagged`."""
    grouped = scores.groupby(GROUP_COLUMNS, sort=False, dropna=False)
    group = grouped.ngroup().to_numpy()  # numbered in order of first appearance, as the groups are listed
    # Each group's rows as positions into plain arrays: faster than a sub-DataFrame per group.
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
