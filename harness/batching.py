"""How many images one model call takes (`max_batch`), for the model wrapper and the methods (no NumPy, no TF)."""
from __future__ import annotations

import math

# max_batch "auto": as many rows as hold this many input values, within [4, 256] (256 rows of a 28 x 28
# image, 15 of a 299 x 299 x 3 one).
AUTO_BATCH_VALUES, AUTO_BATCH_RANGE = 2 ** 22, (4, 256)


def rows_per_call(max_batch: int | str, image_shape) -> int:
    """`max_batch` as a row count ("auto" resolved for images of `image_shape`)."""
    if max_batch != "auto":
        return int(max_batch)
    low, high = AUTO_BATCH_RANGE
    return min(max(AUTO_BATCH_VALUES // max(math.prod(int(d) for d in image_shape), 1), low), high)
