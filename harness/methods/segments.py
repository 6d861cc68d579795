"""XRAI's image segments: exactly PAIR's `saliency.core.xrai._get_segments_felzenszwalb(image)` masks
(the tests compare mask for mask), computed faster: the 224 x 224 resize per channel (skimage's 3-D
spline over a colour image is ~6x slower, same values), each mask dilated in its bounding box only.

Masks depend only on the image, so a cascading run segments each image once: `masks_of` keeps recent
images' masks in a process-wide LRU keyed by the image bytes' hash, within CACHE_BYTES.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from saliency.core import xrai as pair_xrai
from scipy import ndimage
from skimage import segmentation
from skimage.morphology import disk
from skimage.transform import resize

RESIZE = pair_xrai._FELZENSZWALB_IM_RESIZE
VALUE_RANGE = pair_xrai._FELZENSZWALB_IM_VALUE_RANGE
SCALES = pair_xrai._FELZENSZWALB_SCALE_VALUES
SIGMAS = pair_xrai._FELZENSZWALB_SIGMA_VALUES
MIN_SIZE = pair_xrai._FELZENSZWALB_MIN_SEGMENT_SIZE
DILATION_RADIUS = 5  # PAIR's default dilation_rad
CACHE_BYTES = 256 * 2 ** 20

Masks = list  # of int32 arrays: each mask's pixels as ascending flat indices (row-major, H x W)


def normalized(image: np.ndarray) -> np.ndarray:
    """PAIR's `_normalize_image(image, [-1, 1], (224, 224))`, one channel at a time."""
    low, high = VALUE_RANGE
    im_min, im_max = np.min(image), np.max(image)
    im = (image - im_min) / (im_max - im_min)
    im = im * (high - low) + low
    if im.ndim == 2:
        return resize(im, RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    channels = [resize(im[..., c], RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True,
                       clip=False) for c in range(im.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), np.min(im), np.max(im))  # skimage's clip, whole image


def dilated_masks(labels: np.ndarray, radius: int = DILATION_RADIUS) -> Masks:
    """One mask per label value from labels.min() to labels.max() (empty if absent), dilated by
    disk(radius) within its bounding box, as flat indices."""
    height, width = labels.shape
    low = labels.min()
    boxes = ndimage.find_objects(labels - low + 1)
    masks = []
    for offset in range(labels.max() - low + 1):
        box = boxes[offset] if offset < len(boxes) else None
        if box is None:
            masks.append(np.empty(0, np.int32))
            continue
        top, left = max(box[0].start - radius, 0), max(box[1].start - radius, 0)
        bottom, right = min(box[0].stop + radius, height), min(box[1].stop + radius, width)
        rows, cols = np.nonzero(disk_dilation(labels[top:bottom, left:right] == low + offset, radius))
        masks.append(((rows + top) * width + cols + left).astype(np.int32))
    return masks


def disk_dilation(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by skimage's disk(radius), zeros beyond the border (equal to skimage's: a disk reaches
    a mirrored pixel only if it reaches the pixel itself), as 1-D running maxima OR-ed at vertical shifts."""
    half_widths = (disk(radius).sum(axis=1) - 1) // 2  # run half-width at each dy = -radius..radius
    runs = {w: ndimage.maximum_filter1d(mask.view(np.uint8), 2 * w + 1, axis=1, mode="constant")
            for w in set(half_widths.tolist())}
    out = np.zeros_like(mask)
    height = mask.shape[0]
    for dy, w in zip(range(-radius, radius + 1), half_widths):  # out[y] |= run_w[y + dy]
        source = runs[w][max(dy, 0):height + min(dy, 0)]
        out[max(-dy, 0):height - max(dy, 0)] |= source.astype(bool)
    return out


def felzenszwalb_masks(image: np.ndarray) -> Masks:
    """PAIR's XRAI segments of one [H, W, C] image, in PAIR's order; the six segmentations in threads."""
    im = normalized(image)

    def segment(scale: float, sigma: float) -> Masks:
        labels = segmentation.felzenszwalb(im, scale=scale, sigma=sigma, min_size=MIN_SIZE)
        return dilated_masks(resize(labels, image.shape[:2], order=0, preserve_range=True, mode="constant",
                                    anti_aliasing=False).astype(int))
    settings = [(scale, sigma) for scale in SCALES for sigma in SIGMAS]
    with ThreadPoolExecutor(min(len(settings), os.cpu_count() or 1), thread_name_prefix="felzenszwalb") as pool:
        return [mask for masks in pool.map(lambda ss: segment(*ss), settings) for mask in masks]


_cache: OrderedDict[tuple, Masks] = OrderedDict()
_cache_bytes = 0
_lock = threading.Lock()  # XRAI segments in a worker thread


def masks_of(image: np.ndarray) -> Masks:
    """`felzenszwalb_masks(image)`, from the cache when the same image bytes were segmented lately."""
    global _cache_bytes
    image = np.ascontiguousarray(image)
    key = (image.shape, image.dtype.str, hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest())
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    masks = felzenszwalb_masks(image)
    with _lock:
        if key not in _cache:
            _cache_bytes += sum(m.nbytes for m in masks)
        _cache[key] = masks
        while _cache_bytes > CACHE_BYTES and len(_cache) > 1:
            _, dropped = _cache.popitem(last=False)
            _cache_bytes -= sum(m.nbytes for m in dropped)
    return masks


def cache_clear() -> None:
    global _cache_bytes
    with _lock:
        _cache.clear()
        _cache_bytes = 0


def cache_size() -> int:
    """Images whose masks are cached."""
    return len(_cache)
