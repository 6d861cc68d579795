"""Vanilla gradient (Simonyan et al. 2014) and Gradient x Input (Shrikumar et al. 2016)."""
from __future__ import annotations

import numpy as np

from harness.methods import COMMON, register
from harness.methods.kernels import input_gradients


@register("gradient", COMMON)
def gradient(model, x, targets, rng, s) -> np.ndarray:
    """d output[target] / d input."""
    return input_gradients(model, x, targets, s["output"], s["max_batch"])


@register("gradient_x_input", COMMON)
def gradient_x_input(model, x, targets, rng, s) -> np.ndarray:
    """Elementwise input x gradient, in the model's input space (as the paper computes it)."""
    return x * input_gradients(model, x, targets, s["output"], s["max_batch"])
