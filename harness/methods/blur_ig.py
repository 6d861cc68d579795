"""Blur IG (Xu et al. 2020): Integrated Gradients along a path of increasingly blurred images.

PAIR's `BlurIG.GetMask` is the reference: sigma_i = i * max_sigma / steps (or its square root), path
point i the image blurred by sigma_i, derivative (blur(sigma_i + grad_step) - blur(sigma_i)) /
grad_step, map -sum_i dsigma_i * derivative_i * gradient_i. Not called because it filters twice per
step and image (~0.1 s at sigma 50, 299 x 299) and calls the model per image. Here the blur is
`gaussian_filter(mode="constant")` as separable float32 matrix products in TensorFlow (`blur_points`),
the derivative is formed from the filters' difference in float64 (PAIR's subtraction of two float32
images carries ~1e-4 relative noise: the tests compare with PAIR in float64), all path points go
through the batched gradient kernel, and each step is weighed by its own sigma increment.
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from harness.methods import register
from harness.methods.integrated import add_by_image, row_parts
from harness.methods.kernels import input_gradients

TRUNCATE = 4.0  # scipy's gaussian_filter default: the kernel reaches int(4 sigma + 0.5) pixels


def gaussian_matrices(sigmas: np.ndarray, size: int) -> np.ndarray:
    """[k, size, size] float64: per sigma, scipy's `gaussian_filter1d(mode="constant")` along one axis as a
    Toeplitz matrix (the truncated kernel normalized over its taps, zeros beyond the border; sigma 0:
    the identity, as PAIR skips the blur there), all built from one exp over [k, size] values."""
    sigmas = np.asarray(sigmas, np.float64)
    taps = np.arange(size)
    blurred = sigmas > 0
    scale = np.where(blurred, sigmas, 1.0)
    reach = np.array([int(TRUNCATE * float(s) + 0.5) for s in sigmas])
    with np.errstate(under="ignore"):
        rows = np.exp(-0.5 / (scale * scale)[:, None] * taps ** 2)  # the same float64 ops as one sigma's
    rows[taps > reach[:, None]] = 0.0
    # scipy's normalization runs over all 2r + 1 taps, also those beyond the image.
    rows /= np.array([np.exp(-0.5 / (s * s) * np.arange(-r, r + 1) ** 2).sum() if s > 0 else 1.0
                      for s, r in zip(sigmas.tolist(), reach.tolist())])[:, None]
    rows[~blurred] = taps == 0  # sigma 0: the identity
    return rows[:, np.abs(taps[:, None] - taps[None, :])]


def axis_filters(sigmas: np.ndarray, grad_step: float, size: int) -> np.ndarray:
    """[k, 3, size, size] float32: per sigma, the filter A, the filter A' at sigma + grad_step, and
    D = (A' - A) / grad_step formed in float64, along one axis of `size` pixels."""
    at, ahead = gaussian_matrices(sigmas, size), gaussian_matrices(np.asarray(sigmas) + grad_step, size)
    return np.stack([at, ahead, (ahead - at) / grad_step], axis=1).astype(np.float32)


def blur_points(image: np.ndarray, sigmas: np.ndarray, grad_step: float,
                filters: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(one [H, W, C] image blurred by each sigma, d blur / d sigma by PAIR's forward difference), [k, H, W, C].

    B(sigma) x = A_H x A_W^T per channel (A: `gaussian_matrices`); the derivative (B(sigma + h) x -
    B(sigma) x) / h is D_H (x A'_W^T) + A_H (x D_W^T), with A' the filter at sigma + h and D = (A' - A) / h.
    `filters`: (`axis_filters` along W, along H) of these sigmas, if already built.
    """
    h, w = np.shape(image)[:2]
    if filters is None:
        along = axis_filters(sigmas, grad_step, w)
        filters = (along, along if h == w else axis_filters(sigmas, grad_step, h))
    image = tf.constant(np.asarray(image, np.float32))
    blurred, derivative = separable_blur()(image, *(tf.constant(f) for f in filters))
    return blurred.numpy(), derivative.numpy()


@functools.cache
def separable_blur():
    """`blur_points`' products: (image [H, W, C], W filters [k, 3, W, W], H filters [k, 3, H, H]) -> (blurred,
    derivative), each [k, H, W, C], compiled once for any shape. In TensorFlow, not numpy's BLAS: BLAS threads
    woken right after a model call fought TensorFlow's for the cores (~30 ms instead of 1.5 ms a call)."""
    def passes(image, per_w, per_h):
        h, w, c, k = tf.shape(image)[0], tf.shape(image)[1], tf.shape(image)[2], tf.shape(per_w)[0]
        rows = tf.reshape(tf.transpose(image, [0, 2, 1]), [h * c, w])  # the image's rows per channel
        # [W, 3 k W]: per sigma, A_W^T, A'_W^T, D_W^T side by side.
        along_w = tf.reshape(tf.transpose(per_w, [3, 0, 1, 2]), [w, 3 * k * w])
        # [H * C, 3 k W] -> [k, 3, H, C * W]: per sigma, x A_W^T, x A'_W^T, x D_W^T.
        passed = tf.reshape(tf.transpose(tf.reshape(rows @ along_w, [h, c, k, 3, w]), [2, 3, 0, 1, 4]),
                            [k, 3, h, c * w])
        blurred = tf.matmul(per_h[:, 0], passed[:, 0])
        derivative = tf.matmul(tf.concat([per_h[:, 2], per_h[:, 0]], axis=2),
                               tf.reshape(passed[:, 1:], [k, 2 * h, c * w]))
        return tuple(tf.transpose(tf.reshape(y, [k, h, c, w]), [0, 1, 3, 2]) for y in (blurred, derivative))
    any_filters = tf.TensorSpec([None, 3, None, None], tf.float32)
    image = tf.TensorSpec([None, None, None], tf.float32)
    return tf.function(passes, input_signature=[image, any_filters, any_filters])


def _pair_blur_ig(pair, x, cmf, args, s) -> np.ndarray:
    return pair.BlurIG().GetMask(x, cmf, args, max_sigma=s["max_sigma"], steps=s["steps"], grad_step=s["grad_step"],
                                 sqrt=s["sqrt"])


@register("blur_ig", reference=_pair_blur_ig, rows=lambda s, shape: (s["steps"], 0), quick={"steps": 4})
def blur_ig(model, x, targets, rng, s) -> np.ndarray:
    """-sum_i dsigma_i * d blur / d sigma (sigma_i) * gradient(blur(sigma_i)), per image."""
    steps, grad_step, max_batch = int(s["steps"]), float(s["grad_step"]), int(s["max_batch"])
    # PAIR's steps + 1 sigmas from 0 to max_sigma (or their square roots)
    sigma = np.array([float(i) * float(s["max_sigma"]) / float(steps) for i in range(steps + 1)])
    sigma = np.sqrt(sigma) if s["sqrt"] else sigma
    increments = np.diff(sigma)
    total = np.zeros(x.shape, np.float64)
    rows = len(x) * steps
    for start in range(0, rows, max_batch):
        image, step = np.divmod(np.arange(start, min(start + max_batch, rows)), steps)
        # The filters depend on the sigma only: built once per chunk for all its images.
        chunk_steps = np.unique(step)
        along_w = axis_filters(sigma[chunk_steps], grad_step, x.shape[2])
        along_h = along_w if x.shape[1] == x.shape[2] else axis_filters(sigma[chunk_steps], grad_step, x.shape[1])
        points, derivatives = [], []
        for i in np.unique(image):  # rows are (image, step) in order: one or a few images per chunk
            own = np.searchsorted(chunk_steps, step[image == i])
            blurred, derivative = blur_points(x[i], sigma[step[image == i]], grad_step, (along_w[own], along_h[own]))
            points.append(blurred)
            derivatives.append(derivative)
        points, derivatives = np.concatenate(points), np.concatenate(derivatives)
        grads = input_gradients(model, points, targets[image], s["output"], max_batch)
        for part in row_parts(len(image), x.shape[1:]):
            weighted = increments[step[part], None, None, None] * (derivatives[part] * grads[part])
            add_by_image(total, image[part], weighted)
    return (-total).astype(np.float32)
