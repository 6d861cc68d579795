"""Vanilla gradient: d logit / d input (Simonyan et al. 2014)."""
from __future__ import annotations

import numpy as np

from harness.methods import register
from harness.methods.kernels import input_gradients


@register("gradient")
def gradient(model, images, targets, rng, params) -> np.ndarray:
    return input_gradients(model, images, targets, params.get("output", "logit"),
                           params.get("max_batch", 256)).astype(np.float32)
