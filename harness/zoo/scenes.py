"""MNIST scenes: a deterministic segmentation dataset made from the shipped MNIST digits.

A 64x64 canvas with 1-4 digits at random positions and scales on a noisy, smoothly textured
background; every pixel labelled 0 (background) or 1 + d (a stroke of digit d): 11 classes. Held-out
scenes show only digits of the held-out split (`harness.zoo.mnist.load_split`). docs/segmentation.md.
"""
from __future__ import annotations

import numpy as np

from harness.zoo import mnist

SIZE = 64
CLASSES = 11
CLASS_NAMES = ("background", *(f"digit {d}" for d in range(10)))
DIGITS_PER_SCENE = (1, 4)
SCALES = (20, 36)          # a digit's rescaled side, px (MNIST's own is 28)
STROKE = 0.5               # a pixel is a digit's stroke where its intensity exceeds this
TRAIN_SEED, HELD_OUT_SEED = 0, 1
HELD_OUT_SCENES = 500      # the data source `mnist_scenes` (harness.data): the first N held-out scenes


def class_colors() -> list[tuple[float, float, float]]:
    """Black background, then ten distinct colours (matplotlib's tab10), RGB in [0, 1]."""
    from matplotlib import colormaps

    return [(0.0, 0.0, 0.0)] + [tuple(float(c) for c in colormaps["tab10"](d)[:3]) for d in range(10)]


def make_scenes(count: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images [count, 64, 64, 1] float32 in [0, 1], labels [count, 64, 64] int32) from the digits of
    MNIST split `split` (train | held_out)."""
    x_train, y_train, x_test, y_test = mnist.load_split()
    digits, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    rng = np.random.default_rng(TRAIN_SEED if split == "train" else HELD_OUT_SEED)
    images = np.empty((count, SIZE, SIZE, 1), np.float32)
    masks = np.empty((count, SIZE, SIZE), np.int32)
    for i in range(count):
        images[i, ..., 0], masks[i] = _scene(rng, digits[..., 0], labels)
    return images, masks


def _scene(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    canvas = _background(rng)
    label = np.zeros((SIZE, SIZE), np.int32)
    taken = np.zeros((SIZE, SIZE), bool)
    for _ in range(rng.integers(DIGITS_PER_SCENE[0], DIGITS_PER_SCENE[1] + 1)):
        k = int(rng.integers(len(digits)))
        side = int(rng.integers(SCALES[0], SCALES[1] + 1))
        digit = _resized(digits[k], side)
        # Up to 20 places; a digit whose box would overlap an earlier one is left out (clean labels).
        for _ in range(20):
            top, left = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
            if not taken[top:top + side, left:left + side].any():
                break
        else:
            continue
        taken[top:top + side, left:left + side] = True
        window = canvas[top:top + side, left:left + side]
        np.maximum(window, digit, out=window)
        label[top:top + side, left:left + side][digit > STROKE] = 1 + int(labels[k])
    return canvas, label


def _background(rng: np.random.Generator) -> np.ndarray:
    """Smooth texture (upsampled 8x8 noise) up to 0.3 plus white noise up to 0.1: never a stroke."""
    from scipy import ndimage

    texture = ndimage.zoom(rng.uniform(0, 0.3, (8, 8)), SIZE / 8, order=3, mode="mirror", grid_mode=True)
    return np.clip(texture + rng.uniform(0, 0.1, (SIZE, SIZE)), 0, 0.4).astype(np.float32)


def _resized(digit: np.ndarray, side: int) -> np.ndarray:
    from scipy import ndimage

    out = ndimage.zoom(digit, side / digit.shape[0], order=1, grid_mode=True, mode="nearest")[:side, :side]
    return np.clip(out, 0, 1).astype(np.float32)


def mean_iou(predicted: np.ndarray, truth: np.ndarray, classes: int = CLASSES) -> tuple[float, list[float]]:
    """Mean over classes of intersection / union over all pixels of all scenes (classes that occur
    in neither the prediction nor the truth are left out), and the per-class IoUs (NaN for those)."""
    per_class = []
    for c in range(classes):
        p, t = predicted == c, truth == c
        union = np.count_nonzero(p | t)
        per_class.append(np.count_nonzero(p & t) / union if union else float("nan"))
    return float(np.nanmean(per_class)), per_class
