"""Guided IG (Kapishnikov et al. 2021): IG along a path that moves the least important features first.

The algorithm is PAIR's `guided_ig_impl` (saliency/core/guided_ig.py), replicated operation for
operation in float64 so that the maps equal PAIR's `GuidedIG.GetMask`. Why not call it: PAIR walks one
image at a time and asks the model for one gradient per step (batch of 1), since each step's path
depends on the last step's gradient. Here the images advance in lock-step: one batched gradient
call per step for all of them (in groups of `max_batch: auto` rows), then each image's path search
(PAIR's inner "while gamma > 1" loop) in place on its flat float64 rows, with fewer temporaries.
"""
from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessError
from harness.methods import COMMON, integrated, register, rows_per_call
from harness.methods.kernels import input_gradients

DEFAULTS = {"steps": 200, "fraction": 0.25, "max_dist": 0.02,
            **{k: integrated.DEFAULTS[k] for k in ("baseline", "baseline_value", "blur_sigma")},
            "output": COMMON["output"]}
EPSILON = 1e-9  # PAIR's tolerance for "L1 target reached"


def guided_path_integral(model, x: np.ndarray, targets: np.ndarray, baselines: np.ndarray, steps: int,
                         fraction: float, max_dist: float, output: str) -> np.ndarray:
    """PAIR's Guided IG attribution of every image, [n, H, W, C] float64."""
    if steps < 1:
        raise HarnessError(f"method guided_ig: steps must be >= 1, got {steps}")
    shape = x.shape
    x_in = np.asarray(x, np.float64).reshape(len(x), -1)
    x_base = np.asarray(baselines, np.float64).reshape(len(x), -1)
    attr = np.zeros_like(x_in)
    walking = np.flatnonzero(np.abs(x_in - x_base).sum(axis=1) != 0)  # PAIR: input == baseline -> 0
    group = rows_per_call("auto", shape[1:])  # images walked together: one gradient row each per step
    for rows in (walking[i:i + group] for i in range(0, len(walking), group)):
        attr[rows] = _walk(model, x_in[rows], x_base[rows], targets[rows], shape[1:], steps, fraction, max_dist,
                           output)
    return attr.reshape(shape)


def _walk(model, x_in, x_base, targets, image_shape, steps, fraction, max_dist, output) -> np.ndarray:
    """guided_ig_impl for images [n, features] in lock-step (none equal to its baseline)."""
    point = x_base.copy()
    diff = x_in - x_base
    moving = diff != 0  # PAIR: alpha of a feature with input == baseline is NaN -> alpha_max: never behind
    l1_total = np.abs(x_in - x_base).sum(axis=1)
    attr = np.zeros_like(x_in)
    for step in range(steps):
        grad_actual = input_gradients(model, point.reshape(-1, *image_shape), targets, output, "auto")
        grad_actual = grad_actual.reshape(len(point), -1)
        grad = grad_actual.copy()
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min = x_base + diff * alpha_min
        x_max = x_base + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        for i in range(len(point)):  # each image's "while gamma > 1" loop
            _step(point[i], attr[i], grad[i], grad_actual[i], x_in[i], x_base[i], diff[i], moving[i], x_min[i],
                  x_max[i], alpha_min, l1_target[i], fraction)
    return attr


def _step(x, attr, grad, grad_actual, x_in, x_base, diff, moving, x_min, x_max, alpha_min, l1_target, fraction):
    """One step of PAIR's guided_ig_impl on one image's flat rows, in place (x, attr, grad)."""
    gamma = np.inf
    while gamma > 1.0:
        x_old = x.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            behind = ((x - x_base) / diff < alpha_min) & moving
        np.copyto(x, x_min, where=behind)
        l1_current = np.abs(x - x_in).sum()
        if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
            attr += (x - x_old) * grad_actual
            break
        grad[x == x_max] = np.inf
        magnitude = np.abs(grad)
        threshold = np.quantile(magnitude, fraction, method="lower")
        selected = (magnitude <= threshold) & (grad != np.inf)
        l1_s = (np.abs(x - x_max) * selected).sum()
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
        if gamma > 1.0:
            np.copyto(x, x_max, where=selected)
        else:
            assert gamma > 0, gamma
            np.copyto(x, x + (x_max - x) * gamma, where=selected)
        attr += (x - x_old) * grad_actual


@register("guided_ig", DEFAULTS)
def guided_ig(model, x, targets, rng, s) -> np.ndarray:
    """Guided IG from the same baselines as Integrated Gradients."""
    baselines = integrated.baseline(x, s, model.input_spec.value_range, "guided_ig")
    return guided_path_integral(model, x, targets, baselines, int(s["steps"]), float(s["fraction"]),
                                float(s["max_dist"]), s["output"])
