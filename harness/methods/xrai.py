"""XRAI (Kapishnikov et al. 2019): segments ranked by the density of their IG attribution.

PAIR's `XRAI.GetMask` is the reference: IG from a black and a white baseline (the image's min and max),
averaged, max over channels; Felzenszwalb segments (`harness.methods.segments`); then the "full" greedy
ranking or the "fast" one. Not called because PAIR runs IG per image and baseline and its full ranking
recomputes every segment's gain at every pick (~5 s per 299 x 299 image). Here IG is one stream of
rows (`integrated.path_integral`), and the ranking updates the segments' uncovered counts and sums
incrementally; where float64 gains are within rounding of the best, PAIR's float32 means and rule pick.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harness.methods import integrated, register, shared_settings
from harness.rules import one_of
from harness.methods.kernels import to_channels
from harness.methods.segments import masks_of

ALGORITHMS = ("full", "fast")
shared_settings(algorithm=one_of(*ALGORITHMS))
MIN_PIXEL_DIFF = 50  # PAIR's XRAIParameters.experimental_params["min_pixel_diff"]
# Gains closer than this (times max |attribution|) to the best are re-ranked by PAIR's own float32
# means; float32 means of up to ~1e5 pixels err by < 1e-6 of that scale.
NEAR = 1e-5


def attribution(model, x: np.ndarray, targets: np.ndarray, s: dict) -> np.ndarray:
    """[n, H, W] float32: mean IG over the black and white baselines, max over channels (PAIR's)."""
    n = len(x)
    low = np.min(x.reshape(n, -1), axis=1)[:, None, None, None] * np.ones_like(x)
    high = np.max(x.reshape(n, -1), axis=1)[:, None, None, None] * np.ones_like(x)
    alphas, weights = integrated.path(int(s["steps"]), "pair", "xrai")
    both = integrated.path_integral(model, np.concatenate([x, x]), np.concatenate([targets, targets]),
                                    np.concatenate([low, high]), alphas, weights, s["output"], s["max_batch"])
    return np.mean([both[:n], both[n:]], axis=0).max(axis=-1)


def _gather_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """concatenate(arange(a, b) for a, b in zip(starts, stops))."""
    lengths = stops - starts
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


def rank_full(attr: np.ndarray, masks: list[np.ndarray], min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's `XRAI._xrai(attr, masks)` map (area threshold 1.0) for masks given as flat indices."""
    flat = np.ascontiguousarray(attr, np.float32).ravel()
    n = len(masks)
    lengths = np.array([len(m) for m in masks], np.int64)
    owner = np.repeat(np.arange(n), lengths)
    pixels = np.concatenate(masks) if n else np.empty(0, np.int64)
    order = np.argsort(pixels, kind="stable")
    owners_by_pixel = owner[order]
    bounds = np.searchsorted(pixels[order], np.arange(flat.size + 1))
    count = lengths.copy()  # uncovered pixels of each mask
    total = np.bincount(owner, weights=flat[pixels].astype(np.float64), minlength=n)  # and their sum
    alive = np.ones(n, bool)
    covered = np.zeros(flat.size, bool)
    out = np.full(flat.size, -np.inf)
    near = NEAR * max(float(np.abs(flat).max(initial=0.0)), np.finfo(np.float32).tiny)
    while True:
        alive &= count >= min_pixel_diff
        candidates = np.flatnonzero(alive)
        if not len(candidates):
            break
        gains = total[candidates] / count[candidates]
        contenders = candidates[gains >= np.max(gains) - near]
        new_pixels = [masks[m][~covered[masks[m]]] for m in contenders]
        exact = [flat[p].mean() for p in new_pixels]  # PAIR's gain: float32 mean in image order
        pick = int(np.argmax(exact))  # first of the highest, as PAIR's strict ">" over masks in order
        best, new = contenders[pick], new_pixels[pick]
        out[new] = exact[pick]
        covered[new] = True
        alive[best] = False
        entries = _gather_ranges(bounds[new], bounds[new + 1])
        touched = owners_by_pixel[entries]
        count -= np.bincount(touched, minlength=n)
        total -= np.bincount(touched, weights=np.repeat(flat[new].astype(np.float64), bounds[new + 1] - bounds[new]),
                             minlength=n)
    uncomputed = out == -np.inf
    if uncomputed.any():
        out[uncomputed] = flat[uncomputed].mean()
    return out.reshape(attr.shape)


def rank_fast(attr: np.ndarray, masks: list[np.ndarray], min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """PAIR's `XRAI._xrai_fast(attr, masks)` map for masks given as flat indices."""
    flat = np.ascontiguousarray(attr, np.float32).ravel()
    gains = np.array([flat[m].mean() if len(m) else -np.inf for m in masks], np.float32)
    covered = np.zeros(flat.size, bool)
    out = np.full(flat.size, -np.inf)
    for m in np.argsort(-gains, kind="stable"):  # PAIR: sorted(..., key=-gain), a stable sort
        new = masks[m][~covered[masks[m]]]
        if len(new) < min_pixel_diff:
            continue
        out[new] = flat[new].mean()
        covered[masks[m]] = True
    uncomputed = out == -np.inf
    if uncomputed.any():
        out[uncomputed] = flat[uncomputed].mean()
    return out.reshape(attr.shape)


def _pair_xrai(pair, x, cmf, args, s) -> np.ndarray:
    parameters = pair.XRAIParameters(steps=s["steps"], algorithm=s["algorithm"])
    return pair.XRAI().GetMask(x, cmf, args, extra_parameters=parameters)[..., None]


# Two baselines' paths per image (the segmentation is CPU work besides).
@register("xrai", reference=_pair_xrai, rows=lambda s, shape: (2 * s["steps"], 0), quick={"steps": 2})
def xrai(model, x, targets, rng, s) -> np.ndarray:
    rank = {"full": rank_full, "fast": rank_fast}[s["algorithm"]]
    if on_accelerator():  # segment meanwhile (on a CPU, the two would fight over the same cores)
        with ThreadPoolExecutor(1, thread_name_prefix="xrai-segments") as pool:
            segmented = pool.submit(lambda: [masks_of(image) for image in x])
            attr = attribution(model, x, targets, s)
            masks = segmented.result()
    else:
        masks, attr = [masks_of(image) for image in x], attribution(model, x, targets, s)
    return to_channels(np.stack([rank(a, m) for a, m in zip(attr, masks)]), x.shape[-1])


@functools.cache
def on_accelerator() -> bool:
    """Whether TensorFlow places the model's work on a GPU (or another accelerator)."""
    import tensorflow as tf

    return any(device.device_type != "CPU" for device in tf.config.list_logical_devices())
