"""Model backends: how the harness reaches inside a model for the kernels every method builds on.

A `ModelUnderTest` holds one backend. Every backend gives the same compiled `(images, targets)`
kernels; a new kind of model (another framework, a segmentation output) is one subclass:
- `gradient_kernel`: d output[target] / d input (`target_gradient`, the one gradient computation the
  harness, its Guided Backprop and the PAIR oracle all use);
- `forward_kernel`: output[target] (forward passes only);
- `guided_kernel`: the input gradient with every ReLU / ReLU6 backward pass gated (Guided Backprop);
- `endpoint_kernel`: `reduce(values, gradients)` at a named intermediate endpoint (Grad-CAM);
- `guided_endpoint_kernel`: both of the last two in one call (Guided Grad-CAM: one call instead of
  two, each paying its own dispatch and its own reading of the weights).

`Backend` itself knows only the forward pass (`model.logits`), so its plain kernels serve every
model and its guided / endpoint kernels are one clear error. `KerasBackend` swaps the ReLUs while a
separate function traces (`keras_guided`) and reads layer outputs through a two-output model;
`SavedModelBackend` (TF-Hub, SavedModel folders, the built-in models) re-imports the inlined graph
(`graph_import.ImportedGraph`), under a gradient override for Guided Backprop.

Every kernel is a `tf.function` with a fixed input signature, built once per model and key through
`ModelUnderTest.compiled`. It reads the model's variables, never copies them, so randomizing a block
in place is seen by the next call without a retrace; each kernel counts its traces in
`model.trace_counts[key]` so tests can prove that.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from harness.errors import HarnessError
# the computations every kernel shares (also keras_guided's), kept importable from here
from harness.models.gradients import endpoint_gradients, selected_output, target_gradient  # noqa: F401

# harness.models.wrapper.ModelUnderTest, named not imported: the wrapper imports this module.
ModelUnderTest = Any

GRAPH_MODES = ("live", "frozen")
# reduce(endpoint values, their gradients) -> what an endpoint kernel returns
Reduce = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def compile_counted(model: ModelUnderTest, key: str, body: Callable) -> Kernel:
    """tf.function(body) over (images, targets) that counts its traces in `model.trace_counts[key]`."""
    def traced(x, targets):
        model.trace_counts[key] += 1  # Python side effect: runs at trace time only
        return body(x, targets)
    return Kernel(tf.function(traced, input_signature=[model.tensor_spec(), tf.TensorSpec([None], tf.int32)]))


class Kernel:
    """A compiled (images, targets) function: the tf.function (`function`), called with the images
    and targets as tensors of its signature's dtypes, and the images' shape checked against the
    signature first, so that a wrong size is named in the harness's terms."""

    def __init__(self, function):
        self.function = function
        self.shape = function.input_signature[0].shape  # of the images

    def __call__(self, x, targets) -> tf.Tensor:
        x, targets = _tensor(x, tf.float32), _tensor(targets, tf.int32)
        if not self.shape.is_compatible_with(x.shape):
            raise ValueError(f"kernel input of shape {x.shape.as_list()}; it takes {self.shape.as_list()}")
        return self.function(x, targets)


def _tensor(value, dtype: tf.DType) -> tf.Tensor:
    """`value` as a tensor of `dtype`; a tensor that is one already as it is (run_kernel's are)."""
    if isinstance(value, tf.Tensor) and value.dtype == dtype:
        return value
    return tf.cast(value, dtype) if isinstance(value, tf.Tensor) else tf.convert_to_tensor(value, dtype)


# -- backends ------------------------------------------------------------------------------------------
class Backend:
    """A model known only by its forward pass: plain kernels; no layers to reach."""
    kind, description = "forward_only", "known only by its forward pass"
    keras_model: Any = None
    saved_model: Any = None

    def gradient_kernel(self, model: ModelUnderTest, output: str) -> Callable:
        key = f"gradient/{output}"
        return model.compiled(key, lambda: compile_counted(
            model, key, lambda x, targets: target_gradient(model.logits, x, targets, output)))

    def forward_kernel(self, model: ModelUnderTest, output: str) -> Callable:
        key = f"forward/{output}"
        return model.compiled(key, lambda: compile_counted(
            model, key, lambda x, targets: selected_output(model.logits(x), targets, output)))

    def guided_kernel(self, model: ModelUnderTest, output: str, graph_mode: str, method: str) -> Callable:
        """Guided Backprop's input gradients (trace key `guided/<output>`, SavedModels: `/<graph_mode>`)."""
        raise self.no_layers(model, method)

    def endpoint_kernel(self, model: ModelUnderTest, key: str, endpoint: str, output: str, graph_mode: str,
                        reduce: Reduce, method: str) -> Callable:
        """reduce(values at `endpoint`, d output[target] / d values) under trace key `key`."""
        raise self.no_layers(model, method)

    def guided_endpoint_kernel(self, model: ModelUnderTest, key: str, endpoint: str, output: str, graph_mode: str,
                               reduce: Reduce, method: str) -> Callable:
        """(guided input gradients, the endpoint kernel's reduce) of the same rows, one compiled call."""
        raise self.no_layers(model, method)

    @staticmethod
    def no_layers(model: ModelUnderTest, method: str) -> HarnessError:
        return HarnessError(f"method {method} needs a Keras model or a SavedModel; model {model.name} "
                            f"({model.source_kind}) is neither")


class KerasBackend(Backend):
    """A Keras 3 model: ReLUs swapped while a kernel traces (Guided Backprop), layer outputs read
    through a two-output model that shares the variables (endpoints)."""
    kind, description = "keras", "a Keras model"

    def __init__(self, keras_model):
        self.keras_model = keras_model

    def guided_kernel(self, model, output, graph_mode, method):
        key = f"guided/{output}"
        return model.compiled(key, lambda: compile_counted(model, key, self._guided(model, output)))

    def endpoint_kernel(self, model, key, endpoint, output, graph_mode, reduce, method):
        return model.compiled(key, lambda: compile_counted(model, key, self._endpoint(endpoint, output, reduce)))

    def guided_endpoint_kernel(self, model, key, endpoint, output, graph_mode, reduce, method):
        def build():
            # The guided part is traced inside its own `with` block (_guided), the endpoint part after it: plain.
            guided, at_endpoint = self._guided(model, output), self._endpoint(endpoint, output, reduce)
            return compile_counted(model, key, lambda x, targets: (guided(x, targets), at_endpoint(x, targets)))
        return model.compiled(key, build)

    def _guided(self, model, output) -> Callable:
        from harness.models.keras_guided import guided_activations

        def body(x, targets):
            # Runs only while tracing: the ReLUs are guided for exactly this trace (see keras_guided).
            with guided_activations(self.keras_model):
                return target_gradient(model.logits, x, targets, output)
        return body

    def _endpoint(self, endpoint, output, reduce) -> Callable:
        from harness.models.keras_guided import keras_endpoint_model

        two_outputs = keras_endpoint_model(self.keras_model, endpoint)  # shares the model's variables
        return lambda x, targets: reduce(*endpoint_gradients(two_outputs, x, targets, output))


class SavedModelBackend(Backend):
    """A SavedModel (TF-Hub, a folder, a built-in): kernels over its inlined graph, re-imported into
    each kernel (`graph_mode` live: fed the live variables; frozen: weights baked in, re-frozen when
    they change). Imported ops are invisible to GradientTape, so gradients are `tf.gradients`."""
    kind, description = "saved_model", "a SavedModel"

    def __init__(self, saved_model):
        self.saved_model = saved_model

    def guided_kernel(self, model, output, graph_mode, method):
        return self._graph_kernel(model, f"guided/{output}", graph_mode, method, self._guided(output))

    def endpoint_kernel(self, model, key, endpoint, output, graph_mode, reduce, method):
        return self._graph_kernel(model, key, graph_mode, method, self._endpoint(endpoint, output, reduce))

    def guided_endpoint_kernel(self, model, key, endpoint, output, graph_mode, reduce, method):
        # Two imports of the graph: the gradient override of the guided one covers only its own ops.
        guided, at_endpoint = self._guided(output), self._endpoint(endpoint, output, reduce)
        return self._graph_kernel(model, key, graph_mode, method, lambda graph, x, targets: (
            guided(graph, x, targets), at_endpoint(graph, x, targets)))

    @staticmethod
    def _guided(output: str) -> Callable:
        def body(graph, x, targets):
            logits, _ = graph(x, guided=True)
            return tf.gradients(selected_output(logits, targets, output), x)[0]
        return body

    @staticmethod
    def _endpoint(endpoint: str, output: str, reduce: Reduce) -> Callable:
        def body(graph, x, targets):
            logits, (values,) = graph(x, [endpoint])
            return reduce(values, tf.gradients(selected_output(logits, targets, output), values)[0])
        return body

    @staticmethod
    def _graph_kernel(model, key: str, graph_mode: str, method: str, body: Callable) -> Callable:
        if graph_mode not in GRAPH_MODES:  # methods.choose's message (harness.methods builds on models)
            raise HarnessError(f"method {method}: unknown graph_mode {graph_mode!r}; valid: {', '.join(GRAPH_MODES)}")
        mode = graph_mode
        graph_key = f"{key}/{mode}"
        return model.compiled(graph_key, lambda: GraphKernel(model, graph_key, mode, body))


class SyncedGraph:
    """The model's `ImportedGraph`, one per model and mode, shared by the guided and endpoint kernels.

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
        self.model = model
        self.graph = ImportedGraph(forward, [v.variable for v in model.variables], mode=mode, name=model.name)
        self.mode = self.graph.mode  # frozen where the live graph failed its check (graph_import)
        self._fingerprint = fingerprint(model) if self.mode == "frozen" else None

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
        digest.update(v.read())  # the buffer TF read (C-contiguous): no copy
    return digest.hexdigest()


class GraphKernel:
    """A compiled kernel `body(graph, images, targets)` over the model's imported SavedModel graph."""

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
