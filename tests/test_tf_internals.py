"""What the harness's results must not depend on: how TensorFlow treats a variable's buffer."""
import numpy as np
import pytest

from harness import schedules as rz
from harness.bitwise import same_bits

from conftest import tiny_cnn, wrap_keras


class InPlaceVariable:
    """A tf.Variable as a TensorFlow would keep it that assigned in place: one buffer, shared by every
    read (TensorFlow 2.21 on CPU gives a variable a new buffer while a read of it is alive)."""

    def __init__(self, variable):
        self.buffer = variable.numpy()
        self.shape, self.dtype = variable.shape, variable.dtype

    def read_value(self) -> np.ndarray:
        view = self.buffer.view()
        view.flags.writeable = False
        return view

    def numpy(self) -> np.ndarray:
        return self.buffer.copy()

    def assign(self, value) -> None:
        np.copyto(self.buffer, np.asarray(value))


@pytest.fixture
def in_place_model():
    """The tiny CNN with variables that assign in place, and its trained values (copies)."""
    model = wrap_keras(tiny_cnn())
    for v in model.variables:
        v.variable = InPlaceVariable(v.variable)
    return model, [v.variable.numpy() for v in model.variables]


def test_restore_restores_when_assignments_reuse_the_buffer(in_place_model):
    """snapshot / restore bring the trained values back even if an assignment overwrites the buffer
    the snapshot was read from. Red when the snapshot keeps the tensors read (no copy): it turns into
    the new values and restore restores nothing."""
    model, trained = in_place_model
    snapshot = model.snapshot()
    for v in model.variables:
        v.variable.assign(np.zeros(v.shape, v.variable.dtype.as_numpy_dtype))
    model.restore(snapshot)
    assert all(same_bits(v.read(), t) for v, t in zip(model.variables, trained))


@pytest.mark.parametrize("blocks", [("logits",), ("logits", "fc1", "conv2", "conv1")])
def test_a_step_randomizes_and_restores_when_assignments_reuse_the_buffer(in_place_model, blocks):
    """A randomization step on a model whose assignments overwrite the buffer its reads share: the
    self-check sees the step's blocks changed and the rest unchanged, and after the step every
    variable holds its trained bits. Red when the trained snapshot aliases the variables (the
    self-check then compares the model with itself)."""
    model, trained = in_place_model
    randomizer = rz.Randomizer(model, rz.Reinit())
    names = {v.name for block in blocks for v in model.block(block).variables}
    with randomizer.step(rz.Step(len(blocks), blocks[-1], blocks)):
        for v, t in zip(model.variables, trained):
            if v.name not in names or rz.role(v) == "kernel":
                assert same_bits(v.read(), t) == (v.name not in names), v.name
    assert all(same_bits(v.read(), t) for v, t in zip(model.variables, trained))


def test_a_snapshot_is_memory_of_the_harness():
    """On TensorFlow itself: the snapshot shares no memory with what the variables read, and cannot
    be written. Red when it keeps the tensors read."""
    model = wrap_keras(tiny_cnn())
    snapshot = model.snapshot()
    for v, copy in zip(model.variables, snapshot, strict=True):
        assert isinstance(copy, np.ndarray) and not copy.flags.writeable, v.name
        assert not np.shares_memory(copy, v.read()), v.name
