"""Model-free pseudo-methods, registered like any method so that their rows sit beside the real ones:
`random_attribution` (i.i.d. noise from the run's seeded generator: a fresh draw for every model state;
Hedström et al. 2024) and `edge_detector` (per-channel Sobel magnitude of the input, the same map for
every model state; Adebayo et al. 2018, Figure 1). Neither calls the model.
"""
from __future__ import annotations

import numpy as np
from skimage.filters import sobel

from harness.methods import register, shared_settings
from harness.rules import one_of

DISTRIBUTIONS = ("normal", "uniform")
BORDER_MODES = ("reflect", "constant", "nearest", "mirror", "wrap")  # scipy.ndimage's, as sobel takes them
shared_settings(distribution=one_of(*DISTRIBUTIONS), mode=one_of(*BORDER_MODES))


def no_model_rows(s, image_shape) -> tuple[int, int]:
    return 0, 0


@register("random_attribution", rows=no_model_rows, stochastic=True)
def random_attribution(model, x, targets, rng, s) -> np.ndarray:
    """Noise of the input's shape, independent across pixels, channels, images and calls."""
    if s["distribution"] == "normal":
        return rng.standard_normal(x.shape, dtype=np.float32)
    return rng.uniform(-1.0, 1.0, size=x.shape).astype(np.float32)


@register("edge_detector", rows=no_model_rows)
def edge_detector(model, x, targets, rng, s) -> np.ndarray:
    """Sobel magnitude of each channel of each image, in the model's input space."""
    maps = np.empty_like(x)
    for i, image in enumerate(x):
        for c in range(x.shape[-1]):
            maps[i, ..., c] = sobel(image[..., c], mode=s["mode"])
    return maps
