"""Bitwise equality of arrays: what the randomization self-check (harness.schedules) means by "unchanged"."""
from __future__ import annotations

import numpy as np


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """The same shape, dtype and bytes (a NaN equals itself, -0.0 differs from 0.0), without copies."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    kind = np.dtype(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else np.uint8
    return bool(np.array_equal(*(np.ascontiguousarray(v).reshape(-1).view(kind) for v in (a, b))))
