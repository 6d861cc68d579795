"""Bitwise equality of arrays: what the randomization self-check (harness.schedules) and the scorer's
shortcut for a map identical to its reference (harness.metrics.scoring) both mean by "unchanged".

NumPy only, so that the metrics package, which must not import TensorFlow, can use it.
"""
from __future__ import annotations

import numpy as np


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """The same shape, dtype and bytes (a NaN equals itself, -0.0 differs from 0.0), compared as
    unsigned integers of the arrays' item size: no copy of either (bytes objects of a whole model
    cost ~30 ms a check)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = np.dtype(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else np.uint8
    return bool(np.array_equal(np.ascontiguousarray(a).reshape(-1).view(as_int),
                               np.ascontiguousarray(b).reshape(-1).view(as_int)))
