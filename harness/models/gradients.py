"""The one gradient computation of the harness: d output[target] / d input of every row (every
backend's kernels and the oracle call these), and Guided Backprop's gate (both guided paths)."""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def selected_output(logits: tf.Tensor, targets: tf.Tensor, output: str = "logit") -> tf.Tensor:
    """The explained scalar of each row: the target's logit or its softmax probability."""
    values = tf.nn.softmax(logits) if output == "probability" else logits
    return tf.gather(values, targets, batch_dims=1)


def target_gradient(forward: Callable, x: tf.Tensor, targets: tf.Tensor, output: str = "logit") -> tf.Tensor:
    """d output[target] / d x of every row, `forward(x) -> logits` (to call inside a tf.function)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        selected = selected_output(forward(x), targets, output)
    return tape.gradient(selected, x)


def endpoint_gradients(two_outputs: Callable, x: tf.Tensor, targets: tf.Tensor,
                       output: str = "logit") -> tuple[tf.Tensor, tf.Tensor]:
    """(endpoint values, d output[target] / d values), `two_outputs(x) -> (values, logits)` a Keras
    model (called in inference mode)."""
    with tf.GradientTape() as tape:
        values, logits = two_outputs(x, training=False)
        selected = selected_output(logits, targets, output)
    return values, tape.gradient(selected, values)


def gate(grad: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Guided Backprop's backward pass of a ReLU: `grad` where it is positive and `keep` holds, else 0
    (tf.where rather than a 0/1 mask: inf * 0 would give NaN)."""
    return tf.where(keep & (grad > 0), grad, tf.zeros_like(grad))
