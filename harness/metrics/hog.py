"""HOG features (scikit-image's `skimage.feature.hog`: L2-Hys blocks, feature vector) of a stack of maps
in NumPy. Kept rather than calling scikit-image map by map for byte identity: skimage sums each block's
squares in another order, which moved 639 of the 1,440 HOG scores of a cascading_cnn run (mnist_cnn@1200,
20 images) by up to 4.4e-16; it was also slower (1.07-1.72x that run's wall time, five A/B pairs).
tests/test_metrics.py compares these features with the installed scikit-image's on every run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings

_HOG_REFERENCE_CELL_PX = 16  # the paper's HOG cell size ...
_HOG_REFERENCE_SIZE_PX = 299  # ... meant for Inception's 299 px inputs
_HOG_MIN_CELL_PX = 2


def hog_geometry(height: int, width: int, settings: MetricSettings) -> tuple[int, int]:
    """(cell size in px, cells per block side) used for an image of this size: settings.hog_cell_px, or
    the paper's 16 px for 299 px scaled to the image (at least 2 px: MNIST gets 2 px cells); cells per
    block reduced where the image has fewer cells along a side (skimage's hog would fail)."""
    cell = settings.hog_cell_px
    if cell is None:
        cell = max(_HOG_MIN_CELL_PX, round(_HOG_REFERENCE_CELL_PX * min(height, width) / _HOG_REFERENCE_SIZE_PX))
    n_cells = min(height // cell, width // cell)
    if n_cells < 1:
        raise ValueError(f"image of {height}x{width} px is smaller than one HOG cell of {cell} px")
    return cell, min(settings.hog_cells_per_block, n_cells)


def hog_features(batch01: np.ndarray, s: MetricSettings) -> np.ndarray:
    """skimage's HOG (L2-Hys blocks, feature vector) of N maps [N, H, W] or [N, H, W, C] at once -> [N, F]."""
    n, height, width = batch01.shape[:3]
    cell, block = hog_geometry(height, width, s)
    orientations = int(s.hog_orientations)
    histograms = _cell_histograms(*_dominant_gradients(batch01), cell, orientations)
    # [n, block rows, block cols, orientations, b, b] -> skimage's order [n, br, bc, b, b, orientations],
    # always copied (normalized in place below)
    blocks = np.array(sliding_window_view(histograms, (block, block), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3),
                      order="C").reshape(n, -1, block * block * orientations)
    eps = 1e-5  # skimage's
    # Each block's sum of squares by einsum (another order than skimage's: within one ulp of it)
    blocks /= np.sqrt(np.einsum("nbk,nbk->nb", blocks, blocks)[..., None] + eps**2)
    np.minimum(blocks, 0.2, out=blocks)
    blocks /= np.sqrt(np.einsum("nbk,nbk->nb", blocks, blocks)[..., None] + eps**2)
    return blocks.reshape(n, -1)


def _dominant_gradients(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) gradients [N, H, W] of N maps [N, H, W] or [N, H, W, C] as skimage's HOG takes them:
    with channels, at each pixel those of the channel of the largest gradient magnitude (first on ties)."""
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
    """HOG cell histograms [N, rows, cols, orientations] of N maps' gradients [N, H, W], bit for bit those
    of scikit-image's kernel (`skimage.feature._hoghistogram.hog_histograms`, tests/test_metrics.py):
    magnitude `hypot` and orientation `rad2deg(arctan2) % 180` in float64 (binned by `_orientation_bins`);
    a cell's bin sums its pixels' magnitudes in row-major order in float32 and divides by the pixel
    count in float32. Pixels of a partial cell at the bottom or right edge are in none."""
    n = len(g_rows)
    rows, cols = g_rows.shape[1] // cell, g_rows.shape[2] // cell
    g_rows, g_cols = g_rows[:, :rows * cell, :cols * cell], g_cols[:, :rows * cell, :cols * cell]
    magnitude = np.hypot(g_cols, g_rows).reshape(n, rows, cell, cols, cell)
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
    orientations (bounds in float64); `orientations` past the last bound (in no bin)."""
    # degrees % 180 (but -0.0 for 0.0: the same bin) without numpy's slow fmod
    orientation = np.where(degrees < 0, degrees + 180.0, degrees)
    orientation[degrees == 180.0] = 0.0
    # The quotient by the bin width is within an ulp: moved by one where the bounds say otherwise.
    bounds = 180.0 / orientations * np.arange(orientations + 2)
    bins = np.minimum((orientation * (orientations / 180.0)).astype(np.intp), orientations)
    bins -= orientation < bounds[bins]
    bins += orientation >= bounds[bins + 1]
    return bins
