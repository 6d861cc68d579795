"""ModelUnderTest: the one wrapper every other module talks to, whatever the model's source: logits
for a batch, the input spec, the variables grouped into blocks in execution order, snapshot / restore.
Compiled functions capture the variables once, so assigning new values never retraces (`trace_counts`)."""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from harness.errors import HarnessError
from harness.models import blocks as blocking
from harness.models.backends import Backend


# TensorFlow counts traces over every tf.function made from the same Python code, so loading several
# models in one process warns of "excessive retracing" although none retraced (`trace_counts` checks).
logging.getLogger("tensorflow").addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: spatial size (None = any), channels, and its input value range (images
    enter the harness in [0, 1]; `to_model_space` maps them to the model's range)."""
    size: tuple[int, int] | None
    channels: int
    value_range: tuple[float, float] = (0.0, 1.0)

    def to_model_space(self, images01: np.ndarray) -> np.ndarray:
        low, high = self.value_range
        return (low + (high - low) * np.asarray(images01, np.float32)).astype(np.float32)

    def batch_shape(self) -> list[int | None]:
        return [None, *(self.size or (None, None)), self.channels]


@dataclass
class ModelVariable:
    """A model variable with what randomization needs: its clean name, role and initializer."""
    name: str
    variable: tf.Variable
    trainable: bool
    initializer: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def read(self) -> np.ndarray:
        """The variable's current values without a copy (`variable.numpy()` copies): a view of the tensor
        TF read, to use before the variable is next assigned (`ModelUnderTest.snapshot` copies)."""
        return np.asarray(self.variable.read_value())


@dataclass(frozen=True)
class Block:
    name: str
    variables: tuple[ModelVariable, ...]

    @property
    def parameter_count(self) -> int:
        return sum(v.size for v in self.variables)


@dataclass
class ModelUnderTest:
    """A model as every other module sees it. Build it with `harness.models.load_model`."""
    name: str
    identity: str                      # handle, path + hash, or built-in name + recipe key
    source_kind: str                   # builtin | hub | saved_model | keras_file | keras_applications
    call: Callable[[tf.Tensor], tf.Tensor]
    input_spec: InputSpec
    variables: list[ModelVariable]     # execution order (input -> output)
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)
    backend: Backend = field(default_factory=Backend)  # its kernels (harness.models.backends)
    trace_counts: Counter = field(default_factory=Counter)
    _compiled: dict = field(default_factory=dict, repr=False)
    num_classes: int = 0

    def logits(self, x) -> tf.Tensor:
        return self.call(x)

    @property
    def keras_model(self) -> Any:  # of a Keras source, else None
        return self.backend.keras_model

    @property
    def saved_model(self) -> Any:  # the loaded SavedModel of a SavedModel / hub source, else None
        return self.backend.saved_model

    def tensor_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(self.input_spec.batch_shape(), tf.float32)

    def compiled(self, key: str, build: Callable[[], Callable]) -> Callable:
        """A compiled function built once per model and key (e.g. 'gradient', 'guided')."""
        if key not in self._compiled:
            self._compiled[key] = build()
        return self._compiled[key]

    def predict(self, x: np.ndarray, max_batch: int | str = "auto") -> np.ndarray:
        """Logits of every row of x, at most `max_batch` rows per forward pass ("auto": as the methods)."""
        from harness.batching import rows_per_call

        fn = self.compiled("logits", lambda: tf.function(self._counted("logits", self.logits),
                                                        input_signature=[self.tensor_spec()]))
        x = np.asarray(x, np.float32)
        rows = rows_per_call(max_batch, x.shape[1:])
        chunks = [fn(tf.constant(x[i:i + rows])).numpy() for i in range(0, len(x) or 1, rows)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _counted(self, key: str, fn: Callable) -> Callable:
        def traced(*args):
            self.trace_counts[key] += 1  # Python side effect: runs at trace time only
            return fn(*args)
        return traced

    def block(self, name: str) -> Block:
        if found := next((b for b in self.blocks if b.name == name), None):
            return found
        raise HarnessError(f"unknown block {name!r} of model {self.name}; "
                           f"valid: {', '.join(b.name for b in self.blocks)}")

    def snapshot(self) -> list[np.ndarray]:
        """Every variable's current values, copied into read-only arrays; `restore` assigns them back.
        Copies: a tensor read keeps its values only while TensorFlow gives the variable a new buffer on
        assignment (tests/test_tf_internals.py simulates a TensorFlow that assigns in place)."""
        copies = [np.array(v.read()) for v in self.variables]
        for copy in copies:
            copy.flags.writeable = False
        return copies

    def restore(self, snapshot: list[np.ndarray], names: Collection[str] | None = None) -> None:
        """Assign the snapshot's values back: to every variable, or to those named in `names`."""
        for v, value in zip(self.variables, snapshot, strict=True):
            if names is None or v.name in names:
                v.variable.assign(value)


def execution_order(call: Callable, spec: InputSpec, variables: list[tf.Variable]) -> list[tf.Variable]:
    """Variables sorted by when the traced forward pass first captures them (the listing order is not
    execution order: hub.KerasLayer lists trainable ones first); those it never touches go last."""
    graph = tf.function(call).get_concrete_function(tf.TensorSpec(spec.batch_shape(), tf.float32)).graph
    position = {id(handle): i for i, (handle, _) in enumerate(graph.captures)}
    return sorted(variables, key=lambda v: position.get(id(v.handle), len(position)))


def variable_role(v: ModelVariable) -> str:
    """kernel | bias | gamma | moving_stat | other, by name, shape and dtype (never trainability)."""
    return blocking.variable_role(v.name, v.shape, bool(v.variable.dtype.is_floating))


def build_blocks(variables: list[ModelVariable], depth: int = 1, names: list[str] | None = None,
                 model: str = "model") -> list[Block]:
    """The model's blocks; trainable or frozen alike (`model.trainable = False` freezes the optimizer,
    not what a randomization test may re-initialize). A group without a weight (kernel, bias, gamma)
    is state, not a block: a Dropout layer's seed generator. An explicit name that covers no weight,
    or a model left with no block at all, is an error."""
    variable_names = [v.name for v in variables]
    groups = (blocking.group_by_names(variable_names, names, model) if names
              else blocking.group_by_depth(variable_names, depth))
    blocks = [Block(name, tuple(variables[i] for i in indices)) for name, indices in groups]
    has_weight = [any(variable_role(v) in blocking.WEIGHT_ROLES for v in b.variables) for b in blocks]
    weighted = [b for b, kept in zip(blocks, has_weight) if kept]
    if names and not all(has_weight):
        b = blocks[has_weight.index(False)]
        raise HarnessError(f"block {b.name!r} of {model} holds no weight to randomize, only "
                           f"{', '.join(v.name for v in b.variables[:4])}")
    if not weighted:
        raise HarnessError(f"model {model} has no block to randomize: none of its {len(variables)} variables "
                           f"is a weight (kernel, bias, batch-norm scale) "
                           f"({', '.join(v.name for v in variables[:4]) or 'no variables'})")
    return weighted


def check_logit_output(model: ModelUnderTest) -> int:
    """Number of classes; the output of a forward pass must be a [batch, classes] logit vector."""
    size = model.input_spec.size or (32, 32)
    probe = np.zeros((1, *size, model.input_spec.channels), np.float32)
    try:
        out = model.predict(probe)
    except HarnessError:
        raise
    except Exception as error:  # noqa: BLE001 - any TF failure here means the input spec is wrong
        raise HarnessError(f"model {model.name} rejects input of shape {probe.shape}: {first_line(error)}") from error
    if out.ndim != 2 or out.shape[1] < 2:
        raise HarnessError(f"model {model.name} outputs shape {list(out.shape)}, not a [batch, classes] "
                           "logit vector; point the harness at the classifier's logits")
    return int(out.shape[1])


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
