"""Integrated Gradients (Sundararajan et al. 2017), streamed over images x path steps.

PAIR's rule is the default: alphas = linspace(0, 1, steps), the *mean* of the path gradients, times
(x - baseline); `rule: trapezoid` weighs the two end points by one half. Baselines are in model space.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.errors import HarnessError
from harness.methods import register, shared_settings
from harness.rules import one_of
from harness.methods.kernels import input_gradients

BASELINES = ("zeros", "black", "gray", "constant", "blur")
RULES = ("pair", "trapezoid")
shared_settings(baseline=one_of(*BASELINES), rule=one_of(*RULES))
WORK_VALUES = 2 ** 19


def baseline(x: np.ndarray, s: dict, value_range: tuple[float, float]) -> np.ndarray:
    """Each image's baseline. zeros: 0 in model space (the paper's); black / gray: the model-space value of
    image value 0 / 0.5; constant: `baseline_value`; blur: a Gaussian blur of `blur_sigma` px."""
    kind, (low, high) = s["baseline"], value_range
    if kind == "blur":
        sigma = float(s["blur_sigma"])
        return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest").astype(np.float32)
    value = {"zeros": 0.0, "black": low, "gray": (low + high) / 2, "constant": s["baseline_value"]}[kind]
    return np.full_like(x, float(value))


def path(steps: int, rule: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of the Riemann sum over the straight path."""
    least = 2 if rule == "trapezoid" else 1
    if steps < least:
        raise HarnessError(f"method {method}: steps must be >= {least} for rule {rule}, got {steps}")
    alphas = np.linspace(0.0, 1.0, steps)
    if rule == "pair":
        return alphas, np.full(steps, 1.0 / steps)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
    return alphas, weights


def path_integral(model, x: np.ndarray, targets: np.ndarray, base: np.ndarray, alphas: np.ndarray,
                  weights: np.ndarray, output: str, max_batch: int) -> np.ndarray:
    """(x - base) * sum_k w_k grad(base + alpha_k (x - base)), all rows (image, step) in chunks."""
    diff = x - base
    total = np.zeros(x.shape, np.float64)
    rows = len(x) * len(alphas)
    for start in range(0, rows, max_batch):
        image, step = np.divmod(np.arange(start, min(start + max_batch, rows)), len(alphas))
        points = np.empty((len(image), *x.shape[1:]), np.float32)
        for part in row_parts(len(image), x.shape[1:]):
            # Path points are formed in float64 and rounded once, as PAIR's float64 alphas do.
            points[part] = base[image[part]] + alphas[step[part], None, None, None] * diff[image[part]]
        grads = input_gradients(model, points, targets[image], output, max_batch)
        for part in row_parts(len(image), x.shape[1:]):
            add_by_image(total, image[part], weights[step[part], None, None, None] * grads[part])
    return (total * diff).astype(np.float32)


def row_parts(rows: int, image_shape) -> list[slice]:
    """Slices of at most WORK_VALUES values: keeps the float64 temporaries of a chunk cache-sized."""
    per_part = max(1, WORK_VALUES // max(int(np.prod(image_shape)), 1))
    return [slice(i, min(i + per_part, rows)) for i in range(0, rows, per_part)]


def add_by_image(total: np.ndarray, image: np.ndarray, rows: np.ndarray) -> None:
    """total[image[r]] += rows[r], one sum per run of an image's contiguous rows."""
    bounds = np.flatnonzero(np.r_[True, image[1:] != image[:-1], True])
    for first, end in zip(bounds[:-1], bounds[1:]):
        total[image[first]] += rows[first:end].sum(axis=0)


def integrated(model, x: np.ndarray, targets: np.ndarray, s: dict, method: str) -> np.ndarray:
    """IG maps of `x` with settings `s` (also IG-SmoothGrad's, on noisy copies)."""
    alphas, weights = path(int(s["steps"]), s["rule"], method)
    base = baseline(x, s, model.input_spec.value_range)
    return path_integral(model, x, targets, base, alphas, weights, s["output"], s["max_batch"])


def _pair_integrated_gradients(pair, x, cmf, args, s) -> np.ndarray:
    return pair.IntegratedGradients().GetMask(x, cmf, args, x_baseline=np.zeros_like(x), x_steps=s["steps"])


@register("integrated_gradients", reference=_pair_integrated_gradients, rows=lambda s, shape: (s["steps"], 0),
          quick={"steps": 4})
def integrated_gradients(model, x, targets, rng, s) -> np.ndarray:
    return integrated(model, x, targets, s, "integrated_gradients")
