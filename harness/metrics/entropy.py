"""The histogram entropy eMPRT compares (Hedström et al. 2024; the metric: `metrics.emprt`)."""
from __future__ import annotations

import numpy as np
from scipy import stats


def histogram_entropy(values: np.ndarray, bins: int | str) -> float:
    """Entropy (nats) of the np.histogram of `values` with `bins` (a count or a bin rule) over their min..max."""
    counts, _ = np.histogram(np.ravel(values), bins=bins)
    return float(stats.entropy(counts))
