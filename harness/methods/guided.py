"""Guided Backprop (Springenberg et al. 2015): the input gradient with every ReLU / ReLU6 backward
pass gated by (forward input > 0) and (incoming gradient > 0) (and input < 6 for ReLU6).

PAIR `saliency.core` has no Guided Backprop (only the TF1 Session one), so the harness reaches the
ReLUs itself (stack notes 5):
- Keras models: `keras_guided.guided_activations` swaps the ReLUs while a *separate* tf.function
  traces; that function stays guided, the model and every other function stay plain.
- SavedModels (TF-Hub): `graph_import.ImportedGraph` re-imports the inlined graph under a gradient
  override map. `graph_mode: live` (default) feeds it the live variables, so randomization needs no
  retrace; `frozen` bakes the weights in and is re-frozen whenever the weights change (slow at
  Inception scale; the fallback if TF's private inlining helper disappears).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from harness.methods import COMMON, register
from harness.methods.kernels import gradient_body, layer_kernel, run_kernel, selected_output

DEFAULTS = {"graph_mode": "live", **COMMON}


def guided_gradients(model, x: np.ndarray, targets: np.ndarray, s: dict, method: str) -> np.ndarray:
    """Guided Backprop maps of rows x (settings `s`: output, max_batch, graph_mode)."""
    output = s["output"]
    fn = layer_kernel(model, method, f"guided/{output}", lambda: _keras_body(model, output),
                      lambda: _graph_body(output), s["graph_mode"])
    return run_kernel(fn, x, targets, s["max_batch"])


def _keras_body(model, output: str):
    from harness.models.keras_guided import guided_activations

    plain = gradient_body(model, output)

    def body(x, targets):
        # Runs only while tracing: the ReLUs are guided for exactly this trace (see keras_guided).
        with guided_activations(model.keras_model):
            return plain(x, targets)
    return body


def _graph_body(output: str):
    def body(graph, x, targets):
        logits, _ = graph(x, guided=True)
        # Imported ops are invisible to GradientTape: tf.gradients sees them.
        return tf.gradients(selected_output(logits, targets, output), x)[0]
    return body


@register("guided_backprop", DEFAULTS)
def guided_backprop(model, x, targets, rng, s) -> np.ndarray:
    return guided_gradients(model, x, targets, s, "guided_backprop")
