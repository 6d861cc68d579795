"""PAIR `saliency.core` interop: the NumPy 2 shim its Guided IG needs, and a `call_model_function`
that serves PAIR's requests from the harness's compiled kernels.

XRAI, Blur IG and Guided IG used to run through PAIR here; they now have batched implementations of
their own (`xrai`, `blur_ig`, `guided_ig`, tested equal to PAIR), since PAIR asks the model one image
(and, for Guided IG, one row) at a time and does its CPU work (segment ranking, blurring, path search)
unvectorized. This module stays for running PAIR itself: the benchmark and the tests call PAIR's
classes as the reference, and `call_model_function` lets PAIR's code run on a `ModelUnderTest`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import saliency.core as pair
from saliency.core import guided_ig as pair_guided_ig

from harness.errors import HarnessError
from harness.methods.kernels import input_gradients, output_values

TARGET = "target"


class _NumpyForGuidedIG:
    """numpy as PAIR 0.2.1's Guided IG expects it: it calls `np.quantile(..., interpolation=...)`,
    an argument NumPy 2 removed (now `method`). Installed into that one PAIR module only."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)


if "interpolation" not in inspect.signature(np.quantile).parameters:
    pair_guided_ig.np = _NumpyForGuidedIG()


def call_model_function(model, output: str, max_batch: int) -> Callable:
    """PAIR's call_model_function over the model wrapper; call_model_args = {"target": class}."""
    kernels = {pair.INPUT_OUTPUT_GRADIENTS: input_gradients, pair.OUTPUT_LAYER_VALUES: output_values}

    def call(x_batch, call_model_args=None, expected_keys=None):
        rows = np.asarray(x_batch, np.float32)
        targets = np.full(len(rows), int(call_model_args[TARGET]), np.int32)
        unknown = [k for k in expected_keys if k not in kernels]
        if unknown:
            raise HarnessError(f"the harness's PAIR adapter does not serve {', '.join(unknown)}")
        return {k: kernels[k](model, rows, targets, output, max_batch) for k in expected_keys}
    return call
