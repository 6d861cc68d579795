"""Saliency methods, one family per file, registered by name.

Contract: `method(model, images, targets, rng, params) -> maps`, where images are in the model's
input space, targets are explicit class indices (the runner resolves argmax/original/label), rng is
a seeded numpy Generator (the only source of randomness), and maps are float32 [batch, H, W, C]
(Grad-CAM, CAM and XRAI repeat their 2-D map in every channel). `params` is the method's config minus
`name`, plus the model's `gradcam_endpoint`; unknown settings are errors. Methods know nothing of
schedules.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from harness.errors import HarnessError

Method = Callable[..., np.ndarray]
_REGISTRY: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
    def add(fn: Method) -> Method:
        _REGISTRY[name] = fn
        return fn
    return add


def get(name: str) -> Method:
    _load_families()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown saliency method {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _load_families() -> None:
    # Importing a family module registers its methods (one family per module).
    from harness.methods import cam, gradient, guided, integrated, occlusion, pair, smoothgrad  # noqa: F401
