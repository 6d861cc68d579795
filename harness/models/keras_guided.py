"""Guided Backprop and named endpoints (Grad-CAM) for Keras 3 models (docs/protocol.md §8.2).

Keras 3 has no gradient-override hook, so `guided_activations` swaps the ReLUs in place and puts them
back on exit. A tf.function traced while the swap is in place keeps it forever, so enter it only inside
the body of a dedicated tf.function: the model is then guided for exactly the duration of its trace.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Callable, Iterator

import keras
import tensorflow as tf

from harness.errors import HarnessError
from harness.models.graph_import import gate


def _guided(forward: Callable, keep: Callable) -> Callable:
    """`forward` with the guided backward pass: the upstream gradient where it and `keep(x)` hold."""
    @tf.custom_gradient
    def fn(x):
        return forward(x), lambda dy: gate(dy, keep(x))
    return fn


guided_relu = _guided(tf.nn.relu, lambda x: x > 0)
guided_relu6 = _guided(tf.nn.relu6, lambda x: (x > 0) & (x < 6))

# Activation functions that are a plain ReLU / ReLU6, mapped to their guided twin (by identity:
# activations can be arbitrary, even unhashable, callables).
_ACTIVATION_SWAPS = ((keras.activations.relu, guided_relu), (keras.activations.relu6, guided_relu6),
                     (tf.nn.relu, guided_relu), (tf.nn.relu6, guided_relu6))
SUPPORTED = "plain ReLU, ReLU6 or clipped ReLU (keras.layers.ReLU with negative_slope=0, threshold=0)"


def _relu_layer_call(layer: keras.layers.ReLU) -> Callable:
    """The guided replacement for a keras.layers.ReLU instance's `call`."""
    if layer.negative_slope != 0 or layer.threshold != 0:
        raise HarnessError(f"layer {layer.name!r} is a ReLU with negative_slope={float(layer.negative_slope):g}, "
                           f"threshold={float(layer.threshold):g}, which Guided Backprop cannot gate; "
                           f"supported: {SUPPORTED}")
    if layer.max_value is None:
        return guided_relu
    top = float(layer.max_value)
    if top == 6.0:
        return guided_relu6
    return _guided(lambda x: tf.minimum(tf.nn.relu(x), tf.cast(top, x.dtype)), lambda x: (x > 0) & (x < top))


def _reject_leaky(layer) -> None:
    """Refuse leaky ReLUs by name: gating only the plain ReLUs would be a silently partial Guided Backprop."""
    if isinstance(layer, keras.layers.LeakyReLU):
        slope = getattr(layer, "negative_slope", getattr(layer, "alpha", None))
        raise HarnessError(f"layer {layer.name!r} is a LeakyReLU (negative_slope={float(slope):g}), which Guided "
                           f"Backprop cannot gate; supported: {SUPPORTED}")
    if getattr(layer, "activation", None) is keras.activations.leaky_relu:
        raise HarnessError(f"layer {layer.name!r} has activation leaky_relu, which Guided Backprop cannot gate; "
                           f"supported: {SUPPORTED}")


@contextmanager
def guided_activations(model: keras.Model) -> Iterator[int]:
    """Swap every ReLU of `model` (a layer's relu/relu6 `.activation`, a `keras.layers.ReLU`'s `call`) for
    its guided twin, in place, restored on exit; yields how many. Leaky ReLUs are a HarnessError, and so
    is a model without a ReLU. Not thread-safe: nothing else may run the model meanwhile."""
    undo: list[Callable[[], None]] = []
    try:
        # Private Keras API, but the only walk that also reaches sub-layers of custom layers.
        for layer in model._flatten_layers(include_self=False, recursive=True):
            _reject_leaky(layer)
            if isinstance(layer, keras.layers.ReLU):
                undo.append(_set(layer, "call", lambda inputs, fn=_relu_layer_call(layer): fn(inputs)))
            else:
                activation = getattr(layer, "activation", None)
                twin = next((guided for plain, guided in _ACTIVATION_SWAPS if activation is plain), None)
                if twin is not None:
                    undo.append(_set(layer, "activation", twin))
        if not undo:
            raise HarnessError(f"model {model.name} has no ReLU activations that Guided Backprop can gate "
                               "(no layer with activation relu/relu6 and no keras.layers.ReLU)")
        yield len(undo)
    finally:
        for restore in reversed(undo):
            restore()


def _set(layer, attribute: str, value) -> Callable[[], None]:
    """Set an instance attribute; the returned function puts back the previous one (or removes it, so
    that the class's shows again)."""
    if attribute not in layer.__dict__:
        setattr(layer, attribute, value)
        return lambda: delattr(layer, attribute)
    previous = layer.__dict__[attribute]
    setattr(layer, attribute, value)
    return lambda: setattr(layer, attribute, previous)


def keras_endpoint_model(model: keras.Model, layer_name: str) -> keras.Model:
    """A two-output model `x -> (output of layer_name, logits)` sharing `model`'s variables, for Grad-CAM.
    Only top-level layers of a functional model are addressable."""
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        close = difflib.get_close_matches(layer_name, names, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"valid names include: {', '.join(names[-8:])}"
        raise HarnessError(f"unknown layer {layer_name!r} in model {model.name}; {hint} ({len(names)} names in all)")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # one input passed unwrapped
    return keras.Model(inputs, [model.get_layer(layer_name).output, model.outputs[0]],
                       name=f"{model.name}_{layer_name}_endpoint")
