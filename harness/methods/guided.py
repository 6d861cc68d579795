"""Guided Backprop (Springenberg et al. 2015): the input gradient with every ReLU / ReLU6 backward
pass gated by (forward input > 0) and (incoming gradient > 0) (and input < 6 for ReLU6).

PAIR `saliency.core` has no Guided Backprop (only the TF1 Session one), so the harness reaches the
ReLUs itself, through the model's backend (`harness.models.backends`, `guided_kernel`):
- Keras models: `keras_guided.guided_activations` swaps the ReLUs while a *separate* tf.function
  traces; that function stays guided, the model and every other function stay plain.
- SavedModels (TF-Hub): `graph_import.ImportedGraph` re-imports the inlined graph under a gradient
  override map. `graph_mode: live` (default) feeds it the live variables, so randomization needs no
  retrace; `frozen` bakes the weights in and is re-frozen whenever the weights change (slow at
  Inception scale; the fallback if TF's private inlining helper disappears).
"""
from __future__ import annotations

import numpy as np

from harness.methods import register
from harness.methods.kernels import run_kernel


def guided_gradients(model, x: np.ndarray, targets: np.ndarray, s: dict, method: str) -> np.ndarray:
    """Guided Backprop maps of rows x (settings `s`: output, max_batch, graph_mode)."""
    fn = model.backend.guided_kernel(model, s["output"], s["graph_mode"], method)
    return run_kernel(fn, x, targets, s["max_batch"])


@register("guided_backprop")
def guided_backprop(model, x, targets, rng, s) -> np.ndarray:
    return guided_gradients(model, x, targets, s, "guided_backprop")
