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
"""
from __future__ import annotations

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


def run_kernel(fn: Callable, x: np.ndarray, targets: np.ndarray, max_batch: int | str) -> np.ndarray | tuple:
    """Call a compiled (images, targets) kernel on numpy rows, at most `max_batch` rows per call; a
    kernel with several outputs gives a tuple of arrays."""
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
    max_batch = rows_per_call(max_batch, x.shape[1:])
    chunks = [fn(tf.constant(x[i:i + max_batch]), tf.constant(targets[i:i + max_batch]))
              for i in range(0, len(x) or 1, max_batch)]
    if isinstance(chunks[0], (tuple, list)):
        return tuple(_joined([chunk[k] for chunk in chunks]) for k in range(len(chunks[0])))
    return _joined(chunks)


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
