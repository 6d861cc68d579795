"""Map forms: the post-processed views of a raw saliency map that metrics compare.

A form is registered once (`@form`) with its name, the forms it is computed from (`RAW`, the map
[H, W, C]; `IMAGE`, the model input the map explains; or other forms) and a compute function:
`batched=True` forms take the stacked inputs of many maps of one size and return one value per map
(HOG features, ranks), the others one map's inputs. A `PreparedMap` holds one raw map and computes
each form it is asked for once, from its inputs, and keeps it; `fill` computes the forms a batch of
maps needs, each once per map, a batched form in one call per map size.

The forms follow docs/protocol.md §4 (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"):
absolute and signed (diverging) visualisation maps, the min-max scaled raw map SSIM and HOG see,
HOG features, the foreground of the input (docs/protocol.md §5.3), and average ranks.
Pure numpy / scipy / scikit-image: this package must not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings

_PERCENTILE = 99.0  # clip level of 3-channel maps (PAIR's VisualizeImageGrayscale/Diverging default)
_HOG_REFERENCE_CELL_PX = 16  # the paper's HOG cell size ...
_HOG_REFERENCE_SIZE_PX = 299  # ... meant for Inception's 299 px inputs
_HOG_MIN_CELL_PX = 2


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


def _scale_rows(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each map of the stack x [n, ...] divided by its scale [n], or zeros where the scale is 0 (an
    all-zero map: no division-by-zero warnings)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    positive = scale > 0
    return np.where(positive.reshape(shape), x / np.where(positive, scale, 1.0).reshape(shape), 0.0)


def absolute_map(m: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] float64 in [0, 1]: sum of |value| over channels.

    C > 1 (Inception): clip at the 99th percentile and divide by it (PAIR's VisualizeImageGrayscale).
    C == 1 (MNIST): divide by max |value|, no clip. An all-zero map stays all zeros.
    """
    return _absolute_maps(_as_hwc(m)[None])[0]


def _absolute_maps(raw: np.ndarray) -> np.ndarray:
    """absolute_map of each map of a stack [n, H, W, C] (float64) -> [n, H, W]."""
    a = np.abs(raw).sum(axis=3)
    peak = a.max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(a, peak)
    p = np.percentile(a.reshape(len(a), -1), _PERCENTILE, axis=1)
    # Fewer than 1 % of pixels are non-zero (e.g. a very sparse map): clipping at the percentile
    # would erase them all, so fall back to dividing by the max instead.
    clipped = (p > 0).reshape(-1, 1, 1)
    return np.where(clipped, _scale_rows(np.minimum(a, p.reshape(-1, 1, 1)), p), _scale_rows(a, peak))


def signed_map(m: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] float64 in [-1, 1]: signed sum s over channels.

    C > 1: PAIR's `VisualizeImageDiverging`: span = |99th percentile of s| (of the signed values),
    then (s + span) / (2 span) clipped to [-1, 1], i.e. s clipped to [-3 span, span] (s = 0 -> 0.5).
    When span is 0 (PAIR would divide by zero) span = max |s| instead.
    C == 1 (MNIST): s / max |s|, no clip. An all-zero map stays all zeros.
    """
    return _signed_maps(_as_hwc(m)[None])[0]


def _signed_maps(raw: np.ndarray) -> np.ndarray:
    """signed_map of each map of a stack [n, H, W, C] (float64) -> [n, H, W]."""
    s = raw.sum(axis=3)
    mag = np.abs(s).max(axis=(1, 2))
    if raw.shape[3] == 1:
        return _scale_rows(s, mag)
    span = np.abs(np.percentile(s.reshape(len(s), -1), _PERCENTILE, axis=1))
    span = np.where(span == 0, mag, span)  # e.g. fewer than 1 % positive pixels: as in absolute_map
    return np.clip(_scale_rows(s + span.reshape(-1, 1, 1), 2 * span), -1.0, 1.0)


def minmax01(m2d: np.ndarray) -> np.ndarray:
    """Min-max scale a map (any shape; one global min and max) to [0, 1]; a constant map gives zeros.

    The notebook's normalize_image (which also cast to float32; here float64) when given the raw map."""
    return _minmax_maps(np.asarray(m2d, dtype=np.float64)[None])[0]


def _minmax_maps(maps: np.ndarray) -> np.ndarray:
    """minmax01 of each map of a stack [n, ...] (float64)."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    shape = (-1,) + (1,) * (maps.ndim - 1)
    return _scale_rows(maps - lo.reshape(shape), np.where(hi > lo, hi - lo, 0.0))


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


def _hog_features_batch(batch01: np.ndarray, s: MetricSettings) -> np.ndarray:
    """skimage's HOG (L2-Hys blocks, feature vector) of N maps [N, H, W] or [N, H, W, C] at once -> [N, F].

    Written here because `skimage.feature.hog` works map by map, its cells' histograms in a Cython
    loop per map and its blocks normalized in a Python loop: ~5-10 ms a 28 x 28 map with 2 px cells
    (144 blocks), most of the cost of scoring small maps. Here the histograms (`_cell_histograms`) and
    the block normalization are numpy expressions over all maps. tests/test_metrics.py checks the
    result equals `skimage.feature.hog` map by map.
    """
    n, height, width = batch01.shape[:3]
    cell, block = hog_geometry(height, width, s)
    orientations = int(s.hog_orientations)
    histograms = _cell_histograms(*_dominant_gradients(batch01), cell, orientations)
    # [n, block rows, block cols, orientations, b, b] -> skimage's order [n, br, bc, b, b, orientations]
    # (copied to one contiguous row per block: sums over the strided window view took twice as long;
    # always a copy, also where the view is contiguous (1-cell blocks): it is normalized in place)
    blocks = np.array(sliding_window_view(histograms, (block, block), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3),
                      order="C").reshape(n, -1, block * block * orientations)
    eps = 1e-5  # skimage's
    # Each block's sum of squares by einsum: np.sum over the last axis of 81 values took 4x as long
    # (summed in another order: within one ulp of it, and of skimage's; see tests/test_metrics.py)
    # In place (blocks is this function's own copy): the same values without another array its size
    blocks /= np.sqrt(np.einsum("nbk,nbk->nb", blocks, blocks)[..., None] + eps**2)
    np.minimum(blocks, 0.2, out=blocks)
    blocks /= np.sqrt(np.einsum("nbk,nbk->nb", blocks, blocks)[..., None] + eps**2)
    return blocks.reshape(n, -1)


def _dominant_gradients(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) gradients [N, H, W] of N maps [N, H, W] or [N, H, W, C] as skimage's HOG takes
    them: with channels, at each pixel those of the channel with the largest gradient magnitude (first
    on ties). All maps in one numpy expression: map by map it was a third of scoring 28 x 28 maps."""
    if batch.ndim == 4 and batch.shape[3] == 1:
        batch = batch[..., 0]
    g_row, g_col = _central_differences(batch)
    if batch.ndim == 3:
        return g_row, g_col
    best = np.hypot(g_row, g_col).argmax(axis=3)[..., None]
    return np.take_along_axis(g_row, best, axis=3)[..., 0], np.take_along_axis(g_col, best, axis=3)[..., 0]


def _central_differences(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) gradients of maps [N, H, W, ...] as skimage's HOG takes them: centred
    differences, zero on the border."""
    g_row, g_col = np.zeros_like(batch), np.zeros_like(batch)
    g_row[:, 1:-1, :] = batch[:, 2:, :] - batch[:, :-2, :]
    g_col[:, :, 1:-1] = batch[:, :, 2:] - batch[:, :, :-2]
    return g_row, g_col


def _cell_histograms(g_rows: np.ndarray, g_cols: np.ndarray, cell: int, orientations: int) -> np.ndarray:
    """HOG cell histograms [N, rows, cols, orientations] of N maps' gradients [N, H, W], the values of
    scikit-image's kernel (`skimage.feature._hoghistogram.hog_histograms`, which `hog` calls map by
    map) bit for bit (tests/test_metrics.py), for all maps in one set of numpy operations: its loop
    over every cell, orientation and pixel took 2-3x as long (~8 ms a unit of 100 MNIST maps).

    What the kernel computes, and so this: each pixel's magnitude `hypot` and orientation
    `rad2deg(arctan2) % 180` in float64; a pixel belongs to orientation bin i when
    i * 180 / orientations <= orientation < (i + 1) * 180 / orientations (bounds in float64; an
    orientation past the last bound, 180.0 after rounding, is in none); a cell's bin sums its pixels'
    magnitudes in row-major order in a C `float` (each partial sum rounded to float32) and divides by
    the cell's pixel count in float32. Cells tile the map from its top left corner; the pixels of a
    partial cell at the bottom or right edge are in none.
    """
    n = len(g_rows)
    rows, cols = g_rows.shape[1] // cell, g_rows.shape[2] // cell
    g_rows, g_cols = g_rows[:, :rows * cell, :cols * cell], g_cols[:, :rows * cell, :cols * cell]
    magnitude = np.hypot(g_cols, g_rows).reshape(n, rows, cell, cols, cell)
    # NaN gradients (the kernel would add them to every bin) cannot reach here: scoring skips maps
    # with non-finite values.
    bins = _orientation_bins(np.rad2deg(np.arctan2(g_rows, g_cols)), orientations)
    # bins as indices into the flat sums [n, rows, cols, orientations + 1]
    bins = bins.reshape(n, rows, cell, cols, cell)
    bins += (np.arange(n * rows * cols) * (orientations + 1)).reshape(n, rows, 1, cols, 1)
    sums = np.zeros(n * rows * cols * (orientations + 1), np.float32)
    for dr in range(cell):  # the cells' pixels in the kernel's order: one pixel of every cell at a time
        for dc in range(cell):
            at = bins[:, :, dr, :, dc]  # one bin per cell: no index repeats
            sums[at] = sums[at] + magnitude[:, :, dr, :, dc]  # float32 + float64, rounded to float32
    sums = sums.reshape(n, rows, cols, orientations + 1)[..., :orientations]
    return (sums / np.float32(cell * cell)).astype(np.float64)


def _orientation_bins(degrees: np.ndarray, orientations: int) -> np.ndarray:
    """The HOG bin of each gradient angle in [-180, 180] degrees, as scikit-image's kernel bins it: of
    orientation = degrees % 180, bin i where i * 180 / orientations <= orientation < (i + 1) * 180 /
    orientations (bounds in float64); `orientations` where it is past the last bound (in no bin: a
    tiny negative angle's orientation rounds to 180.0). tests/test_metrics.py checks it at and beside
    every bound."""
    # degrees % 180 as numpy computes it (but -0.0 for 0.0: the same bin) in a sixth of its time:
    # numpy's float remainder goes through fmod
    orientation = np.where(degrees < 0, degrees + 180.0, degrees)
    orientation[degrees == 180.0] = 0.0
    # The quotient by the bin width, then moved by one where the bounds say otherwise: it is within an
    # ulp of exact, and at a bound falls on either side of it for some bin counts.
    bounds = 180.0 / orientations * np.arange(orientations + 2)
    bins = np.minimum((orientation * (orientations / 180.0)).astype(np.intp), orientations)
    bins -= orientation < bounds[bins]
    bins += orientation >= bounds[bins + 1]
    return bins


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


# --------------------------------------------------------------------------------------------
# The form registry
# --------------------------------------------------------------------------------------------

RAW = "raw"  # every map's own input: the raw map as float64 [H, W, C]
IMAGE = "image"  # the model input the map explains, [H, W, C] or [H, W] (given with the map, or absent)
_BASE = (RAW, IMAGE)  # what a form can be computed from besides the registered forms


@dataclass(frozen=True)
class Form:
    """A registered map form: `compute(*inputs, settings)`, the inputs named by `inputs` (a tuple,
    or a function of the settings returning one). `batched`: each input comes stacked over maps of
    one size, and the result holds one value per map."""

    name: str
    inputs: tuple[str, ...] | Callable[[MetricSettings], tuple[str, ...]]
    compute: Callable[..., Any]
    batched: bool = False
    about: str = ""  # one line saying what the form is (for error messages)

    def inputs_for(self, settings: MetricSettings) -> tuple[str, ...]:
        return tuple(self.inputs(settings)) if callable(self.inputs) else self.inputs


#: name -> Form, in registration order.
FORMS: dict[str, Form] = {}


def form(name: str, inputs: Sequence[str] | Callable[[MetricSettings], tuple[str, ...]], *,
         batched: bool = False, about: str = "") -> Callable:
    """Decorator registering `compute(*inputs, settings)` as the map form `name` (returned unchanged)."""
    def register(compute: Callable) -> Callable:
        if name in FORMS or name in _BASE:
            raise ValueError(f"map form {name!r} is already registered")
        FORMS[name] = Form(name, inputs if callable(inputs) else tuple(inputs), compute, batched, about)
        return compute
    return register


def get_form(name: str) -> Form:
    if name not in FORMS:
        raise ValueError(f"unknown map form {name!r}; known forms: {', '.join((*_BASE, *FORMS))}")
    return FORMS[name]


def closure(names: Iterable[str], settings: MetricSettings) -> list[str]:
    """The forms `names` and every form they are computed from, each after its inputs (RAW and
    IMAGE, which every map has, left out)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in _BASE or name in order:
            return
        if name in path:
            raise ValueError(f"map forms computed from each other: {' -> '.join((*path, name))}")
        for source in get_form(name).inputs_for(settings):
            visit(source, (*path, name))
        order.append(name)

    for name in names:
        visit(name, ())
    return order


def image_reader(names: Iterable[str], settings: MetricSettings) -> Form | None:
    """The first of the forms `names`, or of those they are computed from, that reads the input
    image; None if none does."""
    for name in closure(names, settings):
        if IMAGE in FORMS[name].inputs_for(settings):
            return FORMS[name]
    return None


# Above this share of exact zeros (a map's background) numpy's stable sort beats its quicksort.
_TIED_SHARE = 0.2


def average_ranks(stack: np.ndarray) -> np.ndarray:
    """The average ranks (1-based, float64; ties get their mean rank) of each row of `stack` [n, m]
    of finite values: scipy.stats.rankdata(stack, axis=1), bit for bit (tests/test_metrics.py).

    Written here because rankdata always sorts stably, and on MNIST maps with few ties numpy's
    (SIMD) quicksort takes half the time; on maps that are mostly one value (a zero background) the
    stable sort is 2-6x faster (measured 2026-12-03, 20 x 784 and 1 x 89,401 values). Average ranks
    do not depend on the order of tied values, so the sort is chosen by the share of zeros. A stack
    without ties (a dense gradient map) needs no averaging: its ranks are the sorted positions.
    The sorted values are gathered and the ranks scattered through flat indices (take_along_axis
    and put_along_axis took twice as long); in all, ~0.4 of rankdata's time with ties and ~0.2
    without (20 x 784 values, 2026-12-04).
    """
    x = np.asarray(stack)
    n, m = x.shape
    kind = "stable" if np.count_nonzero(x == 0) > _TIED_SHARE * x.size else "quicksort"
    at = np.argsort(x, axis=1, kind=kind).reshape(-1)  # flat indices of each row's values, in order
    at += np.repeat(np.arange(0, n * m, max(m, 1)), m)
    ordered = x.reshape(-1)[at]
    starts_group = np.empty(n * m, bool)  # where a run of equal values begins, row by row
    np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
    starts_group[::max(m, 1)] = True
    starts = np.flatnonzero(starts_group)
    ranks = np.empty(n * m)
    if len(starts) == n * m:  # no ties: rank = sorted position + 1
        ranks[at] = np.tile(np.arange(1.0, m + 1.0), n)
    else:  # a run at sorted positions p .. p + c - 1 (0-based) has mean rank p + (c + 1) / 2: exact halves
        counts = np.diff(starts, append=n * m)
        ranks[at] = np.repeat(starts % max(m, 1) + (counts + 1) / 2, counts)
    return ranks.reshape(n, m)


def ranks_of(source: str, *, batched: bool = True) -> None:
    """Register the form `rank_<source>`: the average ranks of the flattened form `source` (ties get
    their mean rank, as in scipy.stats.spearmanr: the MNIST background is one huge tie).
    `batched=False` for a source whose size differs from map to map."""
    about = f"average ranks of the {source!r} form"
    if batched:
        form(f"rank_{source}", (source,), batched=True, about=about)(
            lambda stack, settings: average_ranks(stack.reshape(len(stack), -1)))
    else:
        form(f"rank_{source}", (source,), about=about)(lambda x, settings: average_ranks(x.reshape(1, -1))[0])


# --------------------------------------------------------------------------------------------
# The forms
# --------------------------------------------------------------------------------------------


# The post-processed maps as batched forms: one numpy expression per stack of maps, not a Python
# call per map (a fifth of scoring 100 MNIST maps).
@form("abs", (RAW,), batched=True, about="|map| summed over channels, scaled to [0, 1] (absolute_map)")
def _absolute(raw: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _absolute_maps(raw)


@form("signed", (RAW,), batched=True, about="the map summed over channels, scaled to [-1, 1] (signed_map)")
def _signed(raw: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _signed_maps(raw)


@form("raw01", (RAW,), batched=True, about="the raw map, all channels, min-max scaled to [0, 1]")
def _raw01(raw: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _minmax_maps(raw)


@form("abs01", ("abs",), batched=True, about="the absolute map, min-max scaled to [0, 1]")
def _abs01(absolute: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _minmax_maps(absolute)


# Batched, so a chunk's stack is its source's batch itself: stacking it map by map for SSIM and HOG
# copied each chunk three times a side.
@form("ssim_hog", lambda settings: (settings.ssim_hog_map,), batched=True,
      about="the map SSIM and HOG see (ssim_hog_map)")
def _ssim_hog(maps01: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return maps01


def ssim_window_mean(stack: np.ndarray, settings: MetricSettings) -> np.ndarray:
    """The mean over SSIM's window around each pixel of each map of a stack [n, H, W] or [n, H, W, C],
    as skimage's `structural_similarity` filters one map (uniform window of ssim_window px, or
    Gaussian weights with ssim_sigma and ssim_truncate; skimage >= 0.15 fixes truncate at 3.5): along H
    and W only (size 1 / sigma 0 on the other axes, which scipy skips), so each map's values are the
    same in any stack."""
    spatial = (0, 1, 1) + (0,) * (stack.ndim - 3)
    if settings.ssim_gaussian:
        sigma = tuple(float(settings.ssim_sigma) * a for a in spatial)
        return ndimage.gaussian_filter(stack, sigma, mode="reflect", truncate=float(settings.ssim_truncate))
    return ndimage.uniform_filter(stack, tuple(int(settings.ssim_window) if a else 1 for a in spatial))


@form("ssim_moments", ("ssim_hog",), batched=True,
      about="the local means of the ssim_hog form and of its square, [2, H, W(, C)] a map (SSIM's window)")
def ssim_moments(maps01: np.ndarray, settings: MetricSettings) -> np.ndarray:
    # one filter call for both: [2n, ...] filtered, then [n, 2, ...] (each map's pair in its row)
    both = ssim_window_mean(np.concatenate([maps01, maps01 * maps01]), settings)
    return both.reshape(2, *maps01.shape).swapaxes(0, 1)


@form("hog", ("ssim_hog",), batched=True, about="the HOG feature vector of the ssim_hog form")
def _hog(maps01: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _hog_features_batch(maps01, settings)


@form("fg", (RAW, IMAGE), about="foreground = non-zero input pixels")
def _fg(raw: np.ndarray, image: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return _foreground(image, raw.shape[:2])


@form("abs_fg", ("abs", "fg"), about="the absolute map's foreground pixels")
def _abs_fg(absolute: np.ndarray, fg: np.ndarray, settings: MetricSettings) -> np.ndarray:
    return absolute[fg]


ranks_of("abs")
ranks_of("signed")
ranks_of("abs_fg", batched=False)  # the foreground's size differs from image to image
ranks_of("hog")


def unit_rows(stack: np.ndarray) -> np.ndarray:
    """Each row of a stack [n, ...] flattened, centred and scaled to unit length (float64 [n, F]), so
    that the Pearson correlation of two maps is the sum of their rows' products (a row of zero
    variance is NaN: its correlations are undefined). Sums of elementwise products, not np.dot:
    OpenBLAS's dot splits vectors of 10,000+ elements (a 28 x 28 map's HOG vector has 11,664) across
    threads, which took ~3 ms a call on 2 busy cores (cProfile of a cascading_mlp run: 45 s of 140)."""
    flat = np.asarray(stack, np.float64).reshape(len(stack), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(centred * centred, axis=1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        centred /= norms  # in place: `centred` is this function's own array
    return centred


def unit_of(source: str) -> None:
    """Register the form `unit_<source>` (see unit_rows): a reference map's is computed once for all
    the maps compared with it, half of each correlation's work."""
    form(f"unit_{source}", (source,), batched=True, about=f"the {source!r} form centred, of unit length")(
        lambda stack, settings: unit_rows(stack))


for _source in ("rank_abs", "rank_signed", "hog", "rank_hog"):
    unit_of(_source)


# --------------------------------------------------------------------------------------------
# Prepared maps
# --------------------------------------------------------------------------------------------


class PreparedMap:
    """One raw map [H, W, C] (and the input image it explains, if given) with its forms, each
    computed on first use, from its inputs, and kept.

    The runner compares each original map with the map of every randomization step: preparing the
    original once halves the HOG and ranking work, the bulk of scoring small maps.
    """

    def __init__(self, raw: np.ndarray, settings: MetricSettings, image: np.ndarray | None = None,
                 finite: bool | None = None):
        self.raw = _as_hwc(raw)
        self.settings = settings
        self.image = image
        # `finite`: whether every value is, when the caller checked a whole stack at once (prepare_stack)
        self.finite = bool(np.all(np.isfinite(self.raw))) if finite is None else finite
        self._forms: dict[str, Any] = {}
        self._batches: dict[str, tuple[np.ndarray, int]] = {}

    def __getitem__(self, name: str) -> Any:
        """The form `name`: a registered form, RAW or IMAGE."""
        if name == RAW:
            return self.raw
        if name == IMAGE:
            if self.image is None:
                raise ValueError("the map was prepared without its input image")
            return self.image
        if name not in self._forms:
            self._forms[name] = self._compute(get_form(name))
        return self._forms[name]

    def has(self, name: str) -> bool:
        return name in self._forms

    def store(self, name: str, value: Any, batch: tuple[np.ndarray, int] | None = None) -> None:
        """Keep a form computed elsewhere (for a whole batch at once, see `fill`): `batch`, the
        batch's array and this map's row in it (see `stack`)."""
        self._forms[name] = value
        if batch is not None:
            self._batches[name] = batch

    def _compute(self, f: Form) -> Any:
        sources = f.inputs_for(self.settings)
        if IMAGE in sources and self.image is None:
            raise ValueError(f"map form {f.name!r} needs the input image ({f.about})")
        inputs = [self[source] for source in sources]
        if f.batched:
            return f.compute(*(x[None] for x in inputs), self.settings)[0]
        return f.compute(*inputs, self.settings)


def prepare_stack(raws: np.ndarray, settings: MetricSettings,
                  images: Sequence[np.ndarray | None] | np.ndarray) -> list[PreparedMap]:
    """PreparedMaps of a stack of raw maps [n, H, W, C] or [n, H, W], converted to float64 as one
    array whose rows are the maps' raw maps (`stack` of RAW is then that array, not a copy): a
    unit's maps, converted map by map and stacked again by each form of the raw map, cost ~2 ms a
    unit of 100 MNIST maps."""
    batch = np.asarray(raws, np.float64)
    if batch.ndim == 3:
        batch = batch[..., None]
    finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)  # a call per map cost ~0.5 ms a unit
    maps = [PreparedMap(raw, settings, image, bool(ok)) for raw, image, ok in zip(batch, images, finite, strict=True)]
    for row, m in enumerate(maps):
        m._batches[RAW] = (batch, row)
    return maps


def distinct(maps: Iterable[PreparedMap]) -> list[PreparedMap]:
    """`maps` without repeats (a map listed twice, as a reference compared with itself, once), in order."""
    return list({id(m): m for m in maps}.values())


def fill(maps: Sequence[PreparedMap], ordered: Sequence[str], settings: MetricSettings) -> None:
    """Compute the forms `ordered` of every one of `maps` lacking them: distinct maps of one size
    (see `distinct`, `by_shape`), the forms in `closure` order (each after its inputs), a batched form
    in one call for all the maps. The scorer calls it once per metric and chunk, with each metric's
    forms planned once per batch."""
    for name in ordered:
        f = FORMS[name]
        todo = [m for m in maps if name not in m._forms]
        if not todo:
            continue
        if not f.batched:
            for m in todo:
                m[name]  # computed and kept
            continue
        values = f.compute(*(stack(todo, source) for source in f.inputs_for(settings)), settings)
        for row, m in enumerate(todo):
            m.store(name, values[row], (values, row))


def stack(maps: Sequence[PreparedMap], name: str) -> np.ndarray:
    """The form `name` of each map, stacked: the batch array itself (no copy) when the maps are one
    run of rows of the batch `fill` computed it in, as the runner's references are at every step."""
    batches = [m._batches.get(name) for m in maps]
    first = batches[0]
    if first is not None and all(b is not None and b[0] is first[0] and b[1] == first[1] + k
                                 for k, b in enumerate(batches)):
        return first[0][first[1]:first[1] + len(maps)]
    return np.stack([m[name] for m in maps])


def by_shape(items: list, shape_of: Callable[[Any], Sequence[int]]) -> list[list]:
    """`items` grouped by `shape_of(item)` (order kept within a group): one stack per map size."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(tuple(shape_of(item)), []).append(item)
    return list(groups.values())
