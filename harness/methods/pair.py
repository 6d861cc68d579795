"""XRAI, Blur IG and Guided IG through PAIR `saliency.core`, over the harness's compiled kernels.

These three are not re-implemented: their logic (segmentation and region ranking, the blur path,
the adaptively chosen Guided IG path) is PAIR's. What the harness adds is the `call_model_function`
adapter below, which serves PAIR's requests from the model's compiled kernels (compiled once per
model, no retrace after randomization), and PAIR's `batch_size` set to `max_batch`. Guided IG picks
each step from the previous step's gradient, so it is sequential by nature (one row per call).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import saliency.core as pair
from saliency.core import guided_ig as pair_guided_ig

from harness.errors import HarnessError
from harness.methods import COMMON, integrated, register
from harness.methods.kernels import input_gradients, output_values, to_channels

TARGET = "target"
XRAI = {"steps": 100, "algorithm": "full", **COMMON}
BLUR_IG = {"steps": 100, "max_sigma": 50.0, "grad_step": 0.01, "sqrt": False, **COMMON}
GUIDED_IG = {"steps": 200, "fraction": 0.25, "max_dist": 0.02,
             **{k: integrated.DEFAULTS[k] for k in ("baseline", "baseline_value", "blur_sigma")},
             "output": COMMON["output"]}


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


def per_image(model, targets: np.ndarray, s: dict, explain: Callable, max_batch: int) -> np.ndarray:
    """explain(i, call_model_function, call_model_args) for each image i, stacked as float32."""
    call = call_model_function(model, s["output"], max_batch)
    return np.stack([np.asarray(explain(i, call, {TARGET: int(t)}), np.float32) for i, t in enumerate(targets)])


@register("xrai", XRAI)
def xrai(model, x, t, rng, s) -> np.ndarray:
    """XRAI (Kapishnikov et al. 2019) with PAIR's defaults (IG from black and white baselines)."""
    extra = pair.XRAIParameters(steps=int(s["steps"]), algorithm=s["algorithm"])

    def explain(i, call, args):
        return pair.XRAI().GetMask(x[i], call, args, batch_size=s["max_batch"], extra_parameters=extra)
    return to_channels(per_image(model, t, s, explain, s["max_batch"]), x.shape[-1])


@register("blur_ig", BLUR_IG)
def blur_ig(model, x, t, rng, s) -> np.ndarray:
    """Blur IG (Xu et al. 2020): IG along a path of increasingly blurred images."""
    # PAIR weighs a whole batch by its last step's sigma increment: right only for evenly spaced
    # sigmas, so the square-root spacing goes one step per call.
    batch_size = 1 if s["sqrt"] else s["max_batch"]

    def explain(i, call, args):
        return pair.BlurIG().GetMask(x[i], call, args, max_sigma=float(s["max_sigma"]), steps=int(s["steps"]),
                                     grad_step=float(s["grad_step"]), sqrt=bool(s["sqrt"]), batch_size=batch_size)
    return per_image(model, t, s, explain, s["max_batch"])


@register("guided_ig", GUIDED_IG)
def guided_ig(model, x, t, rng, s) -> np.ndarray:
    """Guided IG (Kapishnikov et al. 2021), from the same baselines as Integrated Gradients."""
    baselines = integrated.baseline(x, s, model.input_spec.value_range, "guided_ig")

    def explain(i, call, args):
        return pair.GuidedIG().GetMask(x[i], call, args, x_baseline=baselines[i], x_steps=int(s["steps"]),
                                       fraction=float(s["fraction"]), max_dist=float(s["max_dist"]))
    return per_image(model, t, s, explain, max_batch=1)
