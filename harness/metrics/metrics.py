"""The map forms metrics compare and the similarity metrics between two saliency maps (docs/protocol.md §4).

Forms (`FORMS`): functions of a stack of maps of one size -> one value per map, each from one other form.
Metrics (`METRICS`), each `compute(ref, cmp, settings) -> [(value, reason), ...]`: `ref` and `cmp` are the
two sides of a chunk of pairs of maps of one size (scoring.Side: `ref["abs"]` is the stack of the
reference maps' absolute forms), one result per pair, `reason` "" for a sound value or why it is
degenerate (§5.1). Undefined scores are NaN with the reason, never zero-filled (a constant map makes
Spearman and the HOG correlation undefined); SSIM of a constant map is defined, kept and flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from skimage.metrics import structural_similarity

from harness.errors import HarnessError
from harness.metrics.entropy import histogram_entropy
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


#: What a metric gives for each pair: the value and "" or why it is degenerate (NaN when undefined).
Result = tuple[float, str]
NAN = float("nan")
#: Distributions of the calibration control's random masks.
MASK_KINDS: tuple[str, ...] = ("gaussian", "uniform")


@dataclass(frozen=True)
class Score:
    metric: str
    value: float  # NaN when undefined
    degenerate: bool
    reason: str  # "" or why the score is degenerate / undefined


@dataclass(frozen=True)
class Metric:
    """`compute(ref, cmp, settings)` (see the module docstring); `needs_image`: it reads Side.images."""

    compute: Callable[[Any, Any, MetricSettings], Sequence[Result]]
    needs_image: bool = False


def constant_rows(stack: np.ndarray) -> np.ndarray:
    """Whether each map of a stack [n, ...] is constant."""
    flat = stack.reshape(len(stack), -1)
    return flat.min(axis=1) == flat.max(axis=1) if flat.shape[1] else np.ones(len(flat), bool)


def reason(ref_constant: bool, cmp_constant: bool, what: str) -> str:
    """'' if neither side is `what`, else e.g. 'constant map (reference and compared)'."""
    sides = [name for name, constant in (("reference", ref_constant), ("compared", cmp_constant)) if constant]
    return f"{what} ({' and '.join(sides)})" if sides else ""


def constant_reason(ref: np.ndarray, cmp: np.ndarray, what: str = "constant map") -> str:
    return reason(*(x.size == 0 or bool(x.min() == x.max()) for x in (ref, cmp)), what)


def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of rows of two stacks [n, ...] (NaN where a row is constant),
    clipped to [-1, 1] as scipy.stats.pearsonr clips; Spearman is this of the average ranks, as
    scipy.stats.spearmanr computes it. NumPy, as SciPy works pair by pair."""
    return np.clip(np.sum(unit_rows(x) * unit_rows(y), axis=1), -1.0, 1.0)


def correlations(ref: Any, cmp: Any, form: str, corr_form: str, what: str = "constant map") -> list[Result]:
    """Pearson of the forms `corr_form` of each pair; NaN with a reason where the form `form` is
    constant on a side (checked only where the correlation is NaN)."""
    values = correlation(ref[corr_form], cmp[corr_form]).tolist()
    undefined = [k for k, value in enumerate(values) if value != value]
    if undefined:
        a, b = ref[form], cmp[form]
        for k in undefined:
            values[k] = constant_reason(a[k], b[k], what) or values[k]
    return [(NAN, value) if isinstance(value, str) else (value, "") for value in values]


def spearman_abs(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the absolute maps, all pixels."""
    return correlations(ref, cmp, "abs", "rank_abs")


def spearman_signed(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the signed maps, all pixels."""
    return correlations(ref, cmp, "signed", "rank_signed")


def ssim(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """`skimage.metrics.structural_similarity` of the map settings.ssim_hog_map (raw01: per-channel SSIM
    averaged; abs01: the absolute map), with the settings' window, weights, covariance and data range."""
    a, b = ref["ssim_hog"], cmp["ssim_hog"]
    options = dict(win_size=int(settings.ssim_window), data_range=float(settings.ssim_data_range),
                   gaussian_weights=bool(settings.ssim_gaussian), sigma=float(settings.ssim_sigma),
                   use_sample_covariance=bool(settings.ssim_sample_covariance),
                   channel_axis=-1 if a.ndim == 4 else None)
    return [(float(structural_similarity(x, y, **options)), reason(cx, cy, "constant map"))
            for x, y, cx, cy in zip(a, b, constant_rows(a), constant_rows(b), strict=True)]


def hog_similarity(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """Pearson or Spearman (settings.hog_correlation) of the HOG vectors of the map SSIM sees."""
    features = correlations(ref, cmp, "hog", "hog" if settings.hog_correlation == "pearson" else "rank_hog",
                            "constant HOG features")
    # a constant map has all-zero HOG features (a NaN correlation): the map's own reason first
    return [(NAN, constant_reason(a, b) or why) if why else (value, why)
            for (value, why), a, b in zip(features, ref["ssim_hog"], cmp["ssim_hog"], strict=True)]


def spearman_abs_fg(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """spearman_abs on the foreground (input non-zero in any channel, docs/protocol.md §5.3) of the maps
    post-processed on the full image."""
    results = []
    for a, b, image in zip(ref["abs"], cmp["abs"], ref.images, strict=True):
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"expected an image of shape [H, W, C] or [H, W], got shape {image.shape}")
        fg = np.any(image != 0, axis=2) if image.ndim == 3 else image != 0
        if fg.shape != a.shape:
            raise ValueError(f"image of spatial shape {fg.shape} does not match maps of spatial shape {a.shape}")
        why = "no foreground pixels" if not fg.any() else constant_reason(a[fg], b[fg], "constant map on foreground")
        results.append((NAN, why) if why else
                       (float(correlation(average_ranks(a[fg][None]), average_ranks(b[fg][None]))[0]), ""))
    return results


def emprt(ref: Any, cmp: Any, settings: MetricSettings) -> list[Result]:
    """eMPRT's q = (H(compared) - H(reference)) / H(reference), reference = the original map (higher is
    better). A constant reference makes q undefined (NaN); a constant compared map gives q = -1, flagged
    (docs/protocol.md §5.1); a map that is not constant but whose bin rule gives one bin: NaN."""
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
    if entropy != 0 or np.ptp(raw) == 0:
        return ""
    return (f"zero entropy: emprt_bins={settings.emprt_bins} gives one histogram bin for a map that is not "
            f"constant ({side}; most of its values are equal); use a bin count of 2 or more")


#: name -> Metric, in the order of settings.METRIC_NAMES (a test checks they agree).
METRICS: dict[str, Metric] = {
    "spearman_abs": Metric(spearman_abs),
    "spearman_signed": Metric(spearman_signed),
    "ssim": Metric(ssim),
    "hog": Metric(hog_similarity),
    "spearman_abs_fg": Metric(spearman_abs_fg, needs_image=True),
    "emprt": Metric(emprt),
}


def random_mask(shape: Sequence[int] | int, rng: np.random.Generator, kind: str = "gaussian") -> np.ndarray:
    """Random map for the calibration control: 'gaussian' N(0, 1) or 'uniform' U[-1, 1], float32."""
    if kind == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    raise HarnessError(f"unknown random mask kind {kind!r}; valid names: {', '.join(MASK_KINDS)}")
