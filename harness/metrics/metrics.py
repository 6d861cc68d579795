"""Similarity metrics between two saliency maps (docs/protocol.md §4, Adebayo et al. 2018): Spearman
rank correlation of the absolute and of the signed maps, SSIM and HOG similarity, a foreground-only
Spearman (docs/protocol.md §5.3) and eMPRT (harness.metrics.entropy).

Every metric has one signature, `compute(ref, cmp, settings) -> [(value, reason), ...]`: `ref` and
`cmp` are the two sides of a chunk of pairs of maps of one size (scoring.Side: `ref["abs"]` is the
stack of the reference maps' absolute forms), and it returns one result per pair, `reason` "" for a
sound value or why the value is degenerate. Undefined scores (§5.1) are never zero-filled: a constant
map makes Spearman and the HOG correlation undefined, so the score is NaN with a reason saying which
side was constant; SSIM of a constant map is defined, kept and flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from skimage.metrics import structural_similarity

from harness.metrics.entropy import emprt
from harness.metrics.forms import average_ranks, unit_rows
from harness.metrics.reasons import NAN, Result, constant_reason, constant_rows, reason

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings


@dataclass(frozen=True)
class Score:
    metric: str
    value: float  # NaN when undefined
    degenerate: bool
    reason: str  # "" or why the score is degenerate / undefined


@dataclass(frozen=True)
class Metric:
    """`compute(ref, cmp, settings)` (see the module docstring); `needs_image`: it reads the input
    images the maps explain (Side.images)."""

    compute: Callable[[Any, Any, MetricSettings], Sequence[Result]]
    needs_image: bool = False


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of rows of two stacks [n, ...] (NaN where a row is constant):
    the centred rows of unit length multiplied and summed, clipped to [-1, 1] as scipy.stats.pearsonr
    clips. Spearman is this of the average ranks, as scipy.stats.spearmanr computes it. NumPy, as
    SciPy's pearsonr works pair by pair."""
    return np.clip(np.sum(unit_rows(x) * unit_rows(y), axis=1), -1.0, 1.0)


def correlations(ref: Any, cmp: Any, form: str, corr_form: str, what: str = "constant map") -> list[Result]:
    """Pearson of the forms `corr_form` of each pair; NaN with a reason where the form `form` is
    constant on a side (a constant map has constant ranks and all-zero HOG features: only a pair whose
    correlation is NaN is checked)."""
    values = correlation(ref[corr_form], cmp[corr_form]).tolist()
    undefined = [k for k, value in enumerate(values) if value != value]
    if undefined:
        a, b = ref[form], cmp[form]
        for k in undefined:
            values[k] = constant_reason(a[k], b[k], what) or values[k]
    return [(NAN, value) if isinstance(value, str) else (value, "") for value in values]


def spearman_abs(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the absolute maps (forms.absolute_maps), all pixels."""
    return correlations(ref, cmp, "abs", "rank_abs")


def spearman_signed(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the signed maps (forms.signed_maps), all pixels."""
    return correlations(ref, cmp, "signed", "rank_signed")


def ssim(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """`skimage.metrics.structural_similarity` of the map settings.ssim_hog_map (raw01: the raw map,
    all channels, per-channel SSIM averaged; abs01: the absolute map); window, weights, covariance and
    data range from the settings (skimage fixes the Gaussian's truncate at 3.5: settings.ssim_truncate)."""
    a, b = ref["ssim_hog"], cmp["ssim_hog"]
    options = dict(win_size=int(settings.ssim_window), data_range=float(settings.ssim_data_range),
                   gaussian_weights=bool(settings.ssim_gaussian), sigma=float(settings.ssim_sigma),
                   use_sample_covariance=bool(settings.ssim_sample_covariance),
                   channel_axis=-1 if a.ndim == 4 else None)
    return [(float(structural_similarity(x, y, **options)), reason(cx, cy, "constant map"))
            for x, y, cx, cy in zip(a, b, constant_rows(a), constant_rows(b), strict=True)]


def hog_similarity(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Pearson or Spearman (settings.hog_correlation) of the skimage HOG vectors of the map SSIM sees."""
    features = correlations(ref, cmp, "hog", "hog" if settings.hog_correlation == "pearson" else "rank_hog",
                            "constant HOG features")
    # a constant map has all-zero HOG features (a NaN correlation): the map's own reason first
    return [(NAN, constant_reason(a, b) or why) if why else (value, why)
            for (value, why), a, b in zip(features, ref["ssim_hog"], cmp["ssim_hog"], strict=True)]


def spearman_abs_fg(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """spearman_abs restricted to the foreground (input non-zero in any channel, docs/protocol.md §5.3):
    the maps are post-processed on the full image, then masked. Needs the input image."""
    results = []
    for a, b, image in zip(ref["abs"], cmp["abs"], ref.images, strict=True):
        fg = foreground(image, a.shape)
        why = "no foreground pixels" if not fg.any() else constant_reason(a[fg], b[fg], "constant map on foreground")
        results.append((NAN, why) if why else
                       (float(correlation(average_ranks(a[fg][None]), average_ranks(b[fg][None]))[0]), ""))
    return results


def foreground(image: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    """Boolean [H, W]: pixels where the input is non-zero in any channel."""
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape [H, W, C] or [H, W], got shape {img.shape}")
    fg = np.any(img != 0, axis=2) if img.ndim == 3 else img != 0
    if fg.shape != tuple(hw):
        raise ValueError(f"image of spatial shape {fg.shape} does not match maps of spatial shape {tuple(hw)}")
    return fg


#: name -> Metric, in the order of settings.METRIC_NAMES (a test checks they agree).
METRICS: dict[str, Metric] = {
    "spearman_abs": Metric(spearman_abs),
    "spearman_signed": Metric(spearman_signed),
    "ssim": Metric(ssim),
    "hog": Metric(hog_similarity),
    "spearman_abs_fg": Metric(spearman_abs_fg, needs_image=True),
    "emprt": Metric(emprt),
}
