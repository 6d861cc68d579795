"""Compiled batched kernels every method family shares.

Why hand-batched kernels instead of calling PAIR `saliency.core` for everything: PAIR calls the model
once per noise sample (SmoothGrad) and, by default, once per path step (IG) or window position
(occlusion), each call a Python round trip of batch 1. The kernels here fold images x noise samples x
path steps x window positions into the batch dimension and run one compiled call per chunk of at most
`max_batch` rows (stack notes 6: ~10x on the MNIST CNN, ~1.2x at Inception scale). The maths is kept
identical to PAIR's, which the tests check against PAIR itself.

Every kernel is a `tf.function` with a fixed input signature, built once per model and key through
`ModelUnderTest.compiled`. It reads the model's variables, never copies them, so randomizing a block
in place is seen by the next call without a retrace; each kernel counts its traces in
`model.trace_counts[key]` so tests can prove that.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from harness.errors import HarnessError
from harness.methods import COMMON, choose, rows_per_call
from harness.models.wrapper import ModelUnderTest

GRAPH_MODES = ("live", "frozen")


def to_channels(maps2d: np.ndarray, channels: int) -> np.ndarray:
    """[b, H, W] -> [b, H, W, C] by repeating the map in every channel (PAIR's `three_dims`).

    Grad-CAM, CAM and XRAI explain locations, not channels; repeating keeps the one map contract
    ([b, H, W, C] like the input) and lets Guided Grad-CAM multiply elementwise.
    """
    return np.repeat(np.asarray(maps2d, np.float32)[..., None], channels, axis=-1)


# -- compiled functions ------------------------------------------------------------------------------
def selected_output(logits: tf.Tensor, targets: tf.Tensor, output: str) -> tf.Tensor:
    """The explained scalar of each row: the target's logit or its softmax probability."""
    values = tf.nn.softmax(logits) if output == "probability" else logits
    return tf.gather(values, targets, batch_dims=1)


def signature(model: ModelUnderTest) -> list[tf.TensorSpec]:
    return [model.tensor_spec(), tf.TensorSpec([None], tf.int32)]


def compile_counted(model: ModelUnderTest, key: str, body: Callable) -> Callable:
    """tf.function(body) over (images, targets) that counts its traces in `model.trace_counts[key]`."""
    def traced(x, targets):
        model.trace_counts[key] += 1  # Python side effect: runs at trace time only
        return body(x, targets)
    return tf.function(traced, input_signature=signature(model))


def run_kernel(fn: Callable, x: np.ndarray, targets: np.ndarray, max_batch: int | str) -> np.ndarray:
    """Call a compiled (images, targets) kernel on numpy rows, at most `max_batch` rows per call."""
    x, targets = np.asarray(x, np.float32), np.asarray(targets, np.int32)
    max_batch = rows_per_call(max_batch, x.shape[1:])
    chunks = [fn(tf.constant(x[i:i + max_batch]), tf.constant(targets[i:i + max_batch])).numpy()
              for i in range(0, len(x) or 1, max_batch)]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def gradient_body(model: ModelUnderTest, output: str) -> Callable:
    def body(x, targets):
        with tf.GradientTape() as tape:
            tape.watch(x)
            selected = selected_output(model.logits(x), targets, output)
        return tape.gradient(selected, x)
    return body


def input_gradients(model: ModelUnderTest, x: np.ndarray, targets: np.ndarray, output: str = "logit",
                    max_batch: int | str = COMMON["max_batch"]) -> np.ndarray:
    """d output[target] / d input for every row of x."""
    key = f"gradient/{output}"
    fn = model.compiled(key, lambda: compile_counted(model, key, gradient_body(model, output)))
    return run_kernel(fn, x, targets, max_batch)


def output_values(model: ModelUnderTest, x: np.ndarray, targets: np.ndarray, output: str = "logit",
                  max_batch: int | str = COMMON["max_batch"]) -> np.ndarray:
    """output[target] for every row of x (forward passes only)."""
    key = f"forward/{output}"
    fn = model.compiled(key, lambda: compile_counted(
        model, key, lambda xs, ts: selected_output(model.logits(xs), ts, output)))
    return run_kernel(fn, x, targets, max_batch)


# -- SavedModel graphs (Guided Backprop, Grad-CAM endpoints on hub models) ---------------------------
class SyncedGraph:
    """The model's `ImportedGraph`, one per model and mode, shared by the guided and Grad-CAM kernels.

    Live mode reads the variables themselves, so it never goes stale. Frozen mode (the fallback if
    TF's private inlining helper goes away) bakes the weights in: `sync()` re-freezes when a
    fingerprint of the variable values has changed since the last freeze, and returns the graph's
    generation so kernels know when to rebuild their tf.function.
    """

    def __init__(self, model: ModelUnderTest, mode: str):
        from harness.models.graph_import import ImportedGraph

        # A trace of the wrapper's forward pass (the SavedModel's `__call__` or its serving
        # signature's logits, at the harness's input spec): the function every other kernel
        # differentiates, whichever way the SavedModel exposes it.
        forward = tf.function(model.logits).get_concrete_function(model.tensor_spec())
        self.model, self.mode = model, mode
        self.graph = ImportedGraph(forward, [v.variable for v in model.variables], mode=mode, name=model.name)
        self._fingerprint = fingerprint(model) if mode == "frozen" else None

    def sync(self) -> int:
        if self.mode == "frozen":
            current = fingerprint(self.model)
            if current != self._fingerprint:
                self.graph.refresh()
                self._fingerprint = current
        return self.graph.generation


def fingerprint(model: ModelUnderTest) -> str:
    """A digest of every variable's current value (~0.1 s for InceptionV3's 24 M parameters)."""
    digest = hashlib.blake2b(digest_size=16)
    for v in model.variables:
        digest.update(v.variable.numpy().tobytes())
    return digest.hexdigest()


class GraphKernel:
    """A compiled kernel over the model's imported SavedModel graph (live or frozen)."""

    def __init__(self, model: ModelUnderTest, key: str, mode: str, body: Callable):
        self.model, self.key, self.body = model, key, body
        self.synced = model.compiled(f"graph/{mode}", lambda: SyncedGraph(model, mode))
        self.generation, self.fn = None, None

    def __call__(self, x, targets):
        generation = self.synced.sync()
        if generation != self.generation:  # first call, or frozen weights re-frozen: trace anew
            graph = self.synced.graph
            self.fn = compile_counted(self.model, self.key, lambda xs, ts: self.body(graph, xs, ts))
            self.generation = generation
        return self.fn(x, targets)


def layer_kernel(model: ModelUnderTest, method: str, key: str, keras_body: Callable[[], Callable],
                 graph_body: Callable[[], Callable], mode: str) -> Callable:
    """Kernel `key` for methods that reach inside the model (Guided Backprop, Grad-CAM): built from
    `keras_body()` for Keras models, else from `graph_body()` over the imported SavedModel graph in
    `mode` (live | frozen; the trace key gets the mode appended)."""
    if model_kind(model, method) == "keras":
        return model.compiled(key, lambda: compile_counted(model, key, keras_body()))
    mode = choose(method, "graph_mode", mode, GRAPH_MODES)
    graph_key = f"{key}/{mode}"
    return model.compiled(graph_key, lambda: GraphKernel(model, graph_key, mode, graph_body()))


def model_kind(model: ModelUnderTest, method: str) -> str:
    """'keras' or 'saved_model': which machinery can reach the model's layers."""
    if model.keras_model is not None:
        return "keras"
    if model.saved_model is not None:
        return "saved_model"
    raise HarnessError(f"method {method} needs a Keras model or a SavedModel; model {model.name} "
                       f"({model.source_kind}) is neither")
