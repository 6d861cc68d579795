"""Map forms: the post-processed views of a raw saliency map that metrics compare (docs/protocol.md §4).

Each form is a function of a stack of maps of one size [n, ...] -> one value per map, computed from
one other form (`FORMS`): the absolute and signed visualisation maps (PAIR's VisualizeImageGrayscale
and VisualizeImageDiverging), the min-max scaled map SSIM and HOG see, HOG features (harness.metrics.hog)
and average ranks (`scipy.stats.rankdata`). This package must not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from harness.metrics.hog import hog_features

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings

RAW = "raw"  # every map's own input: the raw map as float64 [H, W, C]
_PERCENTILE = 99.0  # clip level of 3-channel maps (PAIR's VisualizeImageGrayscale/Diverging default)


def as_hwc(m: np.ndarray) -> np.ndarray:
    """A float64 [H, W, C] view; a 2-D [H, W] map is one channel."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise ValueError(f"expected a saliency map of shape [H, W, C] or [H, W], got shape {m.shape}")
    return m


def _scale_rows(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each map of the stack x [n, ...] divided by its scale [n], zeros where the scale is 0 (no warnings)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    positive = scale > 0
    return np.where(positive.reshape(shape), x / np.where(positive, scale, 1.0).reshape(shape), 0.0)


def absolute_maps(raw: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H, W] float64 in [0, 1]: sum of |value| over channels. C > 1: clipped at the 99th
    percentile and divided by it (PAIR's VisualizeImageGrayscale), by the max where that percentile is 0;
    C == 1 (MNIST): divided by the max, no clip."""
    a = np.abs(raw).sum(axis=3)
    peak = a.max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(a, peak)
    p = np.percentile(a.reshape(len(a), -1), _PERCENTILE, axis=1)
    clipped = (p > 0).reshape(-1, 1, 1)
    return np.where(clipped, _scale_rows(np.minimum(a, p.reshape(-1, 1, 1)), p), _scale_rows(a, peak))


def signed_maps(raw: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H, W] float64 in [-1, 1]: signed sum s over channels. C > 1: PAIR's
    VisualizeImageDiverging, (s + span) / (2 span) clipped, span = |99th percentile of s| (max |s| where
    that is 0, where PAIR divides by zero); C == 1 (MNIST): s / max |s|, no clip."""
    s = raw.sum(axis=3)
    mag = np.abs(s).max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(s, mag)
    span = np.abs(np.percentile(s.reshape(len(s), -1), _PERCENTILE, axis=1))
    span = np.where(span == 0, mag, span)
    return np.clip(_scale_rows(s + span.reshape(-1, 1, 1), 2 * span), -1.0, 1.0)


def minmax_maps(maps: np.ndarray) -> np.ndarray:
    """Each map of a stack [n, ...] min-max scaled to [0, 1] (a constant map: zeros): the notebook's
    normalize_image, in float64."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    shape = (-1,) + (1,) * (maps.ndim - 1)
    return _scale_rows(maps - lo.reshape(shape), np.where(hi > lo, hi - lo, 0.0))


def absolute_map(m: np.ndarray) -> np.ndarray:
    """One map [H, W, C] or [H, W] -> its absolute map [H, W] (see absolute_maps)."""
    return absolute_maps(as_hwc(m)[None])[0]


def signed_map(m: np.ndarray) -> np.ndarray:
    """One map [H, W, C] or [H, W] -> its signed map [H, W] (see signed_maps)."""
    return signed_maps(as_hwc(m)[None])[0]


def minmax01(m: np.ndarray) -> np.ndarray:
    """One map (any shape) min-max scaled to [0, 1] (see minmax_maps)."""
    return minmax_maps(np.asarray(m, dtype=np.float64)[None])[0]


def average_ranks(stack: np.ndarray) -> np.ndarray:
    """Average ranks (ties: their mean rank, as scipy.stats.spearmanr) of each flattened map of a stack -> [n, F]."""
    return stats.rankdata(stack.reshape(len(stack), -1), axis=1)


def unit_rows(stack: np.ndarray) -> np.ndarray:
    """Each row of a stack [n, ...] flattened, centred and scaled to unit length (float64 [n, F]; NaN for a
    row of zero variance): the Pearson correlation of two rows is the sum of their products."""
    flat = np.asarray(stack, np.float64).reshape(len(stack), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(centred * centred, axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        centred /= norms
    return centred


@dataclass(frozen=True)
class Form:
    """`compute(stack of the source form, settings)` -> one value per map; `source`: a form's name, or a
    function of the settings giving it."""

    source: str | Callable[[MetricSettings], str]
    compute: Callable[[np.ndarray, MetricSettings], np.ndarray]

    def source_for(self, settings: MetricSettings) -> str:
        return self.source(settings) if callable(self.source) else self.source


#: name -> Form; each map's forms are computed once, on first use (scoring.Side).
FORMS: dict[str, Form] = {
    "abs": Form(RAW, lambda raw, s: absolute_maps(raw)),
    "signed": Form(RAW, lambda raw, s: signed_maps(raw)),
    "raw01": Form(RAW, lambda raw, s: minmax_maps(raw)),  # all channels
    "abs01": Form("abs", lambda absolute, s: minmax_maps(absolute)),
    "ssim_hog": Form(lambda s: s.ssim_hog_map, lambda maps01, s: maps01),  # the map SSIM and HOG see
    "hog": Form("ssim_hog", hog_features),
    **{f"rank_{name}": Form(name, lambda stack, s: average_ranks(stack)) for name in ("abs", "signed", "hog")},
}
