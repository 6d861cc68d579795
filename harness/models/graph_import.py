"""Guided Backprop and named endpoints on SavedModels (docs/protocol.md §8.3): `ImportedGraph` inlines
the function into one GraphDef and imports it into the caller's tf.function (under a gradient override
for Guided Backprop; gradients by `tf.gradients`: a GradientTape does not see imported ops).
Mode "live" (a *private* TF inlining helper) feeds the variable placeholders the live variables; mode
"frozen", the fallback, bakes the weights in and `refresh()` re-freezes them. Neither private helper is
trusted blindly: a live graph is checked once against the SavedModel's own function, and a missing
helper or other logits fall back to frozen with one warning (tests/test_guided_machinery.py).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import re
import warnings
from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from harness.errors import HarnessError

try:  # private on purpose (see the module docstring); checked at run time, never trusted blindly
    from tensorflow.python.framework import convert_to_constants as _convert
except ImportError:  # pragma: no cover - a TensorFlow without the module
    _convert = None

# Registry names of the gradient overrides, versioned so that a changed rule never reuses an older
# registration in the same process.
_OVERRIDES = {"Relu": "HarnessGuidedRelu_v1", "Relu6": "HarnessGuidedRelu6_v1"}
_KEEP = {"Relu": lambda x: x > 0, "Relu6": lambda x: (x > 0) & (x < 6)}
_PREFERRED_TYPES = ("Relu", "Relu6", "ConcatV2", "Concat")
_PASS_THROUGH_TYPES = ("Identity", "IdentityN", "Snapshot", "StopGradient")
_NOT_ENDPOINTS = ("Const", "Placeholder", "ReadVariableOp", "VarHandleOp")
# Ops whose bodies live in a function library: a gradient override cannot reach the ReLUs inside.
_CALL_TYPES = ("PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf",
               "While", "StatelessWhile", "Case", "StatelessCase")
# Keras 3 opens a layer's name scope twice per call (around build and around call), so TF
# uniquifies the scope holding the ops to "<layer>_<k>".
_UNIQUIFIED = re.compile(r"^(.+)_(\d+)$")


def gate(grad: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Guided Backprop's backward pass of a ReLU, on both paths (keras_guided too): `grad` where it is
    positive and `keep` holds, else 0 (tf.where rather than a 0/1 mask: inf * 0 would give NaN)."""
    return tf.where(keep & (grad > 0), grad, tf.zeros_like(grad))


@functools.cache
def _register_guided_gradients() -> None:
    for op_type, name in _OVERRIDES.items():
        try:
            tf.RegisterGradient(name)(lambda op, grad, keep=_KEEP[op_type]: gate(grad, keep(op.inputs[0])))
        except KeyError:
            pass  # registered by an earlier import of this module (importlib.reload)


class ImportedGraph:
    """A SavedModel concrete function (one image input, one logits output), inlined, importable into
    any tf.function. `variables` are the model's own (`loaded.variables`): the function's captured
    handles are matched to them by `id(v.handle)`; `name` is for messages."""

    def __init__(self, concrete_fn, variables: Sequence[tf.Variable], mode: str = "live", name: str | None = None):
        _register_guided_gradients()
        self.name = name or tf.compat.as_str(concrete_fn.name)
        if mode == "live" and _helper("_run_inline_graph_optimization") is None:
            mode = _fall_back(self.name, "TensorFlow's graph-inlining helper is missing")
        self.mode = mode
        self.generation = 0  # bumped by refresh(); frozen-mode traces must be rebuilt
        self._cf = concrete_fn
        by_handle = {id(v.handle): v for v in variables}
        self._variables, self._constants, unmatched = {}, {}, []  # by placeholder name; unmatched resources
        for external, internal in concrete_fn.graph.captures:
            if id(external) in by_handle:
                self._variables[internal.name] = by_handle[id(external)]
            elif external.dtype == tf.resource:
                unmatched.append(internal.name)
            else:
                self._constants[internal.name] = external
        if unmatched and mode == "live":
            raise HarnessError(f"{len(unmatched)} captured resource(s) of the SavedModel function of {self.name} "
                               f"match none of the {len(variables)} given variables (first: {unmatched[0]}); "
                               "pass the loaded object's own `.variables`")
        self._build()
        if self.mode == "live" and not self._computes_the_function():
            self.mode = _fall_back(self.name, "its inlined graph computes other logits than the SavedModel")
            self._build()
        self._frozen_values = self._values_digest() if self.mode == "frozen" else None

    @classmethod
    def from_saved_model(cls, obj: Any, mode: str = "live", name: str | None = None) -> ImportedGraph:
        """From a loaded hub-style SavedModel (callable `__call__`), or a `hub.KerasLayer` of one."""
        obj = getattr(obj, "resolved_object", obj)
        return cls(obj.__call__.get_concrete_function(), list(obj.variables), mode=mode, name=name)

    def _computes_the_function(self) -> bool:
        """The imported graph's logits equal the concrete function's on a seeded probe batch."""
        shape = [1 if d is None else d for d in self._input.shape.as_list()]
        probe = tf.constant(np.random.default_rng(0).uniform(0, 1, shape), self._input.dtype)
        imported = tf.function(lambda x: self(x)[0])(probe)
        own = tf.nest.flatten(self._cf(probe), expand_composites=True)[0]
        return bool(np.allclose(imported.numpy(), own.numpy(), rtol=1e-4, atol=1e-5 * (1 + np.abs(own.numpy()).max())))

    def _build(self) -> None:
        if self.mode == "live":
            inline = _helper("_run_inline_graph_optimization")
            graph_def = inline(self._cf, lower_control_flow=False, aggressive_inlining=True)
            fn = self._cf
        else:
            freeze = _helper("convert_variables_to_constants_v2")
            if freeze is None:
                raise HarnessError(
                    f"this TensorFlow ({tf.__version__}) has neither of the graph helpers that Guided Backprop and "
                    f"named endpoints on SavedModels need ({self.name}); the gradient methods still work")
            fn = freeze(self._cf, lower_control_flow=False, aggressive_inlining=True)
            graph_def = fn.graph.as_graph_def()
        data_inputs = fn.inputs[: len(fn.inputs) - len(fn.captured_inputs)]
        # The function's own outputs, not all of `outputs`: once a gradient has been taken through a
        # restored function, TF appends its forward intermediates to `outputs`. The frozen copy keeps
        # the order of `outputs` (not the structure), so the logits are found by position.
        returned, = tf.nest.flatten(self._cf.structured_outputs, expand_composites=True)
        position = [t.name for t in self._cf.outputs].index(returned.name)
        self._input = data_inputs[0]
        self._output_name = fn.outputs[position].name
        self._graph_def = graph_def
        # A scratch import gives op types, dtypes and a topological op order.
        scratch = tf.Graph()
        with scratch.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        self._ops = scratch.get_operations()
        self._op_by_name = {op.name: op for op in self._ops}
        reachable = _ancestors(scratch.get_tensor_by_name(self._output_name).op)
        self.relu_count = sum(op.type in _OVERRIDES for op in reachable)  # 0: guided is impossible
        # Leaky ReLUs pass negative inputs on: gating only the plain ReLUs beside them would be a silently
        # partial Guided Backprop (the Keras path refuses them the same way).
        self._leaky = sorted(op.name for op in reachable if op.type == "LeakyRelu")
        library = {f.signature.name for f in graph_def.library.function}
        self._opaque_calls = sorted(op.name for op in reachable if op.type in _CALL_TYPES or op.type in library)
        self._components = {c for op in self._ops for c in op.name.split("/")[:-1]}  # every scope component
        self._keras_scopes = self._detect_keras_scopes()

    def _detect_keras_scopes(self) -> bool:
        """True if layer scopes carry Keras 3's "_<k>" suffix (voted by the variables' layer names)."""
        components = self._components
        scopes = [v.name.split(":")[0].split("/") for v in self._variables.values()]
        votes = 0
        for layer in [parts[-2] for parts in scopes if len(parts) > 1]:
            suffixed = any(_strip_suffix(c) == layer for c in components)
            votes += int(suffixed and layer not in components) - int(layer in components and not suffixed)
        return votes > 0

    def op_names(self) -> list[str]:
        """All op names of the inlined graph, in topological order."""
        return [op.name for op in self._ops]

    def resolve_endpoint(self, name: str) -> str:
        """The tensor name of the inlined graph an endpoint name maps to: 1. an exact tensor name ("op:0")
        or op name (-> its output 0) as is; 2. else the value ops with `name` as a whole scope component
        ("Logits" never matches "AuxLogits") or as Keras 3 writes it, plus one "_<k>" suffix (layer "conv2"
        -> scope "conv2_1"; tried first where the variables show that pattern); 3. of those, the last in
        topological order, or where it is Identity-like, the scope's last Relu/Relu6/ConcatV2, else the
        op the Identity chain forwards. No match: a HarnessError naming the closest scope names."""
        op_name, _, index = name.partition(":")
        op = self._op_by_name.get(op_name)
        if op is not None and op.outputs and (not index or (index.isdigit() and int(index) < len(op.outputs))):
            return name if index else op.outputs[0].name
        exact, suffixed = [], []
        for op in self._ops:
            if op.type in _NOT_ENDPOINTS or not op.outputs or not op.outputs[0].dtype.is_floating:
                continue
            scopes = op.name.split("/")[:-1]
            if name in scopes:
                exact.append(op)
            if any(_strip_suffix(c) == name for c in scopes):
                suffixed.append(op)
        ops = (suffixed or exact) if self._keras_scopes else (exact or suffixed)
        if not ops:
            # Keras 3 graphs show layer names ("conv2"), not their uniquified scopes ("conv2_1").
            names = {_strip_suffix(c) or c for c in self._components} if self._keras_scopes else self._components
            close = difflib.get_close_matches(name, sorted(names), n=6, cutoff=0.5)
            hint = ", ".join(close) if close else "(none close; see ImportedGraph.op_names())"
            raise HarnessError(f"unknown endpoint {name!r} in the SavedModel graph of {self.name}; "
                               f"closest scope names: {hint}")
        return _pick(ops).outputs[0].name

    def __call__(self, x, endpoints: Sequence[str] = (), guided: bool = False) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Import the graph on `x` into the tf.function being traced; (logits, endpoint tensors)."""
        graph = tf.compat.v1.get_default_graph()
        if tf.executing_eagerly() or not getattr(graph, "building_function", False):
            raise RuntimeError("ImportedGraph must be called inside a tf.function (it imports ops into the graph "
                               "being traced); it was called eagerly")
        if guided:
            self._check_guided()
        targets = [self.resolve_endpoint(e) for e in endpoints]
        input_map = {self._input.name: x}
        if self.mode == "live":
            # capture() turns the eager handle into a placeholder of this FuncGraph (feeding v.handle
            # directly fails: "_as_tf_output not supported when eager").
            input_map.update({ph: graph.capture(v.handle) for ph, v in self._variables.items()})
            input_map.update({ph: graph.capture(t) for ph, t in self._constants.items()})
        with graph.gradient_override_map(_OVERRIDES) if guided else nullcontext():
            out = tf.graph_util.import_graph_def(self._graph_def, input_map=input_map,
                                                 return_elements=[self._output_name, *targets], name="imported")
        return out[0], list(out[1:])

    def _check_guided(self) -> None:
        if self.relu_count == 0:
            raise HarnessError(f"no Relu/Relu6 ops reachable in the SavedModel graph of {self.name}; "
                               "Guided Backprop cannot be applied")
        if self._leaky:
            raise HarnessError(f"the SavedModel graph of {self.name} has LeakyRelu ops ({', '.join(self._leaky[:3])}), "
                               "which Guided Backprop cannot gate; supported: Relu, Relu6")
        if self._opaque_calls:
            raise HarnessError(f"the SavedModel graph of {self.name} still calls functions after inlining "
                               f"({', '.join(self._opaque_calls[:3])}); Guided Backprop cannot reach ReLUs inside them")

    def refresh(self) -> int:
        """Frozen mode: re-freeze where the variables' values changed since the last freeze, bumping the
        returned `generation` (retrace every tf.function that imported this graph: its trace holds the
        old constants). Live mode: nothing to do."""
        values = self._values_digest() if self.mode == "frozen" else None
        if values != self._frozen_values:
            self._frozen_values = values
            self._build()
            self.generation += 1
        return self.generation

    def _values_digest(self) -> str:
        """A digest of the variables' current values (~0.1 s for InceptionV3's 24 M parameters)."""
        digest = hashlib.blake2b(digest_size=16)
        for v in self._variables.values():
            digest.update(np.asarray(v.read_value()))  # the buffer TF read (C-contiguous): no copy
        return digest.hexdigest()


def _helper(name: str):
    """One of TensorFlow's private graph helpers, or None where this TensorFlow lacks it."""
    return getattr(_convert, name, None)


def _fall_back(name: str, why: str) -> str:
    warnings.warn(f"{name}: graph_mode live is not available ({why}); using graph_mode frozen "
                  "(the same maps, re-frozen after each randomization)", RuntimeWarning, stacklevel=3)
    return "frozen"


def _pick(ops: list):
    """The endpoint op of a scope's ops (rule 3 of `ImportedGraph.resolve_endpoint`)."""
    last = ops[-1]
    if last.type not in _PASS_THROUGH_TYPES:
        return last
    preferred = [op for op in ops if op.type in _PREFERRED_TYPES]
    if preferred:
        return preferred[-1]
    in_scope = {op.name for op in ops}
    while last.type in _PASS_THROUGH_TYPES and last.inputs and last.inputs[0].op.name in in_scope:
        last = last.inputs[0].op
    return last


def _strip_suffix(component: str) -> str | None:
    match = _UNIQUIFIED.match(component)
    return match.group(1) if match else None


def _ancestors(op) -> list:
    """`op` and every op it depends on (data or control)."""
    seen, stack = {op.name: op}, [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent.name not in seen:
                seen[parent.name] = parent
                stack.append(parent)
    return list(seen.values())
