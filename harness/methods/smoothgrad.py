"""Maps averaged over noisy copies of the input: SmoothGrad, SmoothGrad-squared, VarGrad, IG-SmoothGrad.

Noise as PAIR's `GetSmoothedMask`: per image, sigma = spread x (max x - min x), Gaussian, in the model's
input space. SmoothGrad is the mean of the noisy gradients (`squared: true`: of their squares, PAIR's
default); VarGrad (Adebayo et al. 2018b) their population variance. The noise comes only from the
Generator, in float32, images then samples then pixels (`draw_noise`), so maps do not depend on
`max_batch` and the same draws can be replayed into PAIR.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from harness.methods import integrated, register, rows_per_call
from harness.methods.kernels import input_gradients

# Reductions over the samples axis (axis 1), in float64.
REDUCTIONS = {"mean": lambda maps: maps.mean(axis=1, dtype=np.float64),
              "mean_of_squares": lambda maps: np.square(maps, dtype=np.float64).mean(axis=1),
              "variance": lambda maps: maps.var(axis=1, dtype=np.float64)}


def noise_sigma(x: np.ndarray, spread: float) -> np.ndarray:
    """Per-image noise sigma, spread x (max - min), in float32 as PAIR computes it."""
    flat = x.reshape(len(x), -1)
    return (np.float32(spread) * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)


def draw_noise(rng: np.random.Generator, x: np.ndarray, samples: int, spread: float) -> np.ndarray:
    """[images, samples, H, W, C] float32 noise for the images `x`, drawn from `rng`."""
    z = rng.standard_normal((len(x), samples, *x.shape[1:]), dtype=np.float32)
    return z * noise_sigma(x, spread)[:, None, None, None, None]


def over_noise(x: np.ndarray, targets: np.ndarray, rng: np.random.Generator, s: dict,
               base: Callable, reduce: str, clean_last: bool = False) -> np.ndarray:
    """REDUCTIONS[reduce] over samples of base(x_i + noise_is), a group of images at a time (its copies fill
    about `max_batch` rows). `clean_last`: the last copy is the image itself."""
    samples = int(s["samples"])
    group = max(1, s["max_batch"] // samples)
    maps = []
    for start in range(0, len(x), group):
        xs = x[start:start + group]
        noise = draw_noise(rng, xs, samples - clean_last, float(s["spread"]))
        if clean_last:
            noise = np.concatenate([noise, np.zeros_like(xs)[:, None]], axis=1)
        noisy = (xs[:, None] + noise).reshape(-1, *x.shape[1:])
        noisy_maps = base(noisy, np.repeat(targets[start:start + group], samples))
        maps.append(REDUCTIONS[reduce](noisy_maps.reshape(len(xs), samples, *x.shape[1:])))
    return np.concatenate(maps).astype(np.float32)


def denoised(method: Callable, samples: int, spread: float, noise_rng: np.random.Generator) -> Callable:
    """`method` as sMPRT explains (Hedström et al. 2024): its maps averaged over `samples` copies of each
    image, the last copy noise-free (one sample is `method` itself, bit for bit). The noise comes from
    `noise_rng`, so a stochastic method draws from its own `rng` what it draws unwrapped."""
    def smoothed(model, images, targets, rng, params) -> np.ndarray:
        x = np.asarray(images, np.float32)
        s = {"samples": samples, "spread": spread,
             "max_batch": rows_per_call((params or {}).get("max_batch", "auto"), x.shape[1:])}

        def base(rows, row_targets):
            return method(model, rows, row_targets, rng, params)
        return over_noise(x, np.asarray(targets, np.int32), noise_rng, s, base, "mean", clean_last=True)
    return smoothed


def _gradients(model, s: dict) -> Callable:
    return functools.partial(input_gradients, model, output=s["output"], max_batch=s["max_batch"])


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
    return over_noise(x, targets, rng, s, _gradients(model, s), "mean_of_squares" if s["squared"] else "mean")


@register("vargrad", reference=_pair_vargrad, rows=_samples, quick={"samples": 4}, stochastic=True)
def vargrad(model, x, targets, rng, s) -> np.ndarray:
    return over_noise(x, targets, rng, s, _gradients(model, s), "variance")


@register("ig_smoothgrad", reference=_pair_ig_smoothgrad, rows=lambda s, shape: (s["samples"] * s["steps"], 0),
          quick={"samples": 2, "steps": 3}, stochastic=True)
def ig_smoothgrad(model, x, targets, rng, s) -> np.ndarray:
    """SmoothGrad over IG: the mean of the IG maps of the noisy copies (each from its own baseline)."""
    return over_noise(x, targets, rng, s, functools.partial(integrated.integrated, model, s=s, method="ig_smoothgrad"),
                      "mean")
