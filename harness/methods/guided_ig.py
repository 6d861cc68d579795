"""Guided IG (Kapishnikov et al. 2021): IG along a path that moves the least important features first.

PAIR's `guided_ig_impl`, operation for operation in float64, so maps equal PAIR's `GuidedIG.GetMask`;
not called because PAIR walks one image at a time in Python loops. Here the images advance in
lock-step, each image's path search in place in reused buffers, large images in threads.

Gradients are asked one image per call by default (`max_batch: 1`, as PAIR): which features a step
moves flips with a gradient's last bits, which depend on the batch-mates of its call, so only then is an
image's map independent of the other images (tests/test_methods.py). `max_batch` > 1 trades that for
speed (MNIST CNN, 200 steps: 1.0-1.5 s per image alone, 0.28 s with 8 images a call).
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from harness.methods import integrated, register, rows_per_call
from harness.methods.kernels import input_gradients

EPSILON = 1e-9  # PAIR's tolerance for "L1 target reached"
# Images with at least this many features search their paths in threads (NumPy releases the GIL);
# below it, a thread's start-up costs more than the search.
PARALLEL_FEATURES = 20_000


def _pair_guided_ig(pair, x, cmf, args, s) -> np.ndarray:
    return pair.GuidedIG().GetMask(x, cmf, args, x_baseline=np.zeros_like(x), x_steps=s["steps"],
                                   fraction=s["fraction"], max_dist=s["max_dist"])


@register("guided_ig", reference=_pair_guided_ig, rows=lambda s, shape: (s["steps"], 0), quick={"steps": 4},
          sequential=True)
def guided_ig(model, x, targets, rng, s) -> np.ndarray:
    """PAIR's Guided IG from the same baselines as Integrated Gradients; `max_batch` images a gradient call."""
    shape = x.shape
    x_in = np.asarray(x, np.float64).reshape(len(x), -1)
    baselines = integrated.baseline(x, s, model.input_spec.value_range)
    x_base = np.asarray(baselines, np.float64).reshape(len(x), -1)
    attr = np.zeros_like(x_in)
    walking = np.flatnonzero(np.abs(x_in - x_base).sum(axis=1) != 0)  # PAIR: input == baseline -> 0
    per_call = rows_per_call(s["max_batch"], shape[1:])  # gradient rows (images) per call
    # Images walked together (their searches share a thread pool); at least one call's worth.
    group = max(per_call, rows_per_call("auto", shape[1:]))
    workers = min(group, len(walking), os.cpu_count() or 1) if x_in.shape[1] >= PARALLEL_FEATURES else 1
    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="guided-ig") as pool:
        for rows in (walking[i:i + group] for i in range(0, len(walking), group)):
            attr[rows] = _walk(model, x_in[rows], x_base[rows], targets[rows], shape[1:], int(s["steps"]),
                               float(s["fraction"]), float(s["max_dist"]), s["output"], per_call,
                               pool if workers > 1 else None)
    return attr.reshape(shape)


def _walk(model, x_in, x_base, targets, image_shape, steps, fraction, max_dist, output, per_call, pool) -> np.ndarray:
    """guided_ig_impl for images [n, features] in lock-step (none equal to its baseline)."""
    point = x_base.copy()
    diff = x_in - x_base
    moving = diff != 0  # PAIR: alpha of a feature with input == baseline is NaN -> alpha_max: never behind
    l1_total = np.abs(x_in - x_base).sum(axis=1)
    attr = np.zeros_like(x_in)
    for step in range(steps):
        grad_actual = input_gradients(model, point.reshape(-1, *image_shape), targets, output, per_call)
        grad_actual = grad_actual.reshape(len(point), -1)
        grad = grad_actual.copy()
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min = x_base + diff * alpha_min
        x_max = x_base + diff * alpha_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        searches = [(point[i], attr[i], grad[i], grad_actual[i], x_in[i], x_base[i], diff[i], moving[i], x_min[i],
                     x_max[i], alpha_min, l1_target[i], fraction) for i in range(len(point))]
        if pool is None:
            for args in searches:
                _step(*args)
        else:
            list(pool.map(lambda args: _step(*args), searches))  # list(): re-raises a worker's error
    return attr


_scratch = threading.local()


def _buffers(features: int) -> SimpleNamespace:
    """Work arrays for `_step`, one set per thread, reused across steps (~3x faster at 299 x 299 x 3)."""
    if getattr(_scratch, "features", None) != features:
        _scratch.features = features
        _scratch.arrays = SimpleNamespace(
            x_old=np.empty(features), work=np.empty(features), magnitude=np.empty(features, np.float32),
            ranked=np.empty(features, np.float32), mask=np.empty(features, bool), selected=np.empty(features, bool))
    return _scratch.arrays


def _step(x, attr, grad, grad_actual, x_in, x_base, diff, moving, x_min, x_max, alpha_min, l1_target, fraction):
    """One step of PAIR's guided_ig_impl on one image's flat rows, in place (x, attr, grad), in PAIR's
    operations and order. Two shortcuts, same result: only the first pass of the loop can find features
    behind alpha_min (later passes move towards x_max only); `np.quantile(|grad|, fraction, 'lower')` is
    the k-th smallest |grad|, k = floor((n - 1) * fraction): one in-place partition."""
    w = _buffers(len(x))
    k = math.floor((len(x) - 1) * fraction)
    gamma, first = np.inf, True
    while gamma > 1.0:
        np.copyto(w.x_old, x)
        if first:
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(np.subtract(x, x_base, out=w.work), diff, out=w.work)
            np.logical_and(np.less(w.work, alpha_min, out=w.mask), moving, out=w.mask)
            np.copyto(x, x_min, where=w.mask)
            first = False
        l1_current = np.abs(np.subtract(x, x_in, out=w.work), out=w.work).sum()
        if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
            attr += np.multiply(np.subtract(x, w.x_old, out=w.work), grad_actual, out=w.work)
            break
        np.copyto(grad, np.inf, where=np.equal(x, x_max, out=w.mask))
        np.abs(grad, out=w.magnitude)
        np.copyto(w.ranked, w.magnitude)
        w.ranked.partition(k)
        threshold = w.ranked[k]
        np.less_equal(w.magnitude, threshold, out=w.selected)
        w.selected &= np.not_equal(grad, np.inf, out=w.mask)
        gap = np.abs(np.subtract(x, x_max, out=w.work), out=w.work)
        l1_s = np.multiply(gap, w.selected, out=w.work).sum()
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
        if gamma > 1.0:
            np.copyto(x, x_max, where=w.selected)
        else:
            assert gamma > 0, gamma
            moved = np.add(np.multiply(np.subtract(x_max, x, out=w.work), gamma, out=w.work), x, out=w.work)
            np.copyto(x, moved, where=w.selected)
        attr += np.multiply(np.subtract(x, w.x_old, out=w.work), grad_actual, out=w.work)
