"""Post-processing of saliency maps and similarity scores between two maps.

Implements section 4 of the reference protocol (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps"): absolute and signed (diverging) visualisation maps, Spearman rank correlation of both,
SSIM and HOG similarity, a foreground-only Spearman (pitfall 3), and random masks for the
calibration control. Pure numpy / scipy / scikit-image: this module must not import TensorFlow.

Undefined scores (pitfall 1) are never zero-filled: a constant map makes Spearman and the HOG
correlation undefined, so the score is NaN with ``degenerate=True`` and a reason saying which side
was constant. The caller counts and reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage, stats
from numpy.lib.stride_tricks import sliding_window_view
from skimage.feature import hog
from skimage.metrics import structural_similarity

try:  # scikit-image's Cython cell histograms, see _hog_features_batch
    from skimage.feature._hoghistogram import hog_histograms as _skimage_hog_histograms
except ImportError:  # pragma: no cover - a future scikit-image moved it: the public hog is used
    _skimage_hog_histograms = None

from harness.errors import HarnessError

__all__ = [
    "METRIC_NAMES",
    "MASK_KINDS",
    "MetricSettings",
    "Score",
    "absolute_map",
    "signed_map",
    "minmax01",
    "SSIM_HOG_MAPS",
    "hog_geometry",
    "compare",
    "prepare",
    "PreparedMap",
    "compare_batch",
    "random_mask",
]

#: Every metric ``compare`` knows, in a stable order.
METRIC_NAMES: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog", "spearman_abs_fg")
#: Correlations usable on the two HOG feature vectors (paper: Pearson, notebook: Spearman).
HOG_CORRELATIONS: tuple[str, ...] = ("pearson", "spearman")
#: Map forms SSIM and HOG can see: `raw01` the raw, signed map (all channels) min-max scaled to
#: [0, 1] (protocol section 4, the notebook's normalize_image); `abs01` the absolute map, min-max scaled.
SSIM_HOG_MAPS: tuple[str, ...] = ("raw01", "abs01")
#: Distributions of the calibration masks.
MASK_KINDS: tuple[str, ...] = ("gaussian", "uniform")

_PERCENTILE = 99.0  # clip level of 3-channel maps (PAIR's VisualizeImageGrayscale/Diverging default)
_HOG_REFERENCE_CELL_PX = 16  # the paper's HOG cell size ...
_HOG_REFERENCE_SIZE_PX = 299  # ... meant for Inception's 299 px inputs
_HOG_MIN_CELL_PX = 2


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSettings:
    """Which metrics to compute and how. Defaults are the paper's preset (``conf/metrics/paper.yaml``)."""

    # Which metrics to compute, in this order; valid names: METRIC_NAMES.
    metrics: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog")
    ssim_window: int = 5  # paper text: skimage SSIM, window 5 (uniform filter)
    ssim_gaussian: bool = False  # notebook: Gaussian weights, sigma 1.5, window 11
    ssim_sigma: float = 1.5
    ssim_data_range: float = 1.0  # always passed explicitly to skimage (maps are min-max [0, 1])
    # skimage's default, both presets: NP / (NP - 1) with NP = ssim_window ** 2 (also with Gaussian
    # weights, as skimage does); False: population covariance (Wang et al. 2004).
    ssim_sample_covariance: bool = True
    # Gaussian weights only: filter radius int(truncate * sigma + 0.5). skimage >= 0.15 (the notebook
    # pinned 0.15.0) uses 3.5, an 11-tap filter; skimage 0.14 took scipy's default 4.0 (13 taps).
    ssim_truncate: float = 3.5
    # The map SSIM and HOG see (SSIM_HOG_MAPS): raw01 (protocol, paper text "without abs", notebook)
    # or abs01 (the absolute map, min-max scaled; what this harness used before).
    ssim_hog_map: str = "raw01"
    hog_cell_px: int | None = None  # None -> round(16 * size / 299), at least 2 (see hog_geometry)
    hog_orientations: int = 9
    # Reduced automatically (see hog_geometry) when the image has fewer cells than this per side,
    # e.g. a tiny image with large cells; 28 px MNIST with the scaled 2 px cells keeps 3x3.
    hog_cells_per_block: int = 3
    hog_correlation: str = "pearson"  # paper: Pearson; notebook: Spearman
    preset: str = "paper"  # recorded in outputs

    def __post_init__(self) -> None:
        # Validate on construction so that both from_config and direct use fail early and clearly.
        metrics = self.metrics
        if isinstance(metrics, str):  # a single name, e.g. from a command-line override
            metrics = (metrics,)
        metrics = tuple(str(m) for m in metrics)
        object.__setattr__(self, "metrics", metrics)
        if not metrics:
            raise HarnessError(f"metrics: at least one metric is needed; valid names: {', '.join(METRIC_NAMES)}")
        for name in metrics:
            if name not in METRIC_NAMES:
                raise HarnessError(f"unknown metric {name!r}; valid names: {', '.join(METRIC_NAMES)}")
        if len(set(metrics)) != len(metrics):
            raise HarnessError(f"metrics: duplicate names in {list(metrics)}")
        if self.hog_correlation not in HOG_CORRELATIONS:
            raise HarnessError(
                f"unknown hog_correlation {self.hog_correlation!r}; valid names: {', '.join(HOG_CORRELATIONS)}"
            )
        if int(self.ssim_window) < 3 or int(self.ssim_window) % 2 == 0:
            raise HarnessError(f"ssim_window must be an odd integer >= 3, got {self.ssim_window!r}")
        if not float(self.ssim_data_range) > 0:
            raise HarnessError(f"ssim_data_range must be > 0, got {self.ssim_data_range!r}")
        if not float(self.ssim_sigma) > 0:
            raise HarnessError(f"ssim_sigma must be > 0, got {self.ssim_sigma!r}")
        if not float(self.ssim_truncate) > 0:
            raise HarnessError(f"ssim_truncate must be > 0, got {self.ssim_truncate!r}")
        if self.ssim_hog_map not in SSIM_HOG_MAPS:
            raise HarnessError(f"unknown ssim_hog_map {self.ssim_hog_map!r}; valid names: {', '.join(SSIM_HOG_MAPS)}")
        if self.hog_cell_px is not None and int(self.hog_cell_px) < 1:
            raise HarnessError(f"hog_cell_px must be >= 1 or null, got {self.hog_cell_px!r}")
        if int(self.hog_orientations) < 1 or int(self.hog_cells_per_block) < 1:
            raise HarnessError("hog_orientations and hog_cells_per_block must be >= 1")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "MetricSettings":
        """Build from a Hydra/omegaconf node or a plain dict (keys = field names; missing -> default).

        Unknown keys are an error too (a typo must not silently fall back to a default).
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key in cfg:  # works for dict and omegaconf DictConfig alike
            if key not in known:
                raise HarnessError(f"unknown metrics setting {key!r}; valid settings: {', '.join(sorted(known))}")
            values[key] = cfg[key]
        # Coerce YAML scalars (e.g. `ssim_data_range: 1`) and ListConfig to the declared types.
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = tuple(values["metrics"])
        for key in ("ssim_window", "hog_orientations", "hog_cells_per_block"):
            if key in values:
                values[key] = int(values[key])
        for key in ("ssim_sigma", "ssim_data_range", "ssim_truncate"):
            if key in values:
                values[key] = float(values[key])
        if values.get("hog_cell_px") is not None:
            values["hog_cell_px"] = int(values["hog_cell_px"])
        for key in ("ssim_gaussian", "ssim_sample_covariance"):
            if key in values:
                values[key] = bool(values[key])
        for key in ("hog_correlation", "preset", "ssim_hog_map"):
            if key in values:
                values[key] = str(values[key])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict of every setting (for run.json)."""
        record = asdict(self)
        record["metrics"] = list(self.metrics)
        return record


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def _as_hwc(m: np.ndarray) -> np.ndarray:
    """Return a float64 [H, W, C] view; a 2-D [H, W] map is treated as one channel."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise ValueError(f"expected a saliency map of shape [H, W, C] or [H, W], got shape {m.shape}")
    return m


def _scale_by(x: np.ndarray, scale: float) -> np.ndarray:
    """x / scale, or zeros when scale is 0 (all-zero map: no division-by-zero warnings)."""
    if scale > 0:
        return x / scale
    return np.zeros_like(x)


def absolute_map(m: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] float64 in [0, 1]: sum of |value| over channels.

    C > 1 (Inception): clip at the 99th percentile and divide by it (PAIR's VisualizeImageGrayscale).
    C == 1 (MNIST): divide by max |value|, no clip. An all-zero map stays all zeros.
    """
    m = _as_hwc(m)
    a = np.abs(m).sum(axis=2)
    if m.shape[2] == 1:
        return _scale_by(a, float(a.max()))
    p = float(np.percentile(a, _PERCENTILE))
    if p > 0:
        return np.minimum(a, p) / p
    # Fewer than 1 % of pixels are non-zero (e.g. a very sparse map): clipping at the percentile
    # would erase them all, so fall back to dividing by the max instead.
    return _scale_by(a, float(a.max()))


def signed_map(m: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] float64 in [-1, 1]: signed sum s over channels.

    C > 1: PAIR's `VisualizeImageDiverging`: span = |99th percentile of s| (of the signed values),
    then (s + span) / (2 span) clipped to [-1, 1], i.e. s clipped to [-3 span, span] (s = 0 -> 0.5).
    When span is 0 (PAIR would divide by zero) span = max |s| instead.
    C == 1 (MNIST): s / max |s|, no clip. An all-zero map stays all zeros.
    """
    m = _as_hwc(m)
    s = m.sum(axis=2)
    mag = float(np.abs(s).max())
    if m.shape[2] == 1:
        return _scale_by(s, mag)
    span = abs(float(np.percentile(s, _PERCENTILE)))
    if span == 0:  # e.g. fewer than 1 % positive pixels: the sparse-map fallback, as in absolute_map
        span = mag
    if span == 0:
        return np.zeros_like(s)
    return np.clip((s + span) / (2 * span), -1.0, 1.0)


def minmax01(m2d: np.ndarray) -> np.ndarray:
    """Min-max scale a map (any shape; one global min and max) to [0, 1]; a constant map gives zeros.

    The notebook's normalize_image (which also cast to float32; here float64) when given the raw map."""
    m2d = np.asarray(m2d, dtype=np.float64)
    lo, hi = float(m2d.min()), float(m2d.max())
    if hi > lo:
        return (m2d - lo) / (hi - lo)
    return np.zeros_like(m2d)


def hog_geometry(height: int, width: int, settings: MetricSettings) -> tuple[int, int]:
    """(cell size in px, cells per block side) actually used for an image of this size.

    Cell size: settings.hog_cell_px, or scaled to the image: round(16 * min(H, W) / 299), at least
    2 px (16 px is the paper's value for 299 px inputs; 28 px MNIST gets 2 px cells).
    Cells per block: settings.hog_cells_per_block, reduced when the image has fewer cells than that
    along a side (skimage's hog would otherwise fail or return an empty feature vector).
    """
    cell = settings.hog_cell_px
    if cell is None:
        cell = max(_HOG_MIN_CELL_PX, round(_HOG_REFERENCE_CELL_PX * min(height, width) / _HOG_REFERENCE_SIZE_PX))
    n_cells = min(height // cell, width // cell)
    if n_cells < 1:
        raise ValueError(f"image of {height}x{width} px is smaller than one HOG cell of {cell} px")
    return cell, min(settings.hog_cells_per_block, n_cells)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    metric: str
    value: float  # NaN when undefined
    degenerate: bool
    reason: str  # "" or why the score is degenerate / undefined


def _is_constant(x: np.ndarray) -> bool:
    return x.size == 0 or bool(x.min() == x.max())


def _constant_reason(ref: np.ndarray, cmp: np.ndarray, what: str = "constant map") -> str:
    """'' if neither side is constant, else e.g. 'constant map (reference)'."""
    sides = [name for name, x in (("reference", ref), ("compared", cmp)) if _is_constant(x)]
    return f"{what} ({' and '.join(sides)})" if sides else ""


def _flag(reason: str) -> tuple[bool, str]:
    """(degenerate, reason) from a reason string."""
    return bool(reason), reason


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # The textbook formula, as scipy.stats.pearsonr's result (to ~1e-16): pearsonr's input handling
    # costs ~10 ms a call (scipy 1.16) and np.corrcoef's ~0.2 ms, which dominated scoring small
    # maps. Callers rule out constants; the clip keeps rounding inside [-1, 1], as both do.
    xc = x.ravel() - x.mean(dtype=np.float64)
    yc = y.ravel() - y.mean(dtype=np.float64)
    return float(np.clip(np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc)), -1.0, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    # Ties get average ranks (scipy's default, as in spearmanr): the MNIST background is one huge tie.
    return stats.rankdata(x.ravel())


def _correlation_score(metric: str, ref: np.ndarray, cmp: np.ndarray, ref_corr: np.ndarray,
                       cmp_corr: np.ndarray, what: str = "constant map") -> Score:
    """Pearson of (ref_corr, cmp_corr), NaN + degenerate when `ref` or `cmp` is constant.
    Spearman is Pearson of the average ranks, exactly as scipy.stats.spearmanr computes it."""
    reason = _constant_reason(ref, cmp, what)
    if reason:
        return Score(metric, float("nan"), True, reason)
    return Score(metric, _pearson(ref_corr, cmp_corr), False, "")


def _ssim(ref01: np.ndarray, cmp01: np.ndarray, s: MetricSettings) -> float:
    return float(_ssim_batch(ref01[None], cmp01[None], s)[0])


def _ssim_batch(ref01: np.ndarray, cmp01: np.ndarray, s: MetricSettings) -> np.ndarray:
    """skimage's `structural_similarity` of each pair of [n, H, W] or [n, H, W, C] float64 maps, over
    the whole stack; with channels, skimage's per-channel SSIM averaged (`channel_axis=-1`, the
    notebook's `multichannel=True`).

    Why not call skimage: it takes one pair a call, ~0.2 ms of Python around five small filters (a
    fifth of scoring a 28 x 28 pair). Here the same filters run along H and W of the stack (size 1 /
    sigma 0 on the batch and channel axes, which scipy skips), then skimage's formula and border crop;
    the tests compare with skimage. `ssim_window` sets the uniform window, the crop and NP of the
    sample covariance NP / (NP - 1) (as skimage: NP = win ** 2 with Gaussian weights too); Gaussian
    weights: sigma and truncate from the settings (skimage >= 0.15 fixes truncate at 3.5)."""
    win = int(s.ssim_window)
    if min(ref01.shape[1:3]) < win:  # skimage's own error for a window larger than the map
        structural_similarity(ref01[0], cmp01[0], win_size=win, data_range=float(s.ssim_data_range),
                              channel_axis=-1 if ref01.ndim == 4 else None)
    spatial = (0, 1, 1) + (0,) * (ref01.ndim - 3)  # filter along H and W only
    if s.ssim_gaussian:
        sigma = tuple(float(s.ssim_sigma) * a for a in spatial)
        truncate = float(s.ssim_truncate)
        smooth = lambda v: ndimage.gaussian_filter(v, sigma, mode="reflect", truncate=truncate)  # noqa: E731
    else:
        size = tuple(win if a else 1 for a in spatial)
        smooth = lambda v: ndimage.uniform_filter(v, size)  # noqa: E731
    cov_norm = win ** 2 / (win ** 2 - 1) if s.ssim_sample_covariance else 1.0
    x, y = np.asarray(ref01, np.float64), np.asarray(cmp01, np.float64)
    ux, uy = smooth(x), smooth(y)
    vx = cov_norm * (smooth(x * x) - ux * ux)
    vy = cov_norm * (smooth(y * y) - uy * uy)
    vxy = cov_norm * (smooth(x * y) - ux * uy)
    c1, c2 = (0.01 * float(s.ssim_data_range)) ** 2, (0.03 * float(s.ssim_data_range)) ** 2
    similarity = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    height, width = similarity.shape[1:3]
    cropped = similarity[:, pad:height - pad, pad:width - pad]
    return cropped.reshape(len(cropped), -1).mean(axis=1, dtype=np.float64)


def _hog_features(img01: np.ndarray, s: MetricSettings) -> np.ndarray:
    """skimage's HOG of one [H, W] or [H, W, C] map (channels: per pixel, the channel with the largest
    gradient, as the notebook's skimage 0.15 did for 3-D input)."""
    cell, block = hog_geometry(img01.shape[0], img01.shape[1], s)
    if img01.ndim == 3 and img01.shape[2] == 1:
        img01 = img01[..., 0]
    return hog(
        img01,
        channel_axis=-1 if img01.ndim == 3 else None,
        orientations=int(s.hog_orientations),
        pixels_per_cell=(cell, cell),
        cells_per_block=(block, block),
        block_norm="L2-Hys",
        feature_vector=True,
    )


def _hog_features_batch(batch01: np.ndarray, s: MetricSettings) -> np.ndarray:
    """skimage's HOG (L2-Hys blocks, feature vector) of N maps [N, H, W] or [N, H, W, C] at once -> [N, F].

    Written here because `skimage.feature.hog` normalizes its blocks in a Python loop: ~5-10 ms
    for a 28x28 map with 2 px cells (144 blocks), most of the cost of scoring small maps. The cell
    histograms still come from scikit-image's own Cython kernel; only the block normalization is
    one vectorized numpy expression over all maps. tests/test_similarity.py checks the result equals
    `skimage.feature.hog` map by map.
    """
    n, height, width = batch01.shape[:3]
    if _skimage_hog_histograms is None:
        return np.stack([_hog_features(m, s) for m in batch01])
    cell, block = hog_geometry(height, width, s)
    orientations = int(s.hog_orientations)
    rows, cols = height // cell, width // cell
    histograms = np.zeros((n, rows, cols, orientations))
    for m, histogram in zip(batch01, histograms):
        g_row, g_col = _dominant_gradient(m)
        _skimage_hog_histograms(g_col, g_row, cell, cell, width, height, cols, rows, orientations, histogram)
    # [n, block rows, block cols, orientations, b, b] -> skimage's order [n, br, bc, b, b, orientations]
    blocks = sliding_window_view(histograms, (block, block), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
    eps = 1e-5  # skimage's
    out = blocks / np.sqrt(np.sum(blocks**2, axis=(3, 4, 5), keepdims=True) + eps**2)
    out = np.minimum(out, 0.2)
    out = out / np.sqrt(np.sum(out**2, axis=(3, 4, 5), keepdims=True) + eps**2)
    return out.reshape(n, -1)


def _dominant_gradient(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) gradients of an [H, W] or [H, W, C] map as skimage's HOG takes them: with
    channels, at each pixel those of the channel with the largest gradient magnitude (first on ties)."""
    if m.ndim == 2:
        return _central_differences(m)
    if m.shape[2] == 1:
        return _central_differences(m[..., 0])
    g_row, g_col = zip(*(_central_differences(m[..., c]) for c in range(m.shape[2])))
    g_row, g_col = np.stack(g_row, axis=2), np.stack(g_col, axis=2)
    best = np.hypot(g_row, g_col).argmax(axis=2)[..., None]
    return np.take_along_axis(g_row, best, axis=2)[..., 0], np.take_along_axis(g_col, best, axis=2)[..., 0]


def _central_differences(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) gradients as skimage's HOG takes them: centred differences, zero on the border."""
    g_row, g_col = np.zeros_like(m), np.zeros_like(m)
    g_row[1:-1, :] = m[2:, :] - m[:-2, :]
    g_col[:, 1:-1] = m[:, 2:] - m[:, :-2]
    return g_row, g_col


def _foreground(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Boolean [H, W]: pixels where the input is non-zero in any channel."""
    img = np.asarray(image)
    if img.ndim == 3:
        fg = np.any(img != 0, axis=2)
    elif img.ndim == 2:
        fg = img != 0
    else:
        raise ValueError(f"expected an image of shape [H, W, C] or [H, W], got shape {img.shape}")
    if fg.shape != hw:
        raise ValueError(f"image of spatial shape {fg.shape} does not match maps of spatial shape {hw}")
    return fg


class PreparedMap:
    """One raw map [H, W, C] with its post-processed forms (absolute, signed, min-max, ranks, HOG
    features), each computed on first use and kept.

    The runner compares each original map with the map of every randomization step: preparing the
    original once halves the HOG and ranking work, the bulk of scoring small maps.
    """

    def __init__(self, raw: np.ndarray, settings: MetricSettings, image: np.ndarray | None = None):
        self.raw = _as_hwc(raw)
        self.settings = settings
        self.image = image
        self.finite = bool(np.all(np.isfinite(self.raw)))
        self._forms: dict[str, np.ndarray] = {}

    def __getitem__(self, form: str) -> np.ndarray:
        """'abs', 'signed', 'raw01', 'abs01', 'ssim_hog' (whichever of raw01 / abs01 the settings
        name), 'hog', 'fg' (foreground mask), 'abs_fg', or 'rank_' + any of them."""
        if form not in self._forms:
            self._forms[form] = self._compute(form)
        return self._forms[form]

    def has(self, form: str) -> bool:
        return form in self._forms

    def store(self, form: str, value: np.ndarray) -> None:
        """Keep a form computed elsewhere (the HOG features of a whole batch at once)."""
        self._forms[form] = value

    def _compute(self, form: str) -> np.ndarray:
        if form.startswith("rank_"):
            return _ranks(self[form.removeprefix("rank_")])
        if form == "abs":
            return absolute_map(self.raw)
        if form == "signed":
            return signed_map(self.raw)
        if form == "raw01":
            return minmax01(self.raw)
        if form == "abs01":
            return minmax01(self["abs"])
        if form == "ssim_hog":
            return self[self.settings.ssim_hog_map]
        if form == "hog":
            return _hog_features_batch(self["ssim_hog"][None], self.settings)[0]
        if form == "fg":
            if self.image is None:
                raise ValueError("metric 'spearman_abs_fg' needs the input image (foreground = non-zero input pixels)")
            return _foreground(self.image, self.raw.shape[:2])
        if form == "abs_fg":
            return self["abs"][self["fg"]]
        raise ValueError(f"unknown map form {form!r}")


def prepare(m: np.ndarray | PreparedMap, settings: MetricSettings, image: np.ndarray | None = None) -> PreparedMap:
    """`m` as a PreparedMap for `settings` (returned as is when it already is one for them)."""
    if isinstance(m, PreparedMap) and m.settings == settings:
        return m
    raw = m.raw if isinstance(m, PreparedMap) else m
    return PreparedMap(raw, settings, image)


def compare(
    reference: np.ndarray | PreparedMap,
    compared: np.ndarray | PreparedMap,
    settings: MetricSettings,
    image: np.ndarray | None = None,
    known: Mapping[str, float] | None = None,
) -> list[Score]:
    """Score the similarity of two raw maps [H, W, C] (C = 1 or 3); one Score per settings.metrics.

    - spearman_abs / spearman_signed: Spearman of the flattened absolute_map / signed_map.
    - ssim: skimage SSIM of the min-max map settings.ssim_hog_map: raw01 = minmax01(raw map), all
      channels (per-channel SSIM averaged), or abs01 = minmax01(absolute_map(.)); window / weights /
      covariance / data range from settings.
    - hog: Pearson or Spearman of the skimage HOG vectors of that same min-max map.
    - spearman_abs_fg: spearman_abs restricted to foreground pixels (input non-zero in any
      channel); needs ``image``. The maps are post-processed on the full image, then masked.

    Either side may be a PreparedMap (see `prepare`) to reuse its post-processing across calls;
    `known` holds metric values computed for a whole batch (`compare_batch`'s SSIM).
    Spearman / HOG correlation of a constant map are undefined: NaN, degenerate, reason. SSIM of a
    constant map is defined by skimage: the value is kept but flagged degenerate.
    """
    ref, cmp = prepare(reference, settings, image), prepare(compared, settings, image)
    if ref.raw.shape != cmp.raw.shape:
        raise ValueError(f"maps differ in shape: reference {ref.raw.shape}, compared {cmp.raw.shape}")
    if "spearman_abs_fg" in settings.metrics and image is None and ref.image is None:
        raise ValueError("metric 'spearman_abs_fg' needs the input image (foreground = non-zero input pixels)")

    bad = [name for name, m in (("reference", ref), ("compared", cmp)) if not m.finite]
    if bad:  # NaN/inf in a map (e.g. a diverging method): every metric is undefined
        reason = f"non-finite values ({' and '.join(bad)})"
        return [Score(name, float("nan"), True, reason) for name in settings.metrics]
    return [_score(metric, ref, cmp, settings, known or {}) for metric in settings.metrics]


def _score(metric: str, ref: PreparedMap, cmp: PreparedMap, settings: MetricSettings,
           known: Mapping[str, float]) -> Score:
    if metric in ("spearman_abs", "spearman_signed"):
        form = metric.removeprefix("spearman_")
        return _correlation_score(metric, ref[form], cmp[form], ref[f"rank_{form}"], cmp[f"rank_{form}"])
    if metric == "spearman_abs_fg":
        if not ref["fg"].any():
            return Score(metric, float("nan"), True, "no foreground pixels")
        return _correlation_score(metric, ref["abs_fg"], cmp["abs_fg"], ref["rank_abs_fg"], cmp["rank_abs_fg"],
                                  "constant map on foreground")
    if metric == "ssim":
        a, b = ref["ssim_hog"], cmp["ssim_hog"]
        value = known["ssim"] if "ssim" in known else _ssim(a, b, settings)
        return Score(metric, value, *_flag(_constant_reason(a, b)))
    if metric == "hog":
        reason = _constant_reason(ref["ssim_hog"], cmp["ssim_hog"])  # a constant map has all-zero HOG features
        if reason:
            return Score(metric, float("nan"), True, reason)
        form = "hog" if settings.hog_correlation == "pearson" else "rank_hog"
        return _correlation_score(metric, ref["hog"], cmp["hog"], ref[form], cmp[form], "constant HOG features")
    raise HarnessError(f"unknown metric {metric!r}; valid names: {', '.join(METRIC_NAMES)}")  # validated earlier


def compare_batch(
    references: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    compareds: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    settings: MetricSettings,
    images: Sequence[np.ndarray] | np.ndarray | None = None,
) -> list[list[Score]]:
    """compare() over the leading (batch) dimension; images, if given, must match in length.

    The ranks and HOG features of all maps, and the SSIM of all pairs, are computed in batched
    calls (see _hog_features_batch, _ssim_batch).
    """
    if len(references) != len(compareds):
        raise ValueError(f"batch sizes differ: {len(references)} references, {len(compareds)} compared maps")
    if images is not None and len(images) != len(references):
        raise ValueError(f"batch sizes differ: {len(references)} maps, {len(images)} images")
    imgs: Sequence = images if images is not None else [None] * len(references)
    refs = [prepare(r, settings, i) for r, i in zip(references, imgs)]
    cmps = [prepare(c, settings, i) for c, i in zip(compareds, imgs)]
    finite = [m for m in (*refs, *cmps) if m.finite]
    for form in ("abs", "signed"):
        if f"spearman_{form}" in settings.metrics:
            _fill(finite, f"rank_{form}", form, lambda batch: stats.rankdata(batch.reshape(len(batch), -1), axis=1))
    if "hog" in settings.metrics:
        _fill(finite, "hog", "ssim_hog", lambda batch: _hog_features_batch(batch, settings))
    ssim = _batched_ssim(refs, cmps, settings) if "ssim" in settings.metrics else {}
    return [compare(r, c, settings, image=i, known={"ssim": ssim[k]} if k in ssim else None)
            for k, (r, c, i) in enumerate(zip(refs, cmps, imgs))]


def _batched_ssim(refs: list[PreparedMap], cmps: list[PreparedMap], settings: MetricSettings) -> dict[int, float]:
    """{pair index: SSIM} for every pair of finite maps of one shape, one `_ssim_batch` call per
    shape. A pair whose maps differ in shape is left out: `compare` reports it."""
    pairs = [k for k, (r, c) in enumerate(zip(refs, cmps))
             if r.finite and c.finite and r.raw.shape == c.raw.shape]
    values: dict[int, float] = {}
    for group in _by_shape(pairs, lambda k: refs[k].raw.shape):
        batch = _ssim_batch(np.stack([refs[k]["ssim_hog"] for k in group]),
                            np.stack([cmps[k]["ssim_hog"] for k in group]), settings)
        values.update(zip(group, batch.tolist()))
    return values


def _fill(maps: list[PreparedMap], form: str, source: str, batch_fn) -> None:
    """Give every map lacking `form` its value, batch_fn(stacked `source` forms), one call per map size."""
    for group in _by_shape([m for m in maps if not m.has(form)], lambda m: m.raw.shape):
        for m, value in zip(group, batch_fn(np.stack([m[source] for m in group]))):
            m.store(form, value)


def _by_shape(items: list, shape_of) -> list[list]:
    """`items` grouped by `shape_of(item)` (order kept within a group): one stack per map size."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(tuple(shape_of(item)), []).append(item)
    return list(groups.values())


def random_mask(shape: Sequence[int] | int, rng: np.random.Generator, kind: str = "gaussian") -> np.ndarray:
    """Random map for the calibration control: 'gaussian' N(0, 1) or 'uniform' U[-1, 1], float32."""
    if kind == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    raise HarnessError(f"unknown random mask kind {kind!r}; valid names: {', '.join(MASK_KINDS)}")
