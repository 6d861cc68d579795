"""The PAIR reference: a testing oracle for the harness's batched methods (tests and `make bench`).

PAIR `saliency.core` run as a PAIR user runs it: its classes, one image at a time, over a plain
`call_model_function` (`Reference`); which PAIR call stands for a method is part of the method's
registration (`MethodSpec.reference`), made by `pair_map`. Also the NumPy 2 shim PAIR 0.2.1's Guided
IG needs, and the MNIST CNN's Keras twin (PAIR's Grad-CAM needs a layer's values).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

TARGET = "target"


class _NumpyForGuidedIG:
    """numpy with `np.quantile(..., interpolation=...)`, which PAIR 0.2.1's Guided IG calls and NumPy 2
    removed (now `method`). Installed into that one PAIR module only."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)


def pair_core():
    """`saliency.core`, with the NumPy 2 shim installed into its Guided IG."""
    import saliency.core as pair
    from saliency.core import guided_ig as pair_guided_ig

    if "interpolation" not in inspect.signature(np.quantile).parameters:
        pair_guided_ig.np = _NumpyForGuidedIG()
    return pair


class Reference:
    """A PAIR user's `call_model_function` over `forward(x) -> logits` (and `endpoint_model(x) ->
    (feature map, logits)` for Grad-CAM); `call_model_args = {"target": class}` only."""

    def __init__(self, forward: Callable, spec, endpoint_model: Callable | None = None):
        import tensorflow as tf

        from harness.models.backends import endpoint_gradients, selected_output, target_gradient

        signature = [spec, tf.TensorSpec([None], tf.int32)]
        self.gradient = tf.function(lambda x, targets: target_gradient(forward, x, targets),
                                    input_signature=signature)
        self.values = tf.function(lambda x, targets: selected_output(forward(x), targets),
                                  input_signature=signature)
        self.layer = tf.function(lambda x, targets: endpoint_gradients(endpoint_model, x, targets),
                                 input_signature=signature)
        self.has_layer = endpoint_model is not None

    def call_model_function(self, x_batch, call_model_args=None, expected_keys=None):
        import tensorflow as tf

        pair = pair_core()
        x = tf.constant(np.asarray(x_batch, np.float32))
        targets = tf.fill([len(x_batch)], tf.constant(int(call_model_args[TARGET]), tf.int32))
        out = {}
        if pair.INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[pair.INPUT_OUTPUT_GRADIENTS] = self.gradient(x, targets).numpy()
        if pair.OUTPUT_LAYER_VALUES in expected_keys:
            out[pair.OUTPUT_LAYER_VALUES] = self.values(x, targets).numpy()
        if pair.CONVOLUTION_LAYER_VALUES in expected_keys:
            features, grads = self.layer(x, targets)
            out[pair.CONVOLUTION_LAYER_VALUES] = features.numpy()
            out[pair.CONVOLUTION_OUTPUT_GRADIENTS] = grads.numpy()
        return out

    def warm_up(self, x: np.ndarray) -> None:
        pair = pair_core()
        keys = [pair.INPUT_OUTPUT_GRADIENTS, pair.OUTPUT_LAYER_VALUES]
        if self.has_layer:
            keys.append(pair.CONVOLUTION_LAYER_VALUES)
        self.call_model_function(x[:1], {TARGET: 0}, keys)


def pair_map(method: str, s: dict, cmf: Callable, x: np.ndarray, target: int) -> np.ndarray | None:
    """PAIR's map of one image as a user calls it (library defaults except the method's settings `s`),
    [H, W, C]; None where PAIR has no such method."""
    from harness import methods

    reference = methods.spec(method).reference
    return None if reference is None else reference(pair_core(), x, cmf, {TARGET: int(target)}, s)


def mnist_keras_twin(model):
    """The built-in CNN rebuilt in Keras with the SavedModel's weights (for layer access)."""
    from harness.zoo.mnist import build_cnn

    twin, _ = build_cnn()
    values = {v.name: v.variable.numpy() for v in model.variables}
    for weight in twin.weights:
        weight.assign(values[weight.path])
    return twin
