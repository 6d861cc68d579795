"""Bitwise equality of arrays: what the randomization self-check (harness.schedules) and the scorer's
shortcut for a map identical to its reference (harness.metrics.scoring) both mean by "unchanged".

NumPy only, so that the metrics package, which must not import TensorFlow, can use it.
"""
from __future__ import annotations

import numpy as np

_HEAD = 4096  # values same_bits compares first


def _as_uint(a: np.ndarray, rows: int | None = None) -> np.ndarray:
    """`a`'s bytes as unsigned integers of its item size (bytes for other sizes), flat or as `rows`
    rows: comparing these compares bits (a NaN equals itself, -0.0 differs from 0.0)."""
    kind = np.dtype(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else np.uint8
    flat = np.ascontiguousarray(a).reshape(-1) if rows is None else \
        np.ascontiguousarray(a).reshape(rows, int(np.prod(a.shape[1:], dtype=np.int64)))
    return flat.view(kind)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """The same shape, dtype and bytes (a NaN equals itself, -0.0 differs from 0.0), compared as
    unsigned integers of the arrays' item size: no copy of either (bytes objects of a whole model
    cost ~30 ms a check)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    x, y = _as_uint(a), _as_uint(b)
    # A re-initialized kernel differs from its trained values almost everywhere: its first values
    # settle the self-check's "changed" without a pass over the rest.
    if x.size <= _HEAD:
        return bool(np.array_equal(x, y))
    return bool(np.array_equal(x[:_HEAD], y[:_HEAD]) and np.array_equal(x[_HEAD:], y[_HEAD:]))


def same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """same_bits of each pair of rows (along the first axis) of two stacks of one shape and dtype,
    as a boolean array, in one comparison of the stacks."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"stacks differ: {a.shape} {a.dtype} and {b.shape} {b.dtype}")
    return (_as_uint(a, len(a)) == _as_uint(b, len(b))).all(axis=1)
