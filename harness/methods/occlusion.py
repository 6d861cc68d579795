"""Occlusion (Zeiler & Fergus 2014) with PAIR's semantics, in batched forward passes.

A `size` x `size` window (all channels) is set to `value` at every position, and the drop of the
explained output is added to every pixel the window covers (`aggregate: sum`, PAIR's `Occlusion.GetMask`;
`mean` divides by the count). PAIR slides with stride 1; `stride` > 1 thins the positions (the last is
always kept). Drops are accumulated in PAIR's order and precision (float32).
"""
from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.methods import register, shared_settings
from harness.rules import one_of
from harness.methods.kernels import output_values

AGGREGATES = ("sum", "mean")
shared_settings(aggregate=one_of(*AGGREGATES))


def window_starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def windows(shape: tuple[int, int], size: int, stride: int) -> list[tuple[int, int]]:
    """Window corners in PAIR's order (row-major)."""
    if size < 1 or stride < 1 or size > min(shape):
        raise HarnessError(f"method occlusion: need 1 <= size <= image side {min(shape)} and stride >= 1; "
                           f"got size {size}, stride {stride}")
    return [(r, c) for r in window_starts(shape[0], size, stride) for c in window_starts(shape[1], size, stride)]


def _pair_occlusion(pair, x, cmf, args, s) -> np.ndarray:
    return pair.Occlusion().GetMask(x, cmf, args, size=s["size"], value=s["value"])


def _rows(s, shape) -> tuple[int, int]:
    return 0, len(windows(tuple(shape[:2]), s["size"], s["stride"])) + 1


@register("occlusion", reference=_pair_occlusion, rows=_rows, quick={"size": 21})
def occlusion(model, x, t, rng, s) -> np.ndarray:
    size, output, max_batch = int(s["size"]), s["output"], s["max_batch"]
    corners = windows(x.shape[1:3], size, int(s["stride"]))
    unoccluded = output_values(model, x, t, output, max_batch)
    scores = np.zeros_like(x)
    rows = len(x) * len(corners)
    for start in range(0, rows, max_batch):
        image, corner = np.divmod(np.arange(start, min(start + max_batch, rows)), len(corners))
        placed = [corners[j] for j in corner]
        occluded = x[image]  # fancy indexing copies
        for row, (r, c) in zip(occluded, placed):
            row[r:r + size, c:c + size, :] = s["value"]
        drops = unoccluded[image] - output_values(model, occluded, t[image], output, max_batch)
        for i, (r, c), drop in zip(image, placed, drops):  # PAIR's order and float32 accumulation
            scores[i, r:r + size, c:c + size, :] += drop
    if s["aggregate"] == "mean":  # divided by how many windows cover each pixel
        count = np.zeros(x.shape[1:3], np.float32)
        for r, c in corners:
            count[r:r + size, c:c + size] += 1
        scores /= count[None, :, :, None]
    return scores
