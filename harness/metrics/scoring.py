"""Scoring pairs of maps: compare (one pair) and compare_batch (many), for any registered metrics.

The scorer knows no metric: it prepares both sides, checks what every metric needs (maps of one
shape, finite values, the input image where a form reads it), computes the forms the chosen
metrics name (each once per map, see `forms.fill`), and calls each metric once per chunk of
pairs of one map size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from harness.bitwise import same_bits, same_rows
from harness.metrics.forms import (IMAGE, RAW, PreparedMap, by_shape, closure, distinct, fill, image_reader,
                                   prepare_stack, stack)
from harness.metrics.metrics import METRICS, NAN, FormView, Metric, Score
from harness.metrics.settings import MetricSettings


# Pairs scored together: about this many raw-map values a side (20 MNIST maps, one InceptionV3 map).
# A map's forms expand it (a 28 x 28 map's HOG vector has 11,664 values), so 100 MNIST maps at once
# made ~9 MB temporaries that fell out of the caches between a run's kernels: scoring inside a
# cascading_mlp run took twice its isolated time (2026-12-03); in chunks, within ~10 % of it.
CHUNK_VALUES = 16_384


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
) -> list[Score]:
    """Score the similarity of two raw maps [H, W, C] (C = 1 or 3) or [H, W]; one Score per
    settings.metrics, in that order (see each metric in harness.metrics.metrics).

    Either side may be a PreparedMap (see `prepare`) to reuse its forms across calls. `image` is the
    input the maps explain (needed by metrics whose forms read it: spearman_abs_fg).
    A map with NaN/inf makes every metric undefined: NaN, degenerate, reason.
    """
    return compare_batch([reference], [compared], settings, None if image is None else [image])[0]


def compare_batch(
    references: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    compareds: Sequence[np.ndarray | PreparedMap] | np.ndarray,
    settings: MetricSettings,
    images: Sequence[np.ndarray] | np.ndarray | None = None,
    timer: Callable[[str], AbstractContextManager] | None = None,
) -> list[list[Score]]:
    """compare() over the leading (batch) dimension; images, if given, must match in length.

    Each form is computed once per map and each metric called once per chunk of pairs of one map size
    (batched forms such as ranks and HOG features, and SSIM, in one call per chunk; see CHUNK_VALUES).
    `timer(metric name)`, if given, times each metric's share of a chunk: computing the forms it reads
    that no metric before it in settings.metrics computed (raw01 goes to SSIM, not to HOG after it),
    and the metric itself (the runner's run.json `score_by_metric`). The scores do not depend on it: a
    form is computed for the same maps of the chunk, whichever metric asks for it first.
    """
    if len(references) != len(compareds):
        raise ValueError(f"batch sizes differ: {len(references)} references, {len(compareds)} compared maps")
    if images is not None and len(images) != len(references):
        raise ValueError(f"batch sizes differ: {len(references)} maps, {len(images)} images")
    imgs: Sequence = images if images is not None else [None] * len(references)
    refs = _prepared(references, settings, imgs)
    cmps = _prepared(compareds, settings, imgs)
    cmps = [r if same else c for r, c, same in zip(refs, cmps, _same_maps(refs, cmps))]
    metrics = [METRICS[name] for name in settings.metrics]
    for r, c in zip(refs, cmps):
        if r.raw.shape != c.raw.shape:
            raise ValueError(f"maps differ in shape: reference {r.raw.shape}, compared {c.raw.shape}")
    _check_images(refs + cmps, metrics, settings)

    scores: list[list[Score]] = [[] for _ in refs]
    for k, (r, c) in enumerate(zip(refs, cmps)):
        bad = [name for name, m in (("reference", r), ("compared", c)) if not m.finite]
        if bad:  # NaN/inf in a map (e.g. a diverging method): every metric is undefined
            scores[k] = [Score(m.name, NAN, True, f"non-finite values ({' and '.join(bad)})") for m in metrics]
    pairs = [k for k, (r, c) in enumerate(zip(refs, cmps)) if r.finite and c.finite]
    # what each metric may read: its forms (RAW and IMAGE when it names them) and their inputs
    forms = {m.name: {RAW, *m.forms_for(settings), *closure(m.forms_for(settings), settings)} for m in metrics}
    first_read = _first_read(metrics, settings)
    timed = timer or (lambda _: nullcontext())
    for group in by_shape(pairs, lambda k: refs[k].raw.shape):
        size = max(1, CHUNK_VALUES // refs[group[0]].raw.size)
        for start in range(0, len(group), size):
            chunk = group[start:start + size]
            chunk_refs, chunk_cmps = [refs[k] for k in chunk], [cmps[k] for k in chunk]
            chunk_maps = distinct(chunk_refs + chunk_cmps)  # one size: a group of by_shape
            for m in metrics:
                with timed(m.name):
                    fill(chunk_maps, first_read[m.name], settings)
                    results = m.compute(FormView(chunk_refs, m.name, forms[m.name]),
                                        FormView(chunk_cmps, m.name, forms[m.name]), settings)
                for k, (value, reason) in zip(chunk, results, strict=True):
                    scores[k].append(Score(m.name, float(value), bool(reason), reason))
            _release(chunk, refs, references)
            _release(chunk, cmps, compareds)
    return scores


def _first_read(metrics: list[Metric], settings: MetricSettings) -> dict[str, list[str]]:
    """Per metric, the forms it reads that no metric before it reads, each after its inputs: what
    forms.fill computes in its turn (its time is the metric's, see compare_batch's `timer`)."""
    seen: set[str] = set()
    out = {}
    for m in metrics:
        out[m.name] = [f for f in closure(m.forms_for(settings), settings) if f not in seen]
        seen.update(out[m.name])
    return out


def _prepared(maps: Sequence[np.ndarray | PreparedMap] | np.ndarray, settings: MetricSettings,
              images: Sequence) -> list[PreparedMap]:
    """Each map prepared (see `prepare`); a stack of raw maps as one array (forms.prepare_stack)."""
    if isinstance(maps, np.ndarray) and maps.ndim in (3, 4):
        return prepare_stack(maps, settings, images)
    return [prepare(m, settings, i) for m, i in zip(maps, images)]


def _same_maps(references: list[PreparedMap], compareds: list[PreparedMap]) -> list[bool]:
    """Per pair, whether the compared map is its reference's bytes, explaining the same input: then
    it is scored as the reference itself, whose forms are computed already (a deterministic method's
    maps in the ceiling control are its original maps; the runner's step 0 compares them with
    themselves). Bitwise: -0.0 is not 0.0 (its forms may differ in sign). Maps of one size and dtype
    are compared all at once (bitwise.same_rows): pair by pair took ~1.2 ms a unit of 100 MNIST maps."""
    raws = {(m.raw.shape, m.raw.dtype) for m in (*references, *compareds)}
    if len(raws) == 1:
        raw_same = same_rows(stack(references, RAW), stack(compareds, RAW))
    else:
        raw_same = [same_bits(c.raw, r.raw) for r, c in zip(references, compareds)]
    return [r is c or (bool(same) and _same_image(r.image, c.image)) for r, c, same in zip(references, compareds, raw_same)]


def _same_image(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b or (a is not None and b is not None and same_bits(np.asarray(a), np.asarray(b)))


def _release(chunk: list[int], prepared: list[PreparedMap | None], given: Sequence) -> None:
    """Drop the maps of a scored chunk that were prepared here (not given prepared, as the runner's
    originals are): kept to the end of the batch, all of a unit's forms (~250 kB a 28 x 28 map's)
    lived at once; dropped, a batch holds one chunk's."""
    for k in chunk:
        if prepared[k] is not given[k]:
            prepared[k] = None


def _check_images(maps: list[PreparedMap], metrics: list[Metric], settings: MetricSettings) -> None:
    """A ValueError naming the first metric that reads the input image (itself or through a form),
    if a map came without one."""
    if all(m.image is not None for m in maps):
        return
    for m in metrics:
        reader = image_reader(m.forms_for(settings), settings)
        if reader is not None or IMAGE in m.forms_for(settings):
            raise ValueError(f"metric {m.name!r} needs the input image" + (f" ({reader.about})" if reader else ""))
