"""Maps averaged over noisy copies of the input: SmoothGrad, SmoothGrad-squared, VarGrad, IG-SmoothGrad.

Noise rule (Smilkov et al. 2017, as PAIR's `GetSmoothedMask`): per image, sigma = spread x (max x -
min x), Gaussian noise added in the model's input space. The paper's SmoothGrad is the *mean* of the
noisy gradients; PAIR squares them by default (`magnitude=True`), which is `squared: true` here.
VarGrad (Adebayo et al. 2018b) is their variance (population variance, ddof 0).

The noise comes only from the passed numpy Generator: images in order, then samples, then pixels
(`draw_noise`), in float32. Generators produce the same stream however it is split, so the maps do
not depend on `max_batch`; and the same array can be replayed into PAIR (tests monkeypatch
`np.random.normal`, which `GetSmoothedMask` calls once per sample).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.errors import HarnessError
from harness.methods import integrated, register, rows_per_call
from harness.methods.kernels import input_gradients

# Reductions over the samples axis (axis 1), in float64.
def mean(maps: np.ndarray) -> np.ndarray:
    return maps.mean(axis=1, dtype=np.float64)


def mean_of_squares(maps: np.ndarray) -> np.ndarray:
    return np.square(maps, dtype=np.float64).mean(axis=1)


def variance(maps: np.ndarray) -> np.ndarray:
    return maps.var(axis=1, dtype=np.float64)


def noise_sigma(x: np.ndarray, spread: float) -> np.ndarray:
    """Per-image noise standard deviation, spread x (max - min), as PAIR computes it (float32)."""
    flat = x.reshape(len(x), -1)
    return (np.float32(spread) * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)


def draw_noise(rng: np.random.Generator, x: np.ndarray, samples: int, spread: float) -> np.ndarray:
    """[images, samples, H, W, C] float32 noise for the images `x`, drawn from `rng`."""
    z = rng.standard_normal((len(x), samples, *x.shape[1:]), dtype=np.float32)
    return z * noise_sigma(x, spread)[:, None, None, None, None]


def over_noise(x: np.ndarray, targets: np.ndarray, rng: np.random.Generator, s: dict,
               base: Callable[[np.ndarray, np.ndarray], np.ndarray], reduce: Callable,
               clean_last: bool = False) -> np.ndarray:
    """reduce_s base(x_i + noise_is) per image. Images are taken a group at a time so that a
    group's noisy copies fill about `max_batch` rows (the base map chunks its own rows).
    `clean_last`: the last copy of each image is the image itself (noise drawn for the others only)."""
    samples = int(s["samples"])
    if samples < 1:
        raise HarnessError(f"samples must be >= 1, got {samples}")
    group = max(1, s["max_batch"] // samples)
    maps = []
    for start in range(0, len(x), group):
        xs = x[start:start + group]
        noise = draw_noise(rng, xs, samples - clean_last, float(s["spread"]))
        if clean_last:
            noise = np.concatenate([noise, np.zeros_like(xs)[:, None]], axis=1)
        noisy = (xs[:, None] + noise).reshape(-1, *x.shape[1:])
        noisy_maps = base(noisy, np.repeat(targets[start:start + group], samples))
        maps.append(reduce(noisy_maps.reshape(len(xs), samples, *x.shape[1:])))
    return np.concatenate(maps).astype(np.float32)


def denoised(method: Callable, samples: int, spread: float, noise_rng: np.random.Generator) -> Callable:
    """`method` as sMPRT explains (Hedström et al. 2024): its maps averaged over `samples` copies of
    each image, noise sigma = spread x (max - min) per image, the last copy noise-free, so one sample
    is `method` itself, bit for bit. The copies of a group of images go to `method` in one call (its
    batched kernel chunks them), never one call per copy. The noise comes from `noise_rng`, so a
    stochastic method draws from its own `rng` what it draws unwrapped."""
    def smoothed(model, images, targets, rng, params) -> np.ndarray:
        x = np.asarray(images, np.float32)
        s = {"samples": samples, "spread": spread,
             "max_batch": rows_per_call((params or {}).get("max_batch", "auto"), x.shape[1:])}

        def base(rows, row_targets):
            return method(model, rows, row_targets, rng, params)
        return over_noise(x, np.asarray(targets, np.int32), noise_rng, s, base, mean, clean_last=True)
    return smoothed


def _gradient_base(model, s: dict) -> Callable:
    def base(rows, row_targets):
        return input_gradients(model, rows, row_targets, s["output"], s["max_batch"])
    return base


def _pair_smoothgrad(pair, x, cmf, args, s) -> np.ndarray:
    return pair.GradientSaliency().GetSmoothedMask(x, cmf, args, stdev_spread=s["spread"], nsamples=s["samples"],
                                                   magnitude=s["squared"])


def _pair_vargrad(pair, x, cmf, args, s) -> np.ndarray:
    """What a PAIR user writes for VarGrad: GetMask on noisy copies, then their variance."""
    sigma = s["spread"] * (np.max(x) - np.min(x))
    grads = [pair.GradientSaliency().GetMask(x + np.random.normal(0, sigma, x.shape), cmf, args)
             for _ in range(s["samples"])]
    return np.var(grads, axis=0)


def _pair_ig_smoothgrad(pair, x, cmf, args, s) -> np.ndarray:
    return pair.IntegratedGradients().GetSmoothedMask(
        x, cmf, args, stdev_spread=s["spread"], nsamples=s["samples"], magnitude=False, x_baseline=np.zeros_like(x),
        x_steps=s["steps"])


def _samples(s, shape) -> tuple[int, int]:
    return s["samples"], 0


@register("smoothgrad", reference=_pair_smoothgrad, rows=_samples, quick={"samples": 4}, stochastic=True)
def smoothgrad(model, x, targets, rng, s) -> np.ndarray:
    return over_noise(x, targets, rng, s, _gradient_base(model, s), mean_of_squares if s["squared"] else mean)


@register("vargrad", reference=_pair_vargrad, rows=_samples, quick={"samples": 4}, stochastic=True)
def vargrad(model, x, targets, rng, s) -> np.ndarray:
    return over_noise(x, targets, rng, s, _gradient_base(model, s), variance)


@register("ig_smoothgrad", reference=_pair_ig_smoothgrad, rows=lambda s, shape: (s["samples"] * s["steps"], 0),
          quick={"samples": 2, "steps": 3}, stochastic=True)
def ig_smoothgrad(model, x, targets, rng, s) -> np.ndarray:
    """SmoothGrad over IG: the mean of the IG maps of the noisy copies (each from its own baseline)."""

    def base(rows, row_targets):
        return integrated.integrated(model, rows, row_targets, s, "ig_smoothgrad")
    return over_noise(x, targets, rng, s, base, mean)
