"""Batched kernels every method family shares, run on numpy rows in chunks of at most `max_batch` rows.

Why not PAIR `saliency.core` for everything: PAIR calls the model once per noise sample, path step or
window position, batch 1. Here those are folded into the batch dimension, one compiled call per chunk
(~10x on the MNIST CNN: `make bench`); the maths stays PAIR's (checked against PAIR: `harness.oracle`).
The compiled kernels belong to the model's backend (`harness.models.backends`).

A chunk of 2..SPLIT_ROWS rows is not always faster as one call: TensorFlow's Eigen CPU path (no oneDNN)
takes ~30 ms to multiply 2-4 rows by a transposed 3136 x 1024 matrix, 1.2 ms for one row. So the first
time a kernel meets such a chunk, both forms are timed and the faster kept (`split_forms`). A row's last
bits depend on the rows that share its call, so one-row calls are kept only where SPLIT_MARGIN times faster.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from harness.methods import rows_per_call
from harness.models.wrapper import ModelUnderTest


def to_channels(maps2d: np.ndarray, channels: int) -> np.ndarray:
    """[b, H, W] -> [b, H, W, C], the map repeated in every channel (PAIR's `three_dims`)."""
    return np.repeat(np.asarray(maps2d, np.float32)[..., None], channels, axis=-1)


# Medians of SPLIT_TRIALS alternating tries; not timed where one row takes over SPLIT_CHEAP_S (Inception).
SPLIT_ROWS, SPLIT_MARGIN, SPLIT_TRIALS, SPLIT_CHEAP_S = 4, 1.25, 5, 0.02
# kernel -> {(row shape, rows): True where one-row calls were faster}; forgotten with the kernel.
_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_kernel(fn: Callable, x: np.ndarray, targets: np.ndarray, max_batch: int | str) -> np.ndarray | tuple:
    """A compiled (images, targets) kernel on numpy rows, at most `max_batch` rows per call; a kernel with
    several outputs gives a tuple of arrays."""
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
    max_batch = rows_per_call(max_batch, x.shape[1:])
    chunks = [out for i in range(0, len(x) or 1, max_batch)
              for out in call_rows(fn, x[i:i + max_batch], targets[i:i + max_batch])]
    if isinstance(chunks[0], (tuple, list)):
        return tuple(_joined([chunk[k] for chunk in chunks]) for k in range(len(chunks[0])))
    return _joined(chunks)


def call_rows(fn: Callable, x: np.ndarray, targets: np.ndarray) -> list:
    """The kernel's outputs on one chunk: one call, or one call per row where that was measured faster."""
    rows, key = len(x), (tuple(x.shape[1:]), len(x))
    if not 1 < rows <= SPLIT_ROWS:
        return [_call(fn, x, targets)]
    forms = _FORMS.setdefault(fn, {})
    if key not in forms:
        forms[key], outputs = _timed_forms(fn, x, targets)
        return outputs
    return _one_row_calls(fn, x, targets) if forms[key] else [_call(fn, x, targets)]


def split_forms() -> list[tuple[tuple[int, ...], int]]:
    """(row shape, rows) of every chunk this process runs as one-row calls (measured faster)."""
    return sorted({key for forms in _FORMS.values() for key, split in forms.items() if split})


def _timed_forms(fn: Callable, x: np.ndarray, targets: np.ndarray) -> tuple[bool, list]:
    """(one-row calls faster by SPLIT_MARGIN, the chosen form's outputs); each form runs once untimed first."""
    began = time.perf_counter()
    _call(fn, x[:1], targets[:1])
    if time.perf_counter() - began > SPLIT_CHEAP_S:
        return False, [_call(fn, x, targets)]
    forms = {False: lambda: [_call(fn, x, targets)], True: lambda: _one_row_calls(fn, x, targets)}
    forms[False]()
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(SPLIT_TRIALS):
        for split, form in forms.items():
            began = time.perf_counter()
            outputs = form()
            seconds[split].append(time.perf_counter() - began)
    split = bool(np.median(seconds[False]) > SPLIT_MARGIN * np.median(seconds[True]))
    return split, outputs if split else forms[False]()


def _call(fn: Callable, x: np.ndarray, targets: np.ndarray):
    return fn(tf.constant(x), tf.constant(targets))


def _one_row_calls(fn: Callable, x: np.ndarray, targets: np.ndarray) -> list:
    return [_call(fn, x[i:i + 1], targets[i:i + 1]) for i in range(len(x))]


def _joined(chunks: list) -> np.ndarray:
    return chunks[0].numpy() if len(chunks) == 1 else np.concatenate([c.numpy() for c in chunks])


def input_gradients(model: ModelUnderTest, x: np.ndarray, targets: np.ndarray, output: str = "logit",
                    max_batch: int | str = "auto") -> np.ndarray:
    """d output[target] / d input for every row of x."""
    return run_kernel(model.backend.gradient_kernel(model, output), x, targets, max_batch)


def output_values(model: ModelUnderTest, x: np.ndarray, targets: np.ndarray, output: str = "logit",
                  max_batch: int | str = "auto") -> np.ndarray:
    """output[target] for every row of x (forward passes only)."""
    return run_kernel(model.backend.forward_kernel(model, output), x, targets, max_batch)
