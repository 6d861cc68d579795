"""Blur IG (Xu et al. 2020): Integrated Gradients along a path of increasingly blurred images.

PAIR's `BlurIG.GetMask` is the reference (sigmas i * max_sigma / steps, or their square roots; the
path point of step i is the image blurred by sigma_i; the path's derivative is the finite difference
(blur(sigma_i + grad_step) - blur(sigma_i)) / grad_step; the map is -sum_i dsigma_i * derivative_i *
gradient_i). Why not call it: it runs scipy's `gaussian_filter` twice per step and image (a 401-tap
kernel at sigma 50, ~0.1 s at 299 x 299 on one core) and the model once per image. Here:

- the blur is separable and linear: a few float32 matrix products per step (`BlurPath`, BLAS on
  all cores), the same linear map as PAIR's `gaussian_filter(mode="constant")`: scipy's truncated
  kernel (radius int(4 sigma + 0.5), normalized over its taps) and zeros beyond the border;
- the path derivative is formed from the difference of the two filters, in float64, so it does not
  lose digits by subtracting two blurred float32 images (PAIR does: its derivative carries ~1e-4
  relative rounding noise, so the tests compare with PAIR run in float64);
- all path points of all images go through the model's batched gradient kernel, `max_batch` rows
  per call, and each step is weighed by its own sigma increment (PAIR weighs a whole batch by its
  last step's increment, which is the same only for evenly spaced sigmas).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import toeplitz

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.integrated import add_by_image, row_parts
from harness.methods.kernels import input_gradients

TRUNCATE = 4.0  # scipy's gaussian_filter default: the kernel reaches int(4 sigma + 0.5) pixels


def sigmas(steps: int, max_sigma: float, sqrt: bool) -> np.ndarray:
    """PAIR's steps + 1 sigmas, from 0 to max_sigma."""
    if steps < 1:
        raise HarnessError(f"method blur_ig: steps must be >= 1, got {steps}")
    if sqrt:
        return np.array([np.sqrt(float(i) * max_sigma / float(steps)) for i in range(steps + 1)])
    return np.array([float(i) * max_sigma / float(steps) for i in range(steps + 1)])


def radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5)


def gaussian_matrix(sigma: float, size: int) -> np.ndarray:
    """[size, size] float64: scipy's `gaussian_filter1d(mode="constant")` along one axis as a matrix
    (the truncated kernel, normalized over its taps; zeros beyond the border). sigma 0: identity,
    as PAIR skips the blur there."""
    if sigma == 0:
        return np.eye(size)
    r = radius(sigma)
    taps = np.arange(min(r, size - 1) + 1)
    column = np.zeros(size)
    column[taps] = np.exp(-0.5 / (float(sigma) * float(sigma)) * taps ** 2)
    # scipy's normalization runs over all 2r + 1 taps, also those beyond the image.
    full = np.exp(-0.5 / (float(sigma) * float(sigma)) * np.arange(-r, r + 1) ** 2)
    return toeplitz(column / full.sum())


class BlurPath:
    """Blurred copies of one [H, W, C] image and their derivatives in sigma, a batch of sigmas at once.

    The blur is separable: B(sigma) x = A_H x A_W^T per channel, with A the 1-D filter as a matrix
    (`gaussian_matrix`), so it is float32 matrix products (BLAS, all cores) instead of two direct
    401-tap filterings per step. The derivative (B(sigma + h) x - B(sigma) x) / h is expanded as
    D_H (x A'_W^T) + A_H (x D_W^T), with A' the filter at sigma + h and D = (A' - A) / h formed in
    float64, so it does not lose digits by subtracting two float32 images (PAIR does, and carries
    ~1e-4 relative rounding noise). The W pass of all sigmas is one product with the image; the H
    pass is one [H, 2H] x [2H, W C] product per sigma.
    """

    def __init__(self, image: np.ndarray):
        self.height, self.width, self.channels = np.shape(image)
        # [H * C, W]: the image's rows per channel, for the W pass.
        self.rows = np.ascontiguousarray(np.asarray(image, np.float32).transpose(0, 2, 1)).reshape(-1, self.width)

    @staticmethod
    def filters(sigma: float, grad_step: float, size: int) -> tuple[np.ndarray, ...]:
        """float32 (A, A', D) for one axis of `size` pixels."""
        at, ahead = gaussian_matrix(sigma, size), gaussian_matrix(sigma + grad_step, size)
        return at.astype(np.float32), ahead.astype(np.float32), ((ahead - at) / grad_step).astype(np.float32)

    def points(self, sigmas: np.ndarray, grad_step: float) -> tuple[np.ndarray, np.ndarray]:
        """(image blurred by each sigma, d blur / d sigma by PAIR's forward difference), [k, H, W, C]."""
        h, w, c, k = self.height, self.width, self.channels, len(sigmas)
        per_w = [self.filters(s, grad_step, w) for s in sigmas]
        per_h = per_w if h == w else [self.filters(s, grad_step, h) for s in sigmas]
        along_w = np.concatenate([m.T for filters in per_w for m in filters], axis=1)
        # [H * C, 3 k W] -> [k, 3, H, C * W]: per sigma, x A_W^T, x A'_W^T, x D_W^T.
        passed = (self.rows @ along_w).reshape(h, c, k, 3, w).transpose(2, 3, 0, 1, 4).reshape(k, 3, h, c * w)
        at_h, _, d_h = (np.stack(m) for m in zip(*per_h))
        # numpy hands a stack of matrices to BLAS only if each operand is one contiguous block.
        blurred = at_h @ np.ascontiguousarray(passed[:, 0])
        derivative = np.concatenate([d_h, at_h], axis=2) @ np.ascontiguousarray(passed[:, 1:]).reshape(k, 2 * h, c * w)
        as_images = lambda y: y.reshape(k, h, c, w).transpose(0, 1, 3, 2)  # noqa: E731
        return as_images(blurred), as_images(derivative)


def blur_path_integral(model, x: np.ndarray, targets: np.ndarray, s: dict) -> np.ndarray:
    """-sum_i dsigma_i * d blur / d sigma (sigma_i) * gradient(blur(sigma_i)), per image."""
    steps, grad_step, max_batch = int(s["steps"]), float(s["grad_step"]), int(s["max_batch"])
    sigma = sigmas(steps, float(s["max_sigma"]), bool(s["sqrt"]))
    increments = np.diff(sigma)
    total = np.zeros(x.shape, np.float64)
    rows = len(x) * steps
    path, path_image = None, -1
    for start in range(0, rows, max_batch):
        image, step = np.divmod(np.arange(start, min(start + max_batch, rows)), steps)
        points, derivatives = [], []
        for i in np.unique(image):  # rows are (image, step) in order: one or a few images per chunk
            if i != path_image:
                path, path_image = BlurPath(x[i]), i
            blurred, derivative = path.points(sigma[step[image == i]], grad_step)
            points.append(blurred)
            derivatives.append(derivative)
        points, derivatives = np.concatenate(points), np.concatenate(derivatives)
        grads = input_gradients(model, points, targets[image], s["output"], max_batch)
        for part in row_parts(len(image), x.shape[1:]):
            weighted = increments[step[part], None, None, None] * (derivatives[part] * grads[part])
            add_by_image(total, image[part], weighted)
    return (-total).astype(np.float32)


def _pair_blur_ig(pair, x, cmf, args, s) -> np.ndarray:
    return pair.BlurIG().GetMask(x, cmf, args, max_sigma=s["max_sigma"], steps=s["steps"], grad_step=s["grad_step"],
                                 sqrt=s["sqrt"])


@register("blur_ig", reference=_pair_blur_ig, rows=lambda s, shape: (s["steps"], 0), quick={"steps": 4})
def blur_ig(model, x, targets, rng, s) -> np.ndarray:
    return blur_path_integral(model, x, targets, s)
