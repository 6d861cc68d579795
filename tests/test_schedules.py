"""Schedules, re-initialization schemes, the self-check, exact restore, constant trace count."""
import numpy as np
import pytest

from harness import schedules as rz
from harness.bitwise import same_bits
from harness.errors import HarnessError
from harness.methods.kernels import input_gradients

from conftest import tiny_cnn, wrap_keras

BLOCKS = ["conv1", "conv2", "fc1", "logits"]


def test_cascading_is_top_down_and_accumulates():
    steps = rz.schedule_steps("cascading", BLOCKS)
    assert steps[0] == rz.Step(0, "original", ())
    assert [s.block for s in steps[1:]] == ["logits", "fc1", "conv2", "conv1"]
    assert steps[2].randomized == ("logits", "fc1")
    assert steps[-1].randomized == ("logits", "fc1", "conv2", "conv1")


def test_bottom_up_starts_at_the_input():
    steps = rz.schedule_steps("bottom_up", BLOCKS)
    assert [s.block for s in steps] == ["original", "conv1", "conv2", "fc1", "logits"]
    assert steps[2].randomized == ("conv1", "conv2")


def test_independent_randomizes_one_block_at_a_time():
    steps = rz.schedule_steps("independent", BLOCKS)
    assert [s.randomized for s in steps] == [(), ("logits",), ("fc1",), ("conv2",), ("conv1",)]


def test_unknown_schedule_and_scheme_names():
    with pytest.raises(HarnessError, match="unknown schedule 'sideways'; valid: cascading"):
        rz.schedule_steps("sideways", BLOCKS)
    with pytest.raises(HarnessError, match="unknown re-initialization scheme 'gaussian'; valid: auto"):
        rz.Reinit(scheme="gaussian")


def _values(model):
    return {v.name: v.variable.numpy().copy() for v in model.variables}


@pytest.mark.parametrize("scheme", ["auto", "own", "he_truncated_normal", "truncated_normal", "glorot_uniform",
                                    "uniform", "permute"])
def test_every_scheme_changes_exactly_its_blocks_and_restores(scheme):
    model = wrap_keras(tiny_cnn())
    before = _values(model)
    randomizer = rz.Randomizer(model, rz.Reinit(scheme=scheme, seed=1))
    for step in rz.schedule_steps("cascading", [b.name for b in model.blocks]):
        with randomizer.step(step):
            now = _values(model)
            touched = {v.name for name in step.randomized for v in model.block(name).variables}
            for name, value in now.items():
                if name not in touched:
                    assert value.tobytes() == before[name].tobytes()
                elif name.endswith("kernel"):
                    assert not np.array_equal(value, before[name])
    assert all(v.tobytes() == before[k].tobytes() for k, v in _values(model).items())


def test_scheme_distributions():
    model = wrap_keras(tiny_cnn())
    kernel = model.block("fc1").variables[0]
    rng = np.random.default_rng(0)
    current = kernel.variable.numpy()
    fan_in = kernel.shape[0]
    he = rz.draw(kernel, rz.Reinit(scheme="he_truncated_normal"), rng, current)
    assert np.abs(he).max() <= 2 * np.sqrt(2 / fan_in) / rz.TRUNCATED_STD + 1e-9
    uniform = rz.draw(kernel, rz.Reinit(scheme="uniform", low=-0.3, high=-0.1), rng, current)
    assert uniform.min() >= -0.3 and uniform.max() <= -0.1
    normal = rz.draw(kernel, rz.Reinit(scheme="truncated_normal", std=0.5), rng, current)
    assert np.abs(normal).max() <= 1.0 and 0.3 < normal.std() < 0.5
    permuted = rz.draw(kernel, rz.Reinit(scheme="permute"), rng, current)
    assert np.array_equal(np.sort(permuted.ravel()), np.sort(current.ravel()))
    bias = model.block("fc1").variables[1]
    assert np.all(rz.draw(bias, rz.Reinit(scheme="he_truncated_normal"), rng, bias.variable.numpy()) == 0.0)


def test_own_initializer_is_used_and_required():
    model = wrap_keras(tiny_cnn())
    bias = model.block("fc1").variables[1]
    assert bias.initializer == {"kind": "constant", "value": 0.0}
    bias.initializer = None
    with pytest.raises(HarnessError, match="no recorded initializer"):
        rz.draw(bias, rz.Reinit(scheme="own"), np.random.default_rng(0), bias.variable.numpy())


def test_draws_per_step_differ_nested_repeat():
    def logits_kernel_at(draws):
        model = wrap_keras(tiny_cnn())
        randomizer = rz.Randomizer(model, rz.Reinit(draws=draws, seed=3))
        values = []
        for step in rz.schedule_steps("cascading", [b.name for b in model.blocks])[1:3]:
            with randomizer.step(step):
                values.append(model.block("logits").variables[0].variable.numpy().copy())
        return values
    first, second = logits_kernel_at("per_step")
    assert not np.array_equal(first, second)
    first, second = logits_kernel_at("nested")
    assert np.array_equal(first, second)


def test_same_seed_same_draws():
    def draw_once():
        model = wrap_keras(tiny_cnn())
        with rz.Randomizer(model, rz.Reinit(seed=5)).step(rz.Step(1, "logits", ("logits",))):
            return model.block("logits").variables[0].variable.numpy().copy()
    assert np.array_equal(draw_once(), draw_once())


def test_batch_norm_statistics_kept_or_reset():
    for bn_stats, expect_changed in (("keep", False), ("reset", True)):
        model = wrap_keras(tiny_cnn(batch_norm=True), blocks={"depth": 1})
        bn = model.block("bn1")
        moving = [v for v in bn.variables if rz.role(v) == "moving_stat"]
        assert len(moving) == 2
        moving[0].variable.assign(moving[0].variable.numpy() + 0.5)  # as if trained
        before = [v.variable.numpy().copy() for v in moving]
        randomizer = rz.Randomizer(model, rz.Reinit(bn_stats=bn_stats))
        with randomizer.step(rz.Step(1, "bn1", ("bn1",))):
            changed = any(not np.array_equal(v.variable.numpy(), b) for v, b in zip(moving, before))
            assert changed is expect_changed


def test_self_check_catches_a_randomizer_that_touches_other_blocks(monkeypatch):
    model = wrap_keras(tiny_cnn())
    original = rz.randomize_block

    def leaky(block, values):
        other = model.block("conv1").variables[0].variable
        other.assign(other.numpy() + 1.0)
        return original(block, values)

    monkeypatch.setattr(rz, "randomize_block", leaky)
    with pytest.raises(rz.RandomizationCheckError, match="conv1/kernel changed"):
        with rz.Randomizer(model, rz.Reinit()).step(rz.Step(1, "logits", ("logits",))):
            pass


def test_self_check_catches_a_randomizer_that_does_nothing(monkeypatch):
    model = wrap_keras(tiny_cnn())
    monkeypatch.setattr(rz, "randomize_block", lambda block, values: [])
    with pytest.raises(rz.RandomizationCheckError, match="nothing in block logits was re-initialized"):
        with rz.Randomizer(model, rz.Reinit()).step(rz.Step(1, "logits", ("logits",))):
            pass


def test_self_check_catches_a_randomizer_that_skips_a_kernel(monkeypatch):
    model = wrap_keras(tiny_cnn())
    monkeypatch.setattr(rz, "draw", lambda v, reinit, rng, current: current if v.name.endswith("kernel") else current + 1)
    with pytest.raises(rz.RandomizationCheckError, match="logits/kernel was not re-initialized"):
        with rz.Randomizer(model, rz.Reinit()).step(rz.Step(1, "logits", ("logits",))):
            pass


def test_self_check_catches_a_broken_restore(monkeypatch):
    model = wrap_keras(tiny_cnn())
    randomizer = rz.Randomizer(model, rz.Reinit())
    monkeypatch.setattr(type(model), "restore", lambda self, snapshot, names=None: None)
    with pytest.raises(rz.RandomizationCheckError):
        with randomizer.step(rz.Step(1, "logits", ("logits",))):
            pass


@pytest.mark.parametrize("threads", [1, 4])
def test_blocks_drawn_side_by_side_get_the_values_drawn_one_after_another(monkeypatch, threads):
    """draw_blocks (threads, largest variable first) gives each variable of each block, in order, the
    values `draw` gives it alone from its own generator. Red when the values are put back in another
    order than drawn, or a variable is drawn from another generator than its own."""
    model = wrap_keras(tiny_cnn())
    monkeypatch.setattr(rz, "DRAW_THREADS", threads)
    blocks = list(model.blocks)
    reinit = rz.Reinit(seed=3)
    got = rz.draw_blocks(blocks, reinit, 2)
    for block, values in zip(blocks, got, strict=True):
        for v, value in zip(block.variables, values, strict=True):
            expected = rz.draw(v, reinit, rz.block_rng(reinit, block.name, 2, v.name), v.read())
            assert (value is None) == (expected is None), v.name
            if value is not None:
                assert same_bits(np.asarray(value), np.asarray(expected)), v.name


def test_a_snapshot_keeps_its_values_through_assignments_and_restores_them():
    """ModelUnderTest.snapshot holds copies of the values: assigning and adding to the variables
    afterwards leaves it the trained values, and restore brings them back; a variable's read() is
    read-only. Red when the snapshot is the variables themselves or a view of a buffer an assignment
    overwrites (tests/test_tf_internals.py simulates a TensorFlow that assigns in place)."""
    model = wrap_keras(tiny_cnn())
    trained = [v.variable.numpy() for v in model.variables]
    snapshot = model.snapshot()
    for v in model.variables:
        v.variable.assign(np.zeros(v.shape, v.variable.dtype.as_numpy_dtype))
        v.variable.assign_add(np.ones(v.shape, v.variable.dtype.as_numpy_dtype))
    assert all(np.array_equal(np.asarray(s), t) for s, t in zip(snapshot, trained))
    assert not model.variables[0].read().flags.writeable
    model.restore(snapshot)
    assert all(np.array_equal(v.read(), t) for v, t in zip(model.variables, trained))


def test_a_step_restores_its_own_blocks_and_catches_any_other_change(monkeypatch):
    """After a step only the step's blocks are assigned back (the others were never touched); so a
    variable outside them that changed during the step (a method writing weights) is not silently
    put back but fails the self-check. Red when a step restores every variable, or none."""
    model = wrap_keras(tiny_cnn())
    randomizer = rz.Randomizer(model, rz.Reinit())
    assigned = []
    real_restore = type(model).restore

    def restore(self, snapshot, names=None):
        real_restore(self, snapshot, names)
        assigned.extend(v.name for v in self.variables if names is None or v.name in names)
    monkeypatch.setattr(type(model), "restore", restore)
    with randomizer.step(rz.Step(1, "logits", ("logits",))):
        pass
    assert sorted(assigned) == sorted(v.name for v in model.block("logits").variables)
    assert all(same_bits(v.variable.numpy(), np.asarray(t)) for v, t in zip(model.variables, randomizer.trained))
    other = next(v for v in model.variables if v.name not in {w.name for w in model.block("logits").variables})
    with pytest.raises(rz.RandomizationCheckError, match=other.name):
        with randomizer.step(rz.Step(1, "logits", ("logits",))):
            other.variable.assign(other.variable.numpy() + 1)


def test_gradient_traces_once_across_a_whole_cascade(images8):
    model = wrap_keras(tiny_cnn())
    randomizer = rz.Randomizer(model, rz.Reinit())
    targets = np.zeros(len(images8), np.int32)
    maps = []
    for step in rz.schedule_steps("cascading", [b.name for b in model.blocks]):
        with randomizer.step(step):
            maps.append(input_gradients(model, images8, targets))
    after = input_gradients(model, images8, targets)
    assert model.trace_counts["gradient/logit"] == 1
    assert not np.allclose(maps[0], maps[1])  # randomizing the logits changed the maps...
    assert np.array_equal(maps[0], after)     # ...and the restore is exact


# -- distributions: the standard deviation the draws actually have ---------------------------------------
def _big_kernel(shape):
    import tensorflow as tf

    from harness.models.wrapper import ModelVariable

    return ModelVariable("big/kernel", tf.Variable(np.zeros(shape, np.float32)), True)


def _std_within(values, expected, rel=0.005):
    # 1 M draws: the sample std's relative standard error is ~0.07 %; 0.5 % is 7 of them,
    # while the uncorrected draw is 12 % low.
    assert abs(values.std() / expected - 1) < rel, (values.std(), expected)


@pytest.mark.parametrize("shape", [(1000, 1000), (3, 3, 64, 1024)])
def test_he_truncated_normal_has_the_he_std(shape):
    """The `auto` scheme of every SavedModel without metadata: std sqrt(2 / fan_in) of the values
    drawn (as keras HeNormal and slim's variance_scaling_initializer), not of the normal before
    truncation (which gave 0.88x)."""
    import keras

    kernel = _big_kernel(shape)
    fan_in = int(np.prod(shape[:-1]))
    he = rz.draw(kernel, rz.Reinit(scheme="he_truncated_normal"), np.random.default_rng(0), None)
    _std_within(he, np.sqrt(2.0 / fan_in))
    assert np.abs(he).max() <= 2 * np.sqrt(2.0 / fan_in) / rz.TRUNCATED_STD + 1e-12
    _std_within(keras.initializers.HeNormal(seed=0)(shape).numpy(), np.sqrt(2.0 / fan_in))  # the reference
    # the same as the model's own HeNormal initializer, drawn through scheme `own`
    kernel.initializer = {"kind": "variance_scaling", "scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"}
    _std_within(rz.draw(kernel, rz.Reinit(scheme="own"), np.random.default_rng(1), None), np.sqrt(2.0 / fan_in))


def test_truncated_normal_std_is_keras_pre_truncation_std():
    """scheme truncated_normal (schedule.std) and an own TruncatedNormal(stddev) initializer take the
    std before truncation, as keras / tf.truncated_normal_initializer do: draws have 0.88 x std."""
    import keras

    kernel = _big_kernel((1000, 1000))
    drawn = rz.draw(kernel, rz.Reinit(scheme="truncated_normal", std=0.5), np.random.default_rng(0), None)
    assert np.abs(drawn).max() <= 1.0
    _std_within(drawn, 0.5 * rz.TRUNCATED_STD)
    _std_within(keras.initializers.TruncatedNormal(stddev=0.5, seed=0)((1000, 1000)).numpy(), 0.5 * rz.TRUNCATED_STD)
    kernel.initializer = {"kind": "truncated_normal", "std": 0.1}
    _std_within(rz.draw(kernel, rz.Reinit(scheme="own"), np.random.default_rng(1), None), 0.1 * rz.TRUNCATED_STD)


@pytest.mark.parametrize("chunk", [rz.DRAW_CHUNK, 7])
def test_truncated_normal_draws_are_whole_array_rejection_sampling(monkeypatch, chunk):
    """The truncated normal draws in chunks, redraws only the values just redrawn and writes the
    variable's dtype; its values are those of the plain rule (draw the whole array in float64, redraw
    every value outside +-2 until none is, testing the whole array each round, scale, cast), bit for
    bit: a different order of draws or redraws, a redrawn value left untested, a chunk boundary
    mishandled or a cast before scaling changes every later weight. Chunks of 7 values put boundaries
    inside every shape but the scalar."""
    def whole_array_rejection(rng, shape, std, mean, dtype):
        values = rng.standard_normal(shape)
        while (outside := np.abs(values) > 2.0).any():
            values[outside] = rng.standard_normal(int(outside.sum()))
        return (values * std + mean).astype(dtype)

    monkeypatch.setattr(rz, "DRAW_CHUNK", chunk)
    for seed, shape in ((0, (300, 200)), (1, (7,)), (2, (3, 3, 8, 16)), (3, ()), (4, (0, 5))):
        for dtype in (np.float64, np.float32, np.float16):
            got = rz._truncated_normal(np.random.default_rng(seed), shape, 0.05, 0.5, dtype)
            expected = whole_array_rejection(np.random.default_rng(seed), shape, 0.05, 0.5, dtype)
            assert got.shape == shape and got.dtype == dtype and got.tobytes() == expected.tobytes()


def test_a_kernel_is_drawn_in_its_own_dtype():
    """draw() gives a float32 kernel float32 values (no float64 copy of the kernel to cast), equal
    to the float64 draw cast; a kernel of a dtype NumPy draws nothing in gets float64 values."""
    kernel = _big_kernel((40, 30))
    reinit = rz.Reinit(scheme="he_truncated_normal")
    as32 = rz.draw(kernel, reinit, np.random.default_rng(0), np.zeros((40, 30), np.float32))
    as64 = rz.draw(kernel, reinit, np.random.default_rng(0), None)
    assert as32.dtype == np.float32 and as64.dtype == np.float64
    assert as32.tobytes() == as64.astype(np.float32).tobytes()
    assert rz.draw(kernel, reinit, np.random.default_rng(0), np.zeros((40, 30), np.int32)).dtype == np.float64


def test_self_check_catches_a_change_that_compares_equal(monkeypatch):
    """A randomizer that flips +0.0 to -0.0 elsewhere changed the model, though == says equal."""
    model = wrap_keras(tiny_cnn())
    original = rz.randomize_block

    def sign_flipping(block, values):
        bias = model.block("conv1").variables[1].variable
        bias.assign(-bias.numpy())  # conv1's bias is all zeros: -0.0 == 0.0
        return original(block, values)

    assert not model.block("conv1").variables[1].variable.numpy().any()
    monkeypatch.setattr(rz, "randomize_block", sign_flipping)
    with pytest.raises(rz.RandomizationCheckError, match="conv1/bias changed"):
        with rz.Randomizer(model, rz.Reinit()).step(rz.Step(1, "logits", ("logits",))):
            pass


# -- frozen models: trainable=False is no reason to leave a weight alone ------------------------------------
def _cnn_with_state(freeze: str):
    """conv1 -> bn1 -> conv2 -> dropout (a seed generator: state, not a block) -> fc1 -> logits, frozen
    as a whole (`model.trainable = False`), as a backbone under a trainable head, or layer by layer."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if freeze == "backbone":
        backbone = keras.Model(inputs, x, name="backbone")
        backbone.trainable = False
        inputs = keras.Input((8, 8, 1), name="image")
        x = backbone(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="frozen_cnn")
    if freeze == "model":
        model.trainable = False
    if freeze == "layers":
        for name in ("conv1", "bn1", "fc1"):
            model.get_layer(name).trainable = False
    bn = model.get_layer("backbone").get_layer("bn1") if freeze == "backbone" else model.get_layer("bn1")
    bn.moving_mean.assign(np.full(4, 0.3, np.float32))  # as if trained
    return model


@pytest.mark.parametrize("freeze", ["model", "backbone", "layers"])
def test_frozen_weights_are_blocks_and_get_randomized(freeze, tmp_path):
    from harness.models import load_model

    file = tmp_path / "frozen.keras"
    _cnn_with_state(freeze).save(file)
    model = load_model({"source": str(file)}, log=lambda _: None)
    assert [b.name for b in model.blocks] == ["conv1", "bn1", "conv2", "fc1", "logits"]
    frozen = {v.name for v in model.variables if not v.trainable}
    assert {"conv1/kernel", "bn1/gamma", "bn1/moving_mean"} <= frozen  # the file kept trainable=False
    state = [v for v in model.variables if "seed_generator" in v.name]
    assert len(state) == 1 and rz.role(state[0]) == "other"
    roles = {v.name: rz.role(v) for v in model.variables}
    assert roles["conv1/kernel"] == "kernel" and roles["bn1/gamma"] == "gamma" and roles["bn1/beta"] == "bias"
    assert roles["bn1/moving_mean"] == "moving_stat"

    before = _values(model)
    randomizer = rz.Randomizer(model, rz.Reinit(seed=2))
    steps = rz.schedule_steps("cascading", [b.name for b in model.blocks])
    for step in steps[1:]:
        with randomizer.step(step):  # the self-check: every block assigned, nothing else touched
            now = _values(model)
    changed = {name for name, value in now.items() if value.tobytes() != before[name].tobytes()}
    kernels = {v.name for v in model.variables if rz.role(v) == "kernel"}
    assert kernels == {"conv1/kernel", "conv2/kernel", "fc1/kernel", "logits/kernel"} and kernels <= changed
    assert "bn1/gamma" in set(randomizer.assigned["bn1"]) and "bn1/moving_mean" not in changed  # bn_stats=keep
    assert state[0].name not in changed
    assert all(v.tobytes() == before[k].tobytes() for k, v in _values(model).items())  # restored


def test_a_model_with_nothing_to_randomize_is_an_error(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dropout(0.5, name="drop")(keras.layers.Flatten(name="flatten")(inputs))
    file = tmp_path / "weightless.keras"
    keras.Model(inputs, x, name="weightless").save(file)
    from harness.models import load_model

    with pytest.raises(HarnessError, match=r"^model weightless has no block to randomize: none of its 1 variables "
                                           r"is a weight .*seed_generator") as error:
        load_model({"source": str(file)}, log=lambda _: None)
    assert "\n" not in str(error.value)
