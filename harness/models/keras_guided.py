"""Guided Backprop and named endpoints (Grad-CAM) for Keras 3 models.

Guided Backprop (Springenberg et al. 2015) changes only the backward pass of
every ReLU: the upstream gradient is kept where it is positive *and* the ReLU's
forward input is positive (and, for ReLU6, below 6); everywhere else it is 0.

Keras 3 has no gradient-override hook, so the ReLUs are swapped in place on the
model (docs/protocol.md §8.2) and restored afterwards. A ``tf.function``
traced while the swap is in place keeps the guided behaviour forever (the trace
captured the custom gradient), and one traced before keeps the plain one. The
safe pattern is therefore :func:`make_grad_fn`: a dedicated ``tf.function``
whose *body* enters :func:`guided_activations`; Python code in a tf.function
body runs only while tracing, so the model is swapped exactly for the duration
of each trace and is plain at every other moment.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Callable, Iterator

import keras
import tensorflow as tf

from harness.errors import HarnessError
from harness.models.gradients import target_gradient

__all__ = [
    "guided_relu",
    "guided_relu6",
    "guided_activations",
    "make_grad_fn",
    "make_guided_grad_fn",
    "keras_endpoint_model",
]


def _gate(dy: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    # tf.where rather than multiplying by 0/1 masks: inf * 0 would give NaN.
    return tf.where(keep & (dy > 0), dy, tf.zeros_like(dy))


@tf.custom_gradient
def guided_relu(x):
    """relu forward; backward = upstream * (upstream > 0) * (x > 0)."""

    def grad(dy):
        return _gate(dy, x > 0)

    return tf.nn.relu(x), grad


@tf.custom_gradient
def guided_relu6(x):
    """relu6 forward; backward = upstream * (upstream > 0) * (x > 0) * (x < 6)."""

    def grad(dy):
        return _gate(dy, (x > 0) & (x < 6))

    return tf.nn.relu6(x), grad


def _guided_relu_clipped(max_value: float) -> Callable:
    """min(relu(x), max_value) with the gate (0 < x < max_value)."""

    @tf.custom_gradient
    def fn(x):
        def grad(dy):
            return _gate(dy, (x > 0) & (x < max_value))

        return tf.minimum(tf.nn.relu(x), tf.cast(max_value, x.dtype)), grad

    return fn


# Activation functions that are a plain ReLU / ReLU6, mapped to their guided twin.
_ACTIVATION_SWAPS = (
    (keras.activations.relu, guided_relu),
    (keras.activations.relu6, guided_relu6),
    (tf.nn.relu, guided_relu),
    (tf.nn.relu6, guided_relu6),
)


def _all_layers(model: keras.Model) -> list:
    """Every layer, recursively through nested models and custom sub-layers."""
    # Private Keras API, but the only walk that also reaches sub-layers of custom
    # layers (`model.layers` stops at the top level).
    return model._flatten_layers(include_self=False, recursive=True)


SUPPORTED = "plain ReLU, ReLU6 or clipped ReLU (keras.layers.ReLU with negative_slope=0, threshold=0)"


def _relu_layer_call(layer: keras.layers.ReLU) -> Callable:
    """The guided replacement for a keras.layers.ReLU instance's `call`."""
    if layer.negative_slope != 0 or layer.threshold != 0:
        raise HarnessError(
            f"layer {layer.name!r} is a ReLU with negative_slope={float(layer.negative_slope):g}, "
            f"threshold={float(layer.threshold):g}, which Guided Backprop cannot gate; supported: {SUPPORTED}"
        )
    if layer.max_value is None:
        return guided_relu
    if float(layer.max_value) == 6.0:
        return guided_relu6
    return _guided_relu_clipped(float(layer.max_value))


def _reject_leaky(layer) -> None:
    """Leaky ReLUs pass negative inputs on, so gating only the plain ReLUs would be a silently partial
    Guided Backprop: refuse them by name."""
    if isinstance(layer, keras.layers.LeakyReLU):
        slope = getattr(layer, "negative_slope", getattr(layer, "alpha", None))
        raise HarnessError(f"layer {layer.name!r} is a LeakyReLU (negative_slope={float(slope):g}), which Guided "
                           f"Backprop cannot gate; supported: {SUPPORTED}")
    if getattr(layer, "activation", None) is keras.activations.leaky_relu:
        raise HarnessError(f"layer {layer.name!r} has activation leaky_relu, which Guided Backprop cannot gate; "
                           f"supported: {SUPPORTED}")


@contextmanager
def guided_activations(model: keras.Model) -> Iterator[int]:
    """Swap every ReLU of `model` for its guided twin, in place; restore on exit.

    Covers layers whose ``.activation`` is relu/relu6 (Conv/Dense with
    activation='relu', ``Activation('relu')``) and ``keras.layers.ReLU``
    instances (whose ``call`` is overridden on the instance; any ``max_value``,
    but negative_slope and threshold must be 0). Leaky ReLUs (such a ReLU, a
    ``LeakyReLU`` layer, activation ``leaky_relu``) are a HarnessError. Yields the
    number of ReLUs swapped; raises HarnessError if there are none.

    Not thread-safe: the model is shared, so nothing else may run it while the
    context is open. Do not trace a plain tf.function of the model inside it.
    """
    undo: list[Callable[[], None]] = []
    try:
        for layer in _all_layers(model):
            _reject_leaky(layer)
            if isinstance(layer, keras.layers.ReLU):
                undo.append(_override_call(layer, _relu_layer_call(layer)))
            elif _guided_twin(getattr(layer, "activation", None)) is not None:
                undo.append(_swap_activation(layer))
        if not undo:
            raise HarnessError(
                f"model {model.name} has no ReLU activations that Guided Backprop can gate "
                "(no layer with activation relu/relu6 and no keras.layers.ReLU)"
            )
        yield len(undo)
    finally:
        for restore in reversed(undo):
            restore()


def _guided_twin(activation) -> Callable | None:
    # Identity lookup: activations can be arbitrary (even unhashable) callables.
    for plain, guided in _ACTIVATION_SWAPS:
        if activation is plain:
            return guided
    return None


def _swap_activation(layer) -> Callable[[], None]:
    original = layer.activation
    layer.activation = _guided_twin(original)

    def restore():
        layer.activation = original

    return restore


def _override_call(layer, guided_fn: Callable) -> Callable[[], None]:
    # The override is an instance attribute shadowing the class's `call`;
    # restoring means removing it again (or putting back a previous one).
    had_own = "call" in layer.__dict__
    previous = layer.__dict__.get("call")
    layer.call = lambda inputs: guided_fn(inputs)

    def restore():
        if had_own:
            layer.call = previous
        else:
            del layer.call

    return restore


def _input_signature(model: keras.Model):
    if len(model.inputs) != 1:
        return None
    shape = [None, *model.inputs[0].shape[1:]]
    return [tf.TensorSpec(shape, model.inputs[0].dtype), tf.TensorSpec([None], tf.int32)]


def make_grad_fn(model: keras.Model, guided: bool = False) -> Callable:
    """A new tf.function ``(x, targets) -> d logits[i, targets[i]] / d x``.

    `targets` is an int32 vector, one class per image. With ``guided=True`` the
    model's ReLUs are swapped only while the function traces (see the module
    docstring), so the returned function is guided on every call, and the model
    and all other functions stay plain. Build a separate function for each
    mode; never reuse one traced function for both.
    """

    def body(x, targets):
        return target_gradient(lambda v: model(v, training=False), x, tf.cast(targets, tf.int32))

    def guided_body(x, targets):
        with guided_activations(model):  # runs at trace time only
            return body(x, targets)

    signature = _input_signature(model)
    fn = guided_body if guided else body
    if signature is None:
        return tf.function(fn, reduce_retracing=True)
    return tf.function(fn, input_signature=signature)


def make_guided_grad_fn(model: keras.Model) -> Callable:
    """Guided Backprop gradient function; see :func:`make_grad_fn`."""
    return make_grad_fn(model, guided=True)


def keras_endpoint_model(model: keras.Model, layer_name: str) -> keras.Model:
    """A two-output model ``x -> (output of layer_name, logits)`` for Grad-CAM.

    Only top-level layers of a functional model are addressable (a nested
    model's inner layers live in another graph).
    """
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise HarnessError(_unknown_name_message("layer", layer_name, model.name, names))
    layer = model.get_layer(layer_name)
    # A single input is passed unwrapped so that callers can pass one tensor.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [layer.output, model.outputs[0]], name=f"{model.name}_{layer_name}_endpoint")


def _unknown_name_message(kind: str, value: str, where: str, names: list[str]) -> str:
    close = difflib.get_close_matches(value, names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"valid names include: {', '.join(names[-8:])}"
    return f"unknown {kind} {value!r} in model {where}; {hint} ({len(names)} names in all)"
