"""How many images one model call takes (`max_batch`): shared by the model wrapper and the methods,
NumPy-free and TensorFlow-free so that `harness.methods` imports neither."""
from __future__ import annotations

import math

# max_batch "auto": as many rows as hold this many input values, within [4, 256]: 256 rows of a
# 28x28 image (a small CNN runs ~1.5x faster per row at 256 than at 64), 15 of a 299x299x3 one
# (InceptionV3 needs ~70 MB per row with gradients and runs no faster per row beyond ~4).
AUTO_BATCH_VALUES, AUTO_BATCH_RANGE = 2 ** 22, (4, 256)


def rows_per_call(max_batch: int | str, image_shape) -> int:
    """`max_batch` as a row count ("auto" resolved for images of `image_shape`)."""
    if max_batch != "auto":
        return int(max_batch)
    low, high = AUTO_BATCH_RANGE
    # Plain integers: this runs on every method call, and np.prod / np.clip cost ~50 us a call.
    return min(max(AUTO_BATCH_VALUES // max(math.prod(int(d) for d in image_shape), 1), low), high)
