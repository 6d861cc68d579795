"""Saliency methods, one family per file, registered by name.

Contract: `method(model, images, targets, rng, params) -> maps`, where images are in the model's
input space, targets are explicit class indices (the runner resolves argmax/original/label), rng is
a seeded numpy Generator (the only source of randomness), and maps are float32 [batch, H, W, C]
(Grad-CAM, CAM and XRAI repeat their 2-D map in every channel). `params` is the method's config minus
`name`, plus the model's `gradcam_endpoint`; unknown settings are errors. Methods know nothing of
schedules.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from harness.errors import HarnessError

Method = Callable[..., np.ndarray]
OUTPUTS = ("logit", "probability")
# Settings most methods accept: the output explained and the rows per compiled call.
COMMON = {"output": "logit", "max_batch": "auto"}
# max_batch "auto": as many rows as hold this many input values, within [4, 256]: 256 rows of a
# 28x28 image (a small CNN runs ~1.5x faster per row at 256 than at 64), 15 of a 299x299x3 one
# (InceptionV3 needs ~70 MB per row with gradients and runs no faster per row beyond ~4).
AUTO_BATCH_VALUES, AUTO_BATCH_RANGE = 2 ** 22, (4, 256)
# Keys the runner adds to every method's parameters.
RUNNER_KEYS = ("gradcam_endpoint",)
_REGISTRY: dict[str, Method] = {}
_DEFAULTS: dict[str, dict[str, Any]] = {}


def register(name: str, defaults: Mapping[str, Any]) -> Callable[[Method], Method]:
    """Register `fn(model, x, targets, rng, s)` as method `name` under the contract above.

    The registered callable validates `params` against `defaults` into the settings `s` (the
    paper's settings where it has them, else PAIR's defaults; conf/method/<name>.yaml documents the
    same values), resolves `max_batch`, converts images to float32 and targets to int32, and returns
    float32 maps.
    """
    def add(fn: Method) -> Method:
        @functools.wraps(fn)
        def method(model, images, targets, rng, params) -> np.ndarray:
            s = settings(name, params, defaults)
            x, t = np.asarray(images, np.float32), np.asarray(targets, np.int32)
            if "max_batch" in s:
                s["max_batch"] = rows_per_call(s["max_batch"], x.shape[1:])
            return np.asarray(fn(model, x, t, rng, s), np.float32)
        _REGISTRY[name], _DEFAULTS[name] = method, dict(defaults)
        return method
    return add


def settings(method: str, params: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The method's defaults overridden by `params`; unknown keys and bad common values are errors."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults) - set(RUNNER_KEYS))
    if unknown:
        raise HarnessError(f"unknown setting(s) {', '.join(unknown)} for method {method}; "
                           f"valid: {', '.join(sorted(defaults))}")
    merged = {**defaults, **params}
    if "output" in defaults:
        choose(method, "output", merged["output"], OUTPUTS)
    if "max_batch" in defaults and merged["max_batch"] != "auto" and not (
            isinstance(merged["max_batch"], int) and merged["max_batch"] >= 1):
        raise HarnessError(f"method {method}: max_batch must be 'auto' or an integer >= 1, "
                           f"got {merged['max_batch']!r}")
    return merged


def rows_per_call(max_batch: int | str, image_shape) -> int:
    """`max_batch` as a row count ("auto" resolved for images of `image_shape`)."""
    if max_batch != "auto":
        return int(max_batch)
    low, high = AUTO_BATCH_RANGE
    return int(np.clip(AUTO_BATCH_VALUES // max(int(np.prod(image_shape)), 1), low, high))


def choose(method: str, key: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise HarnessError(f"method {method}: unknown {key} {value!r}; valid: {', '.join(valid)}")
    return value


def get(name: str) -> Method:
    _load_families()
    if name not in _REGISTRY:
        raise HarnessError(f"unknown saliency method {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[name]


def defaults(name: str) -> dict[str, Any]:
    """The settings method `name` runs with when its config gives none."""
    get(name)
    return dict(_DEFAULTS[name])


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _load_families() -> None:
    # Importing a family module registers its methods (one family per module).
    from harness.methods import (  # noqa: F401
        blur_ig, cam, gradient, guided, guided_ig, integrated, occlusion, pair, smoothgrad, xrai)
