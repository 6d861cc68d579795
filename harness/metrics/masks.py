"""Random maps for the calibration control (a map against noise, noise against noise)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.errors import HarnessError

#: Distributions of the calibration masks.
MASK_KINDS: tuple[str, ...] = ("gaussian", "uniform")


def random_mask(shape: Sequence[int] | int, rng: np.random.Generator, kind: str = "gaussian") -> np.ndarray:
    """Random map for the calibration control: 'gaussian' N(0, 1) or 'uniform' U[-1, 1], float32."""
    if kind == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    raise HarnessError(f"unknown random mask kind {kind!r}; valid names: {', '.join(MASK_KINDS)}")
