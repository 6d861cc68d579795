"""Model backends: the compiled `(images, targets)` kernels every method builds on, the same for every
kind of model (`Backend`: the forward pass only; `KerasBackend`; `SavedModelBackend`). A kernel reads
the model's variables, never copies them, so randomizing a block in place is seen by the next call
without a retrace; it counts its traces in `model.trace_counts[key]`. `target_gradient` is the one
gradient computation of the harness (every kernel, the PAIR oracle).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from harness.errors import HarnessError

# harness.models.wrapper.ModelUnderTest, named not imported: the wrapper imports this module.
ModelUnderTest = Any

GRAPH_MODES = ("live", "frozen")
# reduce(endpoint values, their gradients) -> what an endpoint kernel returns
Reduce = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def selected_output(logits: tf.Tensor, targets: tf.Tensor, output: str = "logit") -> tf.Tensor:
    """The explained scalar of each row: the target's logit or its softmax probability."""
    values = tf.nn.softmax(logits) if output == "probability" else logits
    return tf.gather(values, targets, batch_dims=1)


def target_gradient(forward: Callable, x: tf.Tensor, targets: tf.Tensor, output: str = "logit") -> tf.Tensor:
    """d output[target] / d x of every row, `forward(x) -> logits` (to call inside a tf.function)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        selected = selected_output(forward(x), targets, output)
    return tape.gradient(selected, x)


def endpoint_gradients(two_outputs: Callable, x: tf.Tensor, targets: tf.Tensor,
                       output: str = "logit") -> tuple[tf.Tensor, tf.Tensor]:
    """(endpoint values, d output[target] / d values), `two_outputs(x) -> (values, logits)` a Keras
    model (called in inference mode)."""
    with tf.GradientTape() as tape:
        values, logits = two_outputs(x, training=False)
        selected = selected_output(logits, targets, output)
    return values, tape.gradient(selected, values)


def compile_counted(model: ModelUnderTest, key: str, body: Callable) -> Callable:
    """tf.function(body) over (images, targets) that counts its traces in `model.trace_counts[key]`;
    the images' shape is checked against its signature first, so that a wrong size is named in the
    harness's terms."""
    spec = model.tensor_spec()
    function = tf.function(model._counted(key, body), input_signature=[spec, tf.TensorSpec([None], tf.int32)])

    def kernel(x, targets) -> tf.Tensor:
        x, targets = tf.cast(x, tf.float32), tf.cast(targets, tf.int32)  # tensors of those dtypes as they are
        if not spec.shape.is_compatible_with(x.shape):
            raise ValueError(f"kernel input of shape {x.shape.as_list()}; it takes {spec.shape.as_list()}")
        return function(x, targets)
    return kernel


def _once(model: ModelUnderTest, key: str, body: Callable) -> Callable:
    """The kernel of `body()` under trace key `key`, built once per model and key."""
    return model.compiled(key, lambda: compile_counted(model, key, body()))


class Backend:
    """A model known only by its forward pass: plain kernels; no layers to reach. A subclass reaches
    the layers: `_guided` and `_endpoint` make kernel bodies, `_compiled` compiles one."""
    description = "known only by its forward pass"
    keras_model: Any = None
    saved_model: Any = None

    def gradient_kernel(self, model: ModelUnderTest, output: str) -> Callable:
        """d output[target] / d input."""
        return _once(model, f"gradient/{output}",
                     lambda: lambda x, targets: target_gradient(model.logits, x, targets, output))

    def forward_kernel(self, model: ModelUnderTest, output: str) -> Callable:
        """output[target] (forward passes only)."""
        return _once(model, f"forward/{output}",
                     lambda: lambda x, targets: selected_output(model.logits(x), targets, output))

    def guided_kernel(self, model: ModelUnderTest, output: str, graph_mode: str, method: str) -> Callable:
        """Guided Backprop's input gradients (trace key `guided/<output>`, SavedModels: `/<graph_mode>`)."""
        return self._compiled(model, f"guided/{output}", graph_mode, method, lambda: self._guided(model, output))

    def endpoint_kernel(self, model: ModelUnderTest, key: str, endpoint: str, output: str, graph_mode: str,
                        reduce: Reduce, method: str) -> Callable:
        """reduce(values at `endpoint`, d output[target] / d values) under trace key `key`."""
        return self._compiled(model, key, graph_mode, method, lambda: self._endpoint(endpoint, output, reduce))

    def guided_endpoint_kernel(self, model: ModelUnderTest, key: str, endpoint: str, output: str, graph_mode: str,
                               reduce: Reduce, method: str) -> Callable:
        """(guided input gradients, the endpoint kernel's reduce) of the same rows in one compiled call: one
        dispatch and one reading of the weights (Guided Grad-CAM)."""
        def body():
            # Keras: the guided part traces inside its own `with` block, the endpoint part after it, plain;
            # SavedModels: two imports of the graph, the gradient override covering only the guided one's ops.
            guided, at_endpoint = self._guided(model, output), self._endpoint(endpoint, output, reduce)
            return lambda *args: (guided(*args), at_endpoint(*args))
        return self._compiled(model, key, graph_mode, method, body)

    def _compiled(self, model: ModelUnderTest, key: str, graph_mode: str, method: str, body: Callable) -> Callable:
        """The kernel of `body()` (built once per model and key)."""
        raise HarnessError(f"method {method} needs a Keras model or a SavedModel; model {model.name} "
                           f"({model.source_kind}) is neither")


class KerasBackend(Backend):
    """A Keras 3 model: ReLUs swapped while a kernel traces (Guided Backprop), layer outputs read
    through a two-output model that shares the variables (endpoints)."""
    description = "a Keras model"

    def __init__(self, keras_model):
        self.keras_model = keras_model

    def _compiled(self, model, key, graph_mode, method, body):
        return _once(model, key, body)

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
    """A SavedModel (TF-Hub, a folder, a built-in): kernels over its inlined graph (graph_import, `graph_mode`
    live or frozen), re-imported into each; imported ops are invisible to GradientTape: `tf.gradients`."""
    description = "a SavedModel"

    def __init__(self, saved_model):
        self.saved_model = saved_model

    def _compiled(self, model, key, graph_mode, method, body):
        if graph_mode not in GRAPH_MODES:  # methods.choose's message (harness.methods builds on models)
            raise HarnessError(f"method {method}: unknown graph_mode {graph_mode!r}; valid: {', '.join(GRAPH_MODES)}")
        graph_key = f"{key}/{graph_mode}"
        return model.compiled(graph_key, lambda: GraphKernel(model, graph_key, graph_mode, body()))

    @staticmethod
    def _guided(model, output: str) -> Callable:
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


class GraphKernel:
    """A compiled kernel `body(graph, images, targets)` over the model's `ImportedGraph` (one per model
    and mode, shared by its kernels), traced anew whenever frozen weights were re-frozen."""

    def __init__(self, model: ModelUnderTest, key: str, mode: str, body: Callable):
        from harness.models.graph_import import ImportedGraph

        def imported():  # of the wrapper's forward pass: whichever way the SavedModel exposes it
            forward = tf.function(model.logits).get_concrete_function(model.tensor_spec())
            return ImportedGraph(forward, [v.variable for v in model.variables], mode=mode, name=model.name)
        self.model, self.key, self.body = model, key, body
        self.graph = model.compiled(f"graph/{mode}", imported)
        self.generation, self.fn = None, None

    def __call__(self, x, targets):
        generation = self.graph.refresh()
        if generation != self.generation:  # first call, or frozen weights re-frozen: trace anew
            self.fn = compile_counted(self.model, self.key, lambda xs, ts: self.body(self.graph, xs, ts))
            self.generation = generation
        return self.fn(x, targets)
