"""Guided IG (Kapishnikov et al. 2021): IG along a path that moves the least important features first.

The algorithm is PAIR's `guided_ig_impl` (saliency/core/guided_ig.py), replicated operation for
operation in float64 so that the maps equal PAIR's `GuidedIG.GetMask`. Why not call it: PAIR walks one
image at a time and asks the model for one gradient per step (batch of 1), since each step's path
depends on the last step's gradient. Here all images advance in lock-step: one batched gradient call
per step for all images still walking, and the per-step path search (the inner "while gamma > 1"
loop) runs on every image's row at once, each image leaving the loop when its own L1 target is met.
"""
from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessError
from harness.methods import COMMON, integrated, register
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
    x_in, x_base = x_in[walking], x_base[walking]
    point = x_base.copy()
    l1_total = np.abs(x_in - x_base).sum(axis=1)
    diff = x_in - x_base

    def to_alpha(rows, at, alpha_max):  # PAIR's translate_x_to_alpha, NaN (input == baseline) -> alpha_max
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(diff[rows] != 0, (at - x_base[rows]) / diff[rows], np.nan)
        alpha[np.isnan(alpha)] = alpha_max
        return alpha

    path_attr = np.zeros_like(x_in)
    for step in range(steps if len(walking) else 0):
        grad_actual = input_gradients(model, point.reshape(-1, *shape[1:]), targets[walking], output, "auto")
        grad_actual = grad_actual.reshape(len(walking), -1)
        grad = grad_actual.copy()
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min = x_base + diff * alpha_min
        x_max = x_base + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        rows = np.arange(len(walking))  # images still in this step's "while gamma > 1" loop
        while len(rows):
            x_old = point[rows]
            x = x_old.copy()
            behind = to_alpha(rows, x, alpha_max) < alpha_min
            x[behind] = x_min[rows][behind]
            l1_current = np.abs(x - x_in[rows]).sum(axis=1)
            reached = np.array([math.isclose(t, c, rel_tol=EPSILON, abs_tol=EPSILON)
                                for t, c in zip(l1_target[rows], l1_current)], bool)
            g = grad[rows]
            g[x == x_max[rows]] = np.inf
            threshold = np.quantile(np.abs(g), fraction, axis=1, method="lower")
            selected = (np.abs(g) <= threshold[:, None]) & (g != np.inf)
            selected[reached] = False
            l1_s = (np.abs(x - x_max[rows]) * selected).sum(axis=1)
            with np.errstate(divide="ignore"):
                gamma = np.where(l1_s > 0, (l1_current - l1_target[rows]) / np.where(l1_s > 0, l1_s, 1), np.inf)
            gamma[reached] = 0.0  # these leave the loop without a move
            full = gamma > 1.0
            move = np.where(full[:, None], x_max[rows], x + (x_max[rows] - x) * gamma[:, None])
            x = np.where(selected, move, x)
            grad[rows] = g
            point[rows] = x
            path_attr[rows] += (x - x_old) * grad_actual[rows]
            rows = rows[full & ~reached]
    attr[walking] = path_attr
    return attr.reshape(shape)


@register("guided_ig", DEFAULTS)
def guided_ig(model, x, targets, rng, s) -> np.ndarray:
    """Guided IG from the same baselines as Integrated Gradients."""
    baselines = integrated.baseline(x, s, model.input_spec.value_range, "guided_ig")
    return guided_path_integral(model, x, targets, baselines, int(s["steps"]), float(s["fraction"]),
                                float(s["max_dist"]), s["output"])
