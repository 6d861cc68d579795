"""Batched kernels every method family shares, over the model's backend (`harness.models.backends`).

Why hand-batched kernels instead of calling PAIR `saliency.core` for everything: PAIR calls the model
once per noise sample (SmoothGrad) and, by default, once per path step (IG) or window position
(occlusion), each call a Python round trip of batch 1. The methods fold images x noise samples x path
steps x window positions into the batch dimension and run one compiled call per chunk of at most
`max_batch` rows (~10x on the MNIST CNN, ~1.2x at Inception scale: `make bench`). The maths is kept
identical to PAIR's, which the tests check against PAIR itself (`harness.oracle`).

The compiled kernels themselves (plain gradient, forward values, guided gradient, endpoint values and
gradients) belong to the model's backend, built once per model and key; this module runs them on
numpy rows in chunks.

A chunk of a few rows is not always faster as one call. TensorFlow's own CPU kernels (its Eigen
path: the default where TensorFlow leaves oneDNN off, x86 CPUs without AVX512-VNNI / BF16 or AMX,
or TF_ENABLE_ONEDNN_OPTS=0) take ~30 ms to multiply 2-4 rows by a transposed 3136 x 1024 matrix
and 1.2 ms for one row; the MNIST CNN's input gradient is such a product, so one gradient call of
3 rows took 34-48 ms there and 3 one-row calls 20 ms (oneDNN on the same AMD EPYC: 7.6 and 21 ms).
So the first time a kernel meets a chunk of 2..SPLIT_ROWS rows of a shape, both forms are timed
and the faster is kept for that kernel, shape and row count (`split_forms`). A row's last bits
depend on the rows that share its call, so the rule leans to one call and stays where the two
forms are far apart: one-row calls only where SPLIT_MARGIN times faster, for at most SPLIT_ROWS
rows (measured on the MNIST CNN, 2-4 rows: one-row calls 1.5-3.8x faster on the Eigen path, 2.8x
slower with oneDNN; from ~8 rows one call wins on both, and near the crossing noise could flip it).
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from harness.methods import rows_per_call
from harness.models.backends import compile_counted, selected_output  # noqa: F401 - used by the families
from harness.models.wrapper import ModelUnderTest


def to_channels(maps2d: np.ndarray, channels: int) -> np.ndarray:
    """[b, H, W] -> [b, H, W, C] by repeating the map in every channel (PAIR's `three_dims`).

    Grad-CAM, CAM and XRAI explain locations, not channels; repeating keeps the one map contract
    ([b, H, W, C] like the input) and lets Guided Grad-CAM multiply elementwise.
    """
    return np.repeat(np.asarray(maps2d, np.float32)[..., None], channels, axis=-1)


# Chunks of 2..SPLIT_ROWS rows are timed as one call and as one-row calls on first use; one-row
# calls are kept where SPLIT_MARGIN times faster (medians of SPLIT_TRIALS alternating tries), and
# only timed where a one-row call takes under SPLIT_CHEAP_S (an InceptionV3 row takes ~0.1-0.3 s on
# a 2-core CPU: trying costs too much there, and its per-row cost does not depend on the grouping).
SPLIT_ROWS, SPLIT_MARGIN, SPLIT_TRIALS, SPLIT_CHEAP_S = 4, 1.25, 5, 0.02
# kernel -> {(row shape, rows): True where one-row calls were faster}; forgotten with the kernel.
_FORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_kernel(fn: Callable, x: np.ndarray, targets: np.ndarray, max_batch: int | str) -> np.ndarray | tuple:
    """Call a compiled (images, targets) kernel on numpy rows, at most `max_batch` rows per call
    (fewer where one-row calls are faster: `call_rows`); a kernel with several outputs gives a
    tuple of arrays."""
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
    max_batch = rows_per_call(max_batch, x.shape[1:])
    chunks = [out for i in range(0, len(x) or 1, max_batch)
              for out in call_rows(fn, x[i:i + max_batch], targets[i:i + max_batch])]
    if isinstance(chunks[0], (tuple, list)):
        return tuple(_joined([chunk[k] for chunk in chunks]) for k in range(len(chunks[0])))
    return _joined(chunks)


def call_rows(fn: Callable, x: np.ndarray, targets: np.ndarray) -> list:
    """The kernel's outputs on one chunk of rows: one call, or one call per row where that form
    was measured faster for this kernel, row shape and row count (timed on first use)."""
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
    """(one-row calls faster by SPLIT_MARGIN, the chosen form's outputs): one row first (a costly
    row ends it: one call), each form once untimed (a new batch size may pick new kernels), then
    SPLIT_TRIALS alternating timed tries."""
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
