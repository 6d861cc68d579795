"""Guided Backprop and named endpoints on SavedModels (tf.saved_model / tensorflow_hub).

A loaded SavedModel is opaque to Keras: its concrete function's graph holds a
single ``StatefulPartitionedCall``, so neither an activation swap nor a
gradient-override map can reach its ``Relu`` ops. :class:`ImportedGraph`
therefore flattens the function into one GraphDef and re-imports that GraphDef
into the caller's ``tf.function`` (docs/protocol.md §8.3):

* ``mode="live"`` (variant B, the default): Grappler's function inlining
  (``_run_inline_graph_optimization``, a *private* TF helper: the only public
  route to an inlined graph is freezing, which bakes the weights in). The
  resource-variable placeholders survive inlining and are fed the *live*
  variable handles on import, so in-place randomization of the variables is
  seen by the next call with no retrace.
* ``mode="frozen"`` (variant A, the fallback): ``convert_variables_to_constants_v2``,
  which inlines as a side effect. The weights become constants: call
  :meth:`ImportedGraph.refresh` after any variable change and rebuild the
  tf.functions (see ``generation``).

Both helpers live in TensorFlow's private ``tensorflow.python`` tree, so nothing
here trusts them blindly: a live graph is checked once, when it is built,
against the SavedModel's own function on a probe batch, and when the inlining
helper is missing or its graph computes other logits the graph falls back to
frozen mode with one warning (tests/test_guided_machinery.py breaks both ways).

Guided Backprop is a ``gradient_override_map({'Relu': ..., 'Relu6': ...})``
around the import. Gradients must be taken with ``tf.gradients``: ops created by
``import_graph_def`` are not recorded on a ``GradientTape`` (it returns None).
"""

from __future__ import annotations

import difflib
import re
from contextlib import nullcontext
from typing import Any, Sequence

import warnings

import numpy as np
import tensorflow as tf

from harness.errors import HarnessError

try:  # private on purpose (see the module docstring); checked at run time, never trusted blindly
    from tensorflow.python.framework import convert_to_constants as _convert
except ImportError:  # pragma: no cover - a TensorFlow without the module
    _convert = None

__all__ = ["ImportedGraph", "register_guided_gradients", "GUIDED_RELU", "GUIDED_RELU6"]

# Registry names for the gradient overrides; versioned so that a future change
# of the rule cannot silently reuse an older registration in the same process.
GUIDED_RELU = "HarnessGuidedRelu_v1"
GUIDED_RELU6 = "HarnessGuidedRelu6_v1"
_OVERRIDES = {"Relu": GUIDED_RELU, "Relu6": GUIDED_RELU6}
_registered = False

_RELU_TYPES = ("Relu", "Relu6")
# Pass negative inputs on: gating only the plain ReLUs beside them would be a silently partial
# Guided Backprop (the Keras path refuses them the same way).
_LEAKY_TYPES = ("LeakyRelu",)
_PREFERRED_TYPES = ("Relu", "Relu6", "ConcatV2", "Concat")
_PASS_THROUGH_TYPES = ("Identity", "IdentityN", "Snapshot", "StopGradient")
_NOT_ENDPOINTS = ("Const", "Placeholder", "ReadVariableOp", "VarHandleOp")
# Ops whose bodies live in a function library: a gradient override cannot reach
# the ReLUs inside them, so a guided map through them would be silently wrong.
_CALL_TYPES = (
    "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf",
    "While", "StatelessWhile", "Case", "StatelessCase",
)
# Keras 3 opens a layer's name scope twice per call (once around build, once
# around call), so TF uniquifies the scope holding the ops to "<layer>_<k>".
_UNIQUIFIED = re.compile(r"^(.+)_(\d+)$")


def _gate(grad: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    # Same expression as harness.models.keras_guided, so both paths agree bit for bit.
    return tf.where(keep & (grad > 0), grad, tf.zeros_like(grad))


def _guided_relu_grad(op, grad):
    x = op.inputs[0]
    return _gate(grad, x > 0)


def _guided_relu6_grad(op, grad):
    x = op.inputs[0]
    return _gate(grad, (x > 0) & (x < 6))


def register_guided_gradients() -> None:
    """Register the guided gradients once per process (idempotent)."""
    global _registered
    if _registered:
        return
    for name, fn in ((GUIDED_RELU, _guided_relu_grad), (GUIDED_RELU6, _guided_relu6_grad)):
        try:
            tf.RegisterGradient(name)(fn)
        except KeyError:
            pass  # registered by an earlier import of this module (importlib.reload)
    _registered = True


class ImportedGraph:
    """A SavedModel concrete function, inlined, importable into any tf.function.

    Args:
        concrete_fn: the model's concrete function with one image input and one
            logits output (e.g. ``loaded.__call__.get_concrete_function()``).
        variables: the model's variables (``loaded.variables``); the function's
            captured handles are matched to them by ``id(v.handle)``.
        mode: "live" or "frozen" (see the module docstring).
        name: used in messages; defaults to the concrete function's name.
    """

    def __init__(self, concrete_fn, variables: Sequence[tf.Variable], mode: str = "live", name: str | None = None):
        if mode not in ("live", "frozen"):
            raise ValueError(f"mode must be 'live' or 'frozen', got {mode!r}")
        register_guided_gradients()
        self.name = name or _default_name(concrete_fn)
        if mode == "live" and _helper("_run_inline_graph_optimization") is None:
            mode = _fall_back(self.name, "TensorFlow's graph-inlining helper is missing")
        self.mode = mode
        self.generation = 0  # bumped by refresh(); frozen-mode traces must be rebuilt
        self._cf = concrete_fn
        self._variables, self._constants, unmatched = _match_captures(concrete_fn, variables)
        if unmatched and mode == "live":
            raise HarnessError(
                f"{len(unmatched)} captured resource(s) of the SavedModel function of {self.name} "
                f"match none of the {len(variables)} given variables (first: {unmatched[0]}); "
                "pass the loaded object's own `.variables`"
            )
        self._build()
        if self.mode == "live" and not self._computes_the_function():
            self.mode = _fall_back(self.name, "its inlined graph computes other logits than the SavedModel")
            self._build()

    def _computes_the_function(self) -> bool:
        """The imported graph's logits equal the concrete function's on a seeded probe batch (a one-time
        check of the private inlining helper: a few ms for the MNIST models)."""
        shape = [1 if d is None else d for d in self._input.shape.as_list()]
        probe = tf.constant(np.random.default_rng(0).uniform(0, 1, shape), self._input.dtype)
        imported = tf.function(lambda x: self(x)[0])(probe)
        own = tf.nest.flatten(self._cf(probe), expand_composites=True)[0]
        return bool(np.allclose(imported.numpy(), own.numpy(), rtol=1e-4, atol=1e-5 * (1 + np.abs(own.numpy()).max())))

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_saved_model(cls, obj: Any, input_spec: tf.TensorSpec | None = None, mode: str = "live",
                         name: str | None = None) -> "ImportedGraph":
        """From a loaded SavedModel, a ``hub.KerasLayer`` or its ``resolved_object``.

        Uses the callable ``__call__`` (hub-style export; ``input_spec`` is needed
        only if it has no input signature) or else the ``serving_default`` signature.
        """
        obj = getattr(obj, "resolved_object", obj)
        call = getattr(obj, "__call__", None)
        if call is not None and hasattr(call, "get_concrete_function"):
            cf = call.get_concrete_function(*([input_spec] if input_spec is not None else []))
        elif "serving_default" in getattr(obj, "signatures", {}):
            cf = obj.signatures["serving_default"]
        else:
            raise HarnessError(f"SavedModel {name or obj!r} has neither a callable __call__ nor a serving_default signature")
        if not hasattr(obj, "variables"):
            raise HarnessError(f"SavedModel {name or obj!r} has no `variables` attribute; export it hub-style")
        return cls(cf, list(obj.variables), mode=mode, name=name)

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
        # restored function, TF appends its forward intermediates to `outputs` (for the backward
        # pass), while `structured_outputs` stays what the function returns. The frozen copy keeps
        # the order of `outputs` (but not the structure), so the logits are found by position.
        returned = tf.nest.flatten(self._cf.structured_outputs, expand_composites=True)
        if len(data_inputs) != 1 or len(returned) != 1:
            raise HarnessError(
                f"SavedModel function of {self.name} must take one image tensor and return one logits "
                f"tensor; it has inputs {[t.name for t in data_inputs]} and outputs {[t.name for t in returned]}"
            )
        position = [t.name for t in self._cf.outputs].index(returned[0].name)
        self._input = data_inputs[0]
        self._output_name = fn.outputs[position].name
        self._graph_def = graph_def
        self._index(graph_def)

    # relu_count: Relu/Relu6 ops the logits depend on (0 -> guided is impossible).
    def _index(self, graph_def) -> None:
        # A scratch import gives op types, dtypes and a topological op order
        # (the importer creates every op after its inputs).
        scratch = tf.Graph()
        with scratch.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        self._ops = scratch.get_operations()
        self._op_by_name = {op.name: op for op in self._ops}
        reachable = _ancestors(scratch.get_tensor_by_name(self._output_name).op)
        self.relu_count = sum(op.type in _RELU_TYPES for op in reachable)
        self._leaky = sorted(op.name for op in reachable if op.type in _LEAKY_TYPES)
        library = {f.signature.name for f in graph_def.library.function}
        self._opaque_calls = sorted(op.name for op in reachable if op.type in _CALL_TYPES or op.type in library)
        self._keras_scopes = self._detect_keras_scopes()

    def _detect_keras_scopes(self) -> bool:
        """True if layer scopes carry Keras 3's "_<k>" suffix (voted by the variables' layer names)."""
        components = {c for op in self._ops for c in op.name.split("/")[:-1]}
        votes = 0
        for var in self._variables.values():
            parts = var.name.split(":")[0].split("/")
            if len(parts) < 2:
                continue
            layer = parts[-2]
            suffixed = any(_strip_suffix(c) == layer for c in components)
            votes += int(suffixed and layer not in components) - int(layer in components and not suffixed)
        return votes > 0

    # ---- queries ------------------------------------------------------------------

    def op_names(self) -> list[str]:
        """All op names of the inlined graph, in topological order."""
        return [op.name for op in self._ops]

    @property
    def captured_variables(self) -> list[tf.Variable]:
        """The matched variables in the order the function captures them (execution order)."""
        return list(self._variables.values())

    def resolve_endpoint(self, name: str) -> str:
        """Map an endpoint name to one tensor name of the inlined graph.

        Rule, in order:
          1. an exact tensor name ("op:0") or op name (-> its output 0) is taken as is;
          2. otherwise, the ops whose name-scope components (all "/"-separated parts
             but the op's own name) contain `name` as a whole component ("Logits"
             never matches "AuxLogits"). A component also matches as Keras 3 writes
             it, `name` plus one "_<k>" suffix (layer "conv2" -> scope "conv2_1",
             layer "conv2_1" -> "conv2_1_2"). Graphs whose variables show that
             Keras 3 pattern try the suffixed form first, others the exact form;
          3. of those ops (value ops only: no Const/Placeholder/ReadVariableOp, a
             floating output), the last in topological order; if it is an
             Identity-like op, the last Relu/Relu6/ConcatV2 of the scope instead,
             or else the op the Identity chain forwards.
        No match raises HarnessError with the closest scope names.
        """
        exact = self._exact_tensor(name)
        if exact is not None:
            return exact
        ops = self._scope_ops(name)
        if not ops:
            raise HarnessError(self._unknown_endpoint_message(name))
        return self._pick(ops).outputs[0].name

    def _exact_tensor(self, name: str) -> str | None:
        op_name, _, index = name.partition(":")
        op = self._op_by_name.get(op_name)
        if op is None or not op.outputs:
            return None
        if not index:
            return op.outputs[0].name
        if index.isdigit() and int(index) < len(op.outputs):
            return name
        return None

    def _scope_ops(self, name: str) -> list:
        exact, suffixed = [], []
        for op in self._ops:
            if op.type in _NOT_ENDPOINTS or not op.outputs or not op.outputs[0].dtype.is_floating:
                continue
            scopes = op.name.split("/")[:-1]
            if name in scopes:
                exact.append(op)
            if any(_strip_suffix(c) == name for c in scopes):
                suffixed.append(op)
        first, second = (suffixed, exact) if self._keras_scopes else (exact, suffixed)
        return first or second

    def _pick(self, ops: list):
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

    def _unknown_endpoint_message(self, name: str) -> str:
        components = {c for op in self._ops for c in op.name.split("/")[:-1]}
        # In Keras 3 graphs show layer names ("conv2"), not their uniquified scopes ("conv2_1").
        names = {_strip_suffix(c) or c for c in components} if self._keras_scopes else components
        close = difflib.get_close_matches(name, sorted(names), n=6, cutoff=0.5)
        hint = ", ".join(close) if close else "(none close; see ImportedGraph.op_names())"
        return f"unknown endpoint {name!r} in the SavedModel graph of {self.name}; closest scope names: {hint}"

    # ---- use inside a tf.function ---------------------------------------------------

    def __call__(self, x, endpoints: Sequence[str] = (), guided: bool = False) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Import the graph on `x` into the current tf.function; return (logits, endpoint tensors).

        Must run while a tf.function traces. Take gradients with ``tf.gradients``
        (not GradientTape, which does not see imported ops).
        """
        graph = tf.compat.v1.get_default_graph()
        if tf.executing_eagerly() or not getattr(graph, "building_function", False):
            raise RuntimeError(
                "ImportedGraph must be called inside a tf.function (it imports ops into the graph "
                "being traced); it was called eagerly"
            )
        if guided:
            self._check_guided()
        x = self._check_input(x)
        targets = [self.resolve_endpoint(e) for e in endpoints]
        input_map = {self._input.name: x}
        if self.mode == "live":
            # capture() turns the eager handle into a placeholder of this FuncGraph;
            # feeding v.handle directly fails ("_as_tf_output not supported when eager").
            input_map.update({ph: graph.capture(v.handle) for ph, v in self._variables.items()})
            input_map.update({ph: graph.capture(t) for ph, t in self._constants.items()})
        override = graph.gradient_override_map(_OVERRIDES) if guided else nullcontext()
        with override:
            out = tf.graph_util.import_graph_def(
                self._graph_def, input_map=input_map,
                return_elements=[self._output_name, *targets], name="imported",
            )
        return out[0], list(out[1:])

    def _check_guided(self) -> None:
        if self.relu_count == 0:
            raise HarnessError(
                f"no Relu/Relu6 ops reachable in the SavedModel graph of {self.name}; "
                "Guided Backprop cannot be applied"
            )
        if self._leaky:
            raise HarnessError(
                f"the SavedModel graph of {self.name} has LeakyRelu ops ({', '.join(self._leaky[:3])}), which Guided "
                "Backprop cannot gate; supported: Relu, Relu6"
            )
        if self._opaque_calls:
            raise HarnessError(
                f"the SavedModel graph of {self.name} still calls functions after inlining "
                f"({', '.join(self._opaque_calls[:3])}); Guided Backprop cannot reach ReLUs inside them"
            )

    def _check_input(self, x) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.dtype != self._input.dtype:
            raise HarnessError(f"input to {self.name} must be {self._input.dtype.name}, got {x.dtype.name}")
        if not x.shape.is_compatible_with(self._input.shape):
            raise HarnessError(f"input to {self.name} must have shape {self._input.shape}, got {x.shape}")
        return x

    def refresh(self) -> None:
        """Frozen mode: re-freeze from the current variable values (then rebuild
        any tf.function that imported this graph: its trace holds the old
        constants). Live mode: nothing to do."""
        if self.mode == "frozen":
            self._build()
            self.generation += 1


def _helper(name: str):
    """One of TensorFlow's private graph helpers, or None where this TensorFlow lacks it."""
    return getattr(_convert, name, None)


def _fall_back(name: str, why: str) -> str:
    warnings.warn(f"{name}: graph_mode live is not available ({why}); using graph_mode frozen "
                  "(the same maps, re-frozen after each randomization)", RuntimeWarning, stacklevel=3)
    return "frozen"


def _match_captures(cf, variables: Sequence[tf.Variable]):
    """Split cf's captures into {placeholder: variable}, {placeholder: constant} and unmatched names."""
    by_handle = {id(v.handle): v for v in variables}
    matched, constants, unmatched = {}, {}, []
    for external, internal in cf.graph.captures:
        var = by_handle.get(id(external))
        if var is not None:
            matched[internal.name] = var
        elif external.dtype == tf.resource:
            unmatched.append(internal.name)
        else:
            constants[internal.name] = external
    return matched, constants, unmatched


def _default_name(cf) -> str:
    name = cf.name.decode() if isinstance(cf.name, bytes) else str(cf.name)
    return name


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
