"""Vanilla gradient (Simonyan et al. 2014), Gradient x Input (Shrikumar et al. 2016) and Guided Backprop
(Springenberg et al. 2015: every ReLU / ReLU6 backward pass gated by (forward input > 0) and (incoming
gradient > 0)). PAIR `saliency.core` has no Guided Backprop, so the model's backend builds its kernel
(`harness.models.backends`: `guided_kernel`, `graph_mode`).
"""
from __future__ import annotations

import numpy as np

from harness.methods import register
from harness.methods.kernels import input_gradients, run_kernel


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


@register("guided_backprop")
def guided_backprop(model, x, targets, rng, s) -> np.ndarray:
    fn = model.backend.guided_kernel(model, s["output"], s["graph_mode"], "guided_backprop")
    return run_kernel(fn, x, targets, s["max_batch"])
