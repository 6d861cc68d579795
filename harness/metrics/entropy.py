"""eMPRT (Hedström et al. 2024, "A Fresh Look at Sanity Checks for Saliency Maps"): the relative rise
in an explanation's entropy when the model is randomized, registered as the metric `emprt`.

    q = (H(e_randomized) - H(e_original)) / H(e_original)

H is the discrete entropy (natural log, `scipy.stats.entropy`) of a histogram of the map's values,
all channels, with `np.histogram`'s bins over the map's own min..max: `emprt_bins` of them (100 by
default) or one of numpy's bin rules by name. The runner scores it at every step like the
similarities; Hedström et al.'s value is the row of the fully randomized model, bottom-up (the last
step of `schedule=bottom_up`). Unlike the similarities, higher is better: a map that keeps its low
entropy on a random model did not depend on the weights.

A constant original map has entropy 0 and q is undefined (NaN, with the reason); a constant
randomized map gives q = -1, the test's real outcome: flagged, and counted in the mean
(docs/protocol.md §5.1). A map that is not constant but whose histogram has one bin (a bin rule
such as `fd` on a map of mostly equal values: its interquartile range is 0) has entropy 0 only by
the bin rule: q is undefined (NaN), and the reason names the rule.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from harness.metrics.forms import RAW
from harness.metrics.reasons import NAN, Result, constant_reason
from harness.metrics.settings import BIN_RULES

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings

__all__ = ["BIN_RULES", "emprt", "histogram_entropy"]


def histogram_entropy(values: np.ndarray, bins: int | str) -> float:
    """Entropy (nats) of the histogram of `values` with `bins` over their own min..max."""
    counts, _ = np.histogram(np.ravel(values), bins=bins)
    return float(stats.entropy(counts))


def emprt(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """(H(compared) - H(reference)) / H(reference), reference = the original map (one signature with
    the other metrics, harness.metrics.metrics)."""
    results = []
    for a, b in zip(ref[RAW], cmp[RAW], strict=True):
        h_ref, h_cmp = histogram_entropy(a, settings.emprt_bins), histogram_entropy(b, settings.emprt_bins)
        one_bin = _one_bin_reason(h_ref, a, "reference", settings) or _one_bin_reason(h_cmp, b, "compared", settings)
        if one_bin:
            results.append((NAN, one_bin))
        elif h_ref == 0:
            results.append((NAN, "zero entropy: constant map (reference)"))
        else:
            results.append(((h_cmp - h_ref) / h_ref, constant_reason(a, b)))
    return results


def _one_bin_reason(entropy: float, raw: np.ndarray, side: str, settings: MetricSettings) -> str:
    """Why a map that is not constant has entropy 0: its histogram got one bin from the bin rule."""
    if entropy != 0 or np.ptp(raw) == 0:
        return ""
    return (f"zero entropy: emprt_bins={settings.emprt_bins} gives one histogram bin for a map that is not "
            f"constant ({side}; most of its values are equal); use a bin count of 2 or more")
