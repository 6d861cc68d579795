"""Model-free pseudo-methods: where a method stands next to "no model at all".

Binder et al. (CVPR 2023) show that maps with no pixel covariance can score well in the model-parameter
randomization test, and Hedström et al. (2024, "A Fresh Look at Sanity Checks for Saliency Maps")
report a random explanation next to every method; Adebayo et al. (2018, Figure 1) compare the methods
with an edge detector. Both pseudo-methods are registered like any method, so they run wherever a
method does (every schedule, control and table) and their rows sit beside the real ones:

- `random_attribution`: i.i.d. noise of the input's shape from the run's seeded generator (which is
  seeded by method entry and step, so every model state gets a fresh draw);
- `edge_detector`: the Sobel gradient magnitude of each input channel (`skimage.filters.sobel`),
  a function of the input alone: every model state gives the same map.

Neither calls the model, so they cost no model rows.
"""
from __future__ import annotations

import numpy as np
from skimage.filters import sobel

from harness.methods import choose, register, shared_settings
from harness.rules import one_of

DISTRIBUTIONS = ("normal", "uniform")
BORDER_MODES = ("reflect", "constant", "nearest", "mirror", "wrap")  # scipy.ndimage's, as sobel takes them
shared_settings(distribution=one_of(*DISTRIBUTIONS), mode=one_of(*BORDER_MODES))


def no_model_rows(s, image_shape) -> tuple[int, int]:
    return 0, 0


@register("random_attribution", rows=no_model_rows, stochastic=True)
def random_attribution(model, x, targets, rng, s) -> np.ndarray:
    """Noise of the input's shape, independent across pixels, channels, images and calls."""
    if choose("random_attribution", "distribution", s["distribution"], DISTRIBUTIONS) == "normal":
        return rng.standard_normal(x.shape, dtype=np.float32)
    return rng.uniform(-1.0, 1.0, size=x.shape).astype(np.float32)


@register("edge_detector", rows=no_model_rows)
def edge_detector(model, x, targets, rng, s) -> np.ndarray:
    """Sobel magnitude of each channel of each image in the model's input space (a linear input
    scaling scales it alike: its ranks are those of the [0, 1] image's edges)."""
    mode = choose("edge_detector", "mode", s["mode"], BORDER_MODES)
    maps = np.empty_like(x)
    for i, image in enumerate(x):
        for c in range(x.shape[-1]):
            maps[i, ..., c] = sobel(image[..., c], mode=mode)
    return maps
