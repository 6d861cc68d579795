"""Vanilla gradient (Simonyan et al. 2014) and Gradient x Input (Shrikumar et al. 2016)."""
from __future__ import annotations

import numpy as np

from harness.methods import register
from harness.methods.kernels import COMMON, as_inputs, input_gradients, settings


def gradients(model, images, targets, params, method: str = "gradient") -> np.ndarray:
    s = settings(method, params, COMMON)
    x, t = as_inputs(images, targets)
    return input_gradients(model, x, t, s["output"], s["max_batch"]).astype(np.float32)


@register("gradient")
def gradient(model, images, targets, rng, params) -> np.ndarray:
    """d output[target] / d input."""
    return gradients(model, images, targets, params)


@register("gradient_x_input")
def gradient_x_input(model, images, targets, rng, params) -> np.ndarray:
    """Elementwise input x gradient, in the model's input space (as the paper computes it)."""
    x = np.asarray(images, np.float32)
    return (x * gradients(model, x, targets, params, "gradient_x_input")).astype(np.float32)
