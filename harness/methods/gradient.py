"""Vanilla gradient (Simonyan et al. 2014) and Gradient x Input (Shrikumar et al. 2016)."""
from __future__ import annotations

import numpy as np

from harness.methods import register
from harness.methods.kernels import input_gradients


def _pair_gradient(pair, x, cmf, args, s) -> np.ndarray:
    return pair.GradientSaliency().GetMask(x, cmf, args)


@register("gradient", reference=_pair_gradient)
def gradient(model, x, targets, rng, s) -> np.ndarray:
    """d output[target] / d input."""
    return input_gradients(model, x, targets, s["output"], s["max_batch"])


@register("gradient_x_input", reference=lambda pair, x, cmf, args, s: x * _pair_gradient(pair, x, cmf, args, s))
def gradient_x_input(model, x, targets, rng, s) -> np.ndarray:
    """Elementwise input x gradient, in the model's input space (as the paper computes it)."""
    return x * input_gradients(model, x, targets, s["output"], s["max_batch"])
