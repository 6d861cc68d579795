"""Map forms: the post-processed views of a raw saliency map that metrics compare (docs/protocol.md §4,
Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Every form is a function of a stack of maps of one size [n, ...] -> one value per map, computed from
one other form (`FORMS`): the absolute and signed visualisation maps (PAIR's VisualizeImageGrayscale
and VisualizeImageDiverging), the min-max scaled map SSIM and HOG see, HOG features (scikit-image's,
batched: harness.metrics.hog) and average ranks (`scipy.stats.rankdata`). Pure NumPy / SciPy /
scikit-image: this package must not import TensorFlow.
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
    """Return a float64 [H, W, C] view; a 2-D [H, W] map is treated as one channel."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise ValueError(f"expected a saliency map of shape [H, W, C] or [H, W], got shape {m.shape}")
    return m


def _scale_rows(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each map of the stack x [n, ...] divided by its scale [n], or zeros where the scale is 0 (an
    all-zero map: no division-by-zero warnings)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    positive = scale > 0
    return np.where(positive.reshape(shape), x / np.where(positive, scale, 1.0).reshape(shape), 0.0)


def absolute_maps(raw: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H, W] float64 in [0, 1]: sum of |value| over channels.

    C > 1 (Inception): clip at the 99th percentile and divide by it (PAIR's VisualizeImageGrayscale);
    where that percentile is 0 (fewer than 1 % non-zero pixels) divide by the max instead.
    C == 1 (MNIST): divide by max |value|, no clip. An all-zero map stays all zeros.
    """
    a = np.abs(raw).sum(axis=3)
    peak = a.max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(a, peak)
    p = np.percentile(a.reshape(len(a), -1), _PERCENTILE, axis=1)
    clipped = (p > 0).reshape(-1, 1, 1)
    return np.where(clipped, _scale_rows(np.minimum(a, p.reshape(-1, 1, 1)), p), _scale_rows(a, peak))


def signed_maps(raw: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H, W] float64 in [-1, 1]: signed sum s over channels.

    C > 1: PAIR's `VisualizeImageDiverging`: span = |99th percentile of s|, then (s + span) / (2 span)
    clipped to [-1, 1]; when span is 0 (PAIR would divide by zero) span = max |s| instead.
    C == 1 (MNIST): s / max |s|, no clip. An all-zero map stays all zeros.
    """
    s = raw.sum(axis=3)
    mag = np.abs(s).max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(s, mag)
    span = np.abs(np.percentile(s.reshape(len(s), -1), _PERCENTILE, axis=1))
    span = np.where(span == 0, mag, span)
    return np.clip(_scale_rows(s + span.reshape(-1, 1, 1), 2 * span), -1.0, 1.0)


def minmax_maps(maps: np.ndarray) -> np.ndarray:
    """Each map of a stack [n, ...] min-max scaled to [0, 1] (one min and max a map; a constant map
    gives zeros): the notebook's normalize_image, in float64."""
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
    """Average ranks (ties get their mean rank, as in scipy.stats.spearmanr: the MNIST background is
    one huge tie) of each flattened map of a stack [n, ...] -> [n, F]."""
    return stats.rankdata(stack.reshape(len(stack), -1), axis=1)


def unit_rows(stack: np.ndarray) -> np.ndarray:
    """Each row of a stack [n, ...] flattened, centred and scaled to unit length (float64 [n, F]): the
    Pearson correlation of two rows is then the sum of their products (see metrics.correlation).
    A row of zero variance is NaN."""
    flat = np.asarray(stack, np.float64).reshape(len(stack), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(centred * centred, axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        centred /= norms
    return centred


@dataclass(frozen=True)
class Form:
    """A map form: `compute(stack of the source form, settings)` -> a stack of one value per map.
    `source` is a form's name, or a function of the settings giving it."""

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
