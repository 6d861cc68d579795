"""Batched gradient kernels shared by the methods.

PAIR `saliency.core` calls the model once per sample (SmoothGrad) or per image; these kernels fold
images, noise samples and path steps into the batch dimension and run one compiled call per chunk
of at most `max_batch` rows. Each kernel is compiled once per model, so randomizing the model in
place never retraces.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from harness.models.wrapper import ModelUnderTest

OUTPUTS = ("logit", "probability")


def _selected_output(logits: tf.Tensor, targets: tf.Tensor, output: str) -> tf.Tensor:
    values = tf.nn.softmax(logits) if output == "probability" else logits
    return tf.gather(values, targets, batch_dims=1)


def _build_gradient(model: ModelUnderTest, output: str) -> Callable:
    @tf.function(input_signature=[model.tensor_spec(), tf.TensorSpec([None], tf.int32)])
    def gradient(x, targets):
        model.trace_counts[f"gradient/{output}"] += 1  # runs at trace time only
        with tf.GradientTape() as tape:
            tape.watch(x)
            selected = _selected_output(model.logits(x), targets, output)
        return tape.gradient(selected, x)
    return gradient


def input_gradients(model: ModelUnderTest, x: np.ndarray, targets: np.ndarray, output: str = "logit",
                    max_batch: int = 256) -> np.ndarray:
    """d output[target] / d input for every row of x, in chunks of at most `max_batch` rows."""
    fn = model.compiled(f"gradient/{output}", lambda: _build_gradient(model, output))
    return in_chunks(lambda xs, ts: fn(tf.constant(xs), tf.constant(ts, tf.int32)).numpy(),
                     x, np.asarray(targets, np.int32), max_batch)


def in_chunks(fn: Callable[..., np.ndarray], x: np.ndarray, targets: np.ndarray, max_batch: int) -> np.ndarray:
    if len(x) <= max_batch:
        return fn(x, targets)
    return np.concatenate([fn(x[i:i + max_batch], targets[i:i + max_batch])
                           for i in range(0, len(x), max_batch)])
