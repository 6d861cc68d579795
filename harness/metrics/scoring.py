"""Scoring pairs of maps: compare (one pair) and compare_batch (many), for the metrics of the settings.

Each map's forms are computed once, on first use, for all maps of a chunk at once, and kept on its
PreparedMap: the runner prepares its original maps once and compares them with every step's maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from harness.metrics.metrics import FORMS, METRICS, NAN, RAW, Score, as_hwc
from harness.metrics.settings import MetricSettings

# Pairs scored together: about this many raw-map values a side (20 MNIST maps, one InceptionV3 map).
CHUNK_VALUES = 16_384


class PreparedMap:
    """One raw map [H, W, C] (and the input image it explains, if given) with its forms by name, each
    computed on first use and kept."""

    def __init__(self, raw: np.ndarray, settings: MetricSettings, image: np.ndarray | None = None):
        self.raw = as_hwc(raw)
        self.settings = settings
        self.image = image
        self.finite = bool(np.all(np.isfinite(self.raw)))
        self.forms: dict[str, np.ndarray] = {RAW: self.raw}


class Side:
    """One side (references or compared maps) of a chunk of pairs of one map size: `side[form]` is the
    stack of that form of every map, computed where missing for those maps in one call."""

    def __init__(self, maps: Sequence[PreparedMap], settings: MetricSettings):
        self.maps, self.settings = maps, settings
        self.images = [m.image for m in maps]

    def __getitem__(self, name: str) -> np.ndarray:
        todo = list({id(m): m for m in self.maps if name not in m.forms}.values())  # a map listed twice: once
        if todo:
            form = FORMS[name]
            source = form.source(self.settings) if callable(form.source) else form.source
            values = form.compute(Side(todo, self.settings)[source], self.settings)
            for m, value in zip(todo, values, strict=True):
                m.forms[name] = value
        return np.stack([m.forms[name] for m in self.maps])


def prepare(m: np.ndarray | PreparedMap, settings: MetricSettings, image: np.ndarray | None = None) -> PreparedMap:
    """`m` as a PreparedMap for `settings` (returned as is when it already is one for them)."""
    if isinstance(m, PreparedMap) and m.settings == settings:
        return m
    return PreparedMap(m.raw if isinstance(m, PreparedMap) else m, settings, image)


def prepare_stack(raws: np.ndarray, settings: MetricSettings, images: Sequence | np.ndarray) -> list[PreparedMap]:
    """PreparedMaps of a stack of raw maps [n, H, W, C] or [n, H, W] and their input images."""
    batch = np.asarray(raws, np.float64)
    return [PreparedMap(raw, settings, image) for raw, image in zip(batch, images, strict=True)]


def compare(reference: np.ndarray | PreparedMap, compared: np.ndarray | PreparedMap, settings: MetricSettings,
            image: np.ndarray | None = None) -> list[Score]:
    """One Score per settings.metrics for two raw maps [H, W, C] or [H, W] (or PreparedMaps); `image`: the
    input the maps explain (spearman_abs_fg reads it). A map with NaN/inf makes every metric NaN."""
    return compare_batch([reference], [compared], settings, None if image is None else [image])[0]


def compare_batch(
    references: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    compareds: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    settings: MetricSettings,
    images: Sequence[np.ndarray] | np.ndarray | None = None,
    timer: Callable[[str], AbstractContextManager] | None = None,
) -> list[list[Score]]:
    """compare() over the leading (batch) dimension. `timer(metric name)` times each metric's call on a
    chunk, with the forms it is the first to read (run.json's `score_by_metric`). A compared map with
    its reference's bytes and image is scored as the reference itself (its forms are computed already)."""
    if len(references) != len(compareds):
        raise ValueError(f"batch sizes differ: {len(references)} references, {len(compareds)} compared maps")
    if images is not None and len(images) != len(references):
        raise ValueError(f"batch sizes differ: {len(references)} maps, {len(images)} images")
    imgs: Sequence = images if images is not None else [None] * len(references)
    refs = [prepare(m, settings, i) for m, i in zip(references, imgs)]
    cmps = [prepare(c, settings, i) for c, i in zip(compareds, imgs)]
    cmps = [r if _same(r, c) else c for r, c in zip(refs, cmps)]
    metrics = {name: METRICS[name] for name in settings.metrics}
    for r, c in zip(refs, cmps):
        if r.raw.shape != c.raw.shape:
            raise ValueError(f"maps differ in shape: reference {r.raw.shape}, compared {c.raw.shape}")
    needs_image = [name for name, m in metrics.items() if m.needs_image]
    if needs_image and any(m.image is None for m in refs + cmps):
        raise ValueError(f"metric {needs_image[0]!r} needs the input image (its foreground: non-zero input pixels)")

    scores: list[list[Score]] = [[] for _ in refs]
    groups: dict[tuple, list[int]] = {}  # finite pairs by map shape
    for k, (r, c) in enumerate(zip(refs, cmps)):
        bad = [name for name, m in (("reference", r), ("compared", c)) if not m.finite]
        if bad:  # NaN/inf in a map (e.g. a diverging method): every metric is undefined
            scores[k] = [Score(name, NAN, True, f"non-finite values ({' and '.join(bad)})") for name in metrics]
        else:
            groups.setdefault(r.raw.shape, []).append(k)
    timed = timer or (lambda _: nullcontext())
    for shape, group in groups.items():
        size = max(1, CHUNK_VALUES // int(np.prod(shape)))
        for start in range(0, len(group), size):
            chunk = group[start:start + size]
            ref, cmp = Side([refs[k] for k in chunk], settings), Side([cmps[k] for k in chunk], settings)
            for name, m in metrics.items():
                with timed(name):
                    results = m.compute(ref, cmp, settings)
                for k, (value, reason) in zip(chunk, results, strict=True):
                    scores[k].append(Score(name, float(value), bool(reason), reason))
    return scores


def _same(ref: PreparedMap, cmp: PreparedMap) -> bool:
    """Whether `cmp` is the reference's map bit for bit (-0.0 is not 0.0), explaining the same input."""
    return cmp is ref or (cmp.raw.shape == ref.raw.shape and cmp.raw.tobytes() == ref.raw.tobytes()
                          and (cmp.image is ref.image or np.array_equal(cmp.image, ref.image)))
