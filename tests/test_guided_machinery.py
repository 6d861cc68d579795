"""Guided Backprop and named endpoints: Keras in-place swap vs SavedModel graph import.

Everything here is built in the test (tiny models, hub-style SavedModels under
tmp_path); no network. The `slow` tests cross-check Inception-scale models.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from harness.errors import HarnessError
from harness.models.backends import target_gradient
from harness.models.graph_import import ImportedGraph
from harness.models.keras_guided import guided_activations, keras_endpoint_model

# ---- helpers ----------------------------------------------------------------------------


def make_grad_fn(model: keras.Model, guided: bool = False):
    """A new tf.function (x, targets) -> d logits[i, targets[i]] / d x, as KerasBackend builds one: with
    `guided`, the ReLUs are swapped only while it traces, so it is guided on every call and the model
    and every other function stay plain."""

    def body(x, targets):
        if not guided:
            return target_gradient(lambda v: model(v, training=False), x, targets)
        with guided_activations(model):  # runs at trace time only
            return target_gradient(lambda v: model(v, training=False), x, targets)

    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
    return tf.function(body, input_signature=[spec, tf.TensorSpec([None], tf.int32)])


def make_guided_grad_fn(model: keras.Model):
    return make_grad_fn(model, guided=True)


class _HubStyle(tf.__internal__.tracking.AutoTrackable):
    """Hub-style callable export (docs/protocol.md §8.1): not tf.Module, whose `variables` has no setter."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.variables = list(model.variables)
        self.trainable_variables = list(model.trainable_variables)
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
        self.__call__ = tf.function(lambda x: model(x, training=False), input_signature=[spec])


@pytest.fixture(scope="module")
def export_hub_style(tmp_path_factory):
    """export(model) -> path of a hub-style callable SavedModel of `model`."""

    def export(model: keras.Model) -> str:
        path = str(tmp_path_factory.mktemp("hub") / model.name)
        tf.saved_model.save(_HubStyle(model), path)
        return path

    return export


def _graph_grad_fn(graph: ImportedGraph, guided: bool, endpoints=()):
    """tf.function (x, targets) -> (d logit_target / dx, endpoint values) through `graph`."""

    @tf.function(reduce_retracing=True)
    def fn(x, targets):
        logits, values = graph(x, endpoints, guided=guided)
        picked = tf.gather(logits, targets, batch_dims=1)
        return tf.gradients(picked, x)[0], values  # GradientTape cannot see imported ops

    return fn


def _timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _small_cnn(name="small_cnn") -> keras.Model:
    keras.utils.set_random_seed(1)
    inp = keras.Input((14, 14, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(16, activation="relu", name="fc1")(h)
    out = keras.layers.Dense(5, name="logits")(h)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def cnn(export_hub_style):
    model = _small_cnn()
    path = export_hub_style(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 14, 14, 1)).astype(np.float32)
    x2 = rng.normal(size=(4, 14, 14, 1)).astype(np.float32)
    targets = np.array([0, 1, 2, 4], np.int32)
    return model, path, x, x2, targets


# ---- 1. hand-derived guided gradient --------------------------------------------------


def test_guided_gradient_matches_hand_derivation(export_hub_style):
    # y = w2 . relu(W1^T x + b1); three hidden units:
    #   a: active, w2=+2 (positive upstream)  -> passes in both
    #   b: active, w2=-1 (negative upstream)  -> plain passes, guided blocks
    #   c: inactive, w2=+3                    -> blocked in both
    w1 = np.array([[1.0, 0.5, -1.0], [2.0, 1.0, -1.0], [-1.0, 0.5, 0.5]], np.float32)
    b1 = np.array([0.1, 0.2, -0.3], np.float32)
    w2 = np.array([[2.0], [-1.0], [3.0]], np.float32)
    inp = keras.Input((3,))
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(1, name="out")(hidden)
    model = keras.Model(inp, out, name="hand")
    model.get_layer("hidden").set_weights([w1, b1])
    model.get_layer("out").set_weights([w2, np.zeros(1, np.float32)])

    x = np.array([[1.0, 2.0, -1.0]], np.float32)
    pre = x @ w1 + b1
    assert pre[0, 0] > 0 and pre[0, 1] > 0 and pre[0, 2] < 0
    expected_plain = 2.0 * w1[:, 0] - 1.0 * w1[:, 1]
    expected_guided = 2.0 * w1[:, 0]
    targets = np.zeros(1, np.int32)

    plain = make_grad_fn(model)(x, targets).numpy()[0]
    guided = make_guided_grad_fn(model)(x, targets).numpy()[0]
    np.testing.assert_allclose(plain, expected_plain, rtol=1e-6)
    np.testing.assert_allclose(guided, expected_guided, rtol=1e-6)
    assert not np.allclose(plain, guided)

    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)))
    hub_guided, _ = _graph_grad_fn(graph, guided=True)(x, targets)
    np.testing.assert_allclose(hub_guided.numpy()[0], expected_guided, rtol=1e-6)


# ---- 2. Keras guided vs hub guided; plain gradient untouched ----------------------------


def test_keras_and_hub_guided_agree_and_plain_is_untouched(cnn):
    model, path, x, x2, targets = cnn
    plain_fn = make_grad_fn(model)
    plain_before = plain_fn(x, targets).numpy()
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        picked = tf.gather(model(xt, training=False), targets, batch_dims=1)
    eager_before = tape.gradient(picked, xt).numpy()

    guided_fn = make_guided_grad_fn(model)
    keras_guided = guided_fn(x, targets).numpy()
    keras_guided2 = guided_fn(x2, targets).numpy()  # later call, other values: still guided
    assert guided_fn.experimental_get_tracing_count() == 1

    # Plain gradients after the guided traces: old function, new function, eager tape.
    assert np.array_equal(plain_fn(x, targets).numpy(), plain_before)
    assert np.array_equal(make_grad_fn(model)(x, targets).numpy(), plain_before)
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        picked = tf.gather(model(xt, training=False), targets, batch_dims=1)
    assert np.array_equal(tape.gradient(picked, xt).numpy(), eager_before)
    assert not np.allclose(keras_guided, plain_before)

    for loaded in (hub.KerasLayer(path).resolved_object, tf.saved_model.load(path)):
        graph = ImportedGraph.from_saved_model(loaded)
        assert graph.relu_count == 3
        hub_guided_fn = _graph_grad_fn(graph, guided=True)
        assert _rel(hub_guided_fn(x, targets)[0], keras_guided) < 1e-5
        assert _rel(hub_guided_fn(x2, targets)[0], keras_guided2) < 1e-5
        hub_plain, _ = _graph_grad_fn(graph, guided=False)(x, targets)
        assert _rel(hub_plain, plain_before) < 1e-5


def test_hub_keras_layer_object_is_accepted(cnn):
    model, path, x, _, targets = cnn
    graph = ImportedGraph.from_saved_model(hub.KerasLayer(path))  # unwraps resolved_object
    logits, _ = tf.function(lambda v: graph(v))(x)
    np.testing.assert_allclose(logits.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


# ---- 3. ReLU6 (MobileNetV2-like) ----------------------------------------------------------


def test_relu6_layers_keras_path_equals_hub_path(export_hub_style):
    keras.utils.set_random_seed(2)
    init = keras.initializers.RandomNormal(stddev=1.0)
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(6, 3, kernel_initializer=init, name="expand")(inp)
    h = keras.layers.ReLU(max_value=6.0, name="expand_relu")(h)
    h = keras.layers.Conv2D(6, 3, kernel_initializer=init, name="project")(h)
    h = keras.layers.ReLU(6.0, name="out_relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inp, out, name="relu6_net")

    x = 3.0 * np.random.default_rng(3).normal(size=(3, 8, 8, 2)).astype(np.float32)
    targets = np.array([0, 1, 2], np.int32)
    pre = keras_endpoint_model(model, "expand")(x)[0].numpy()
    assert (pre > 6).mean() > 0.05 and (pre < 0).mean() > 0.05  # both edges of the clamp matter

    keras_guided = make_guided_grad_fn(model)(x, targets).numpy()
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)))
    assert graph.relu_count == 2
    hub_guided, _ = _graph_grad_fn(graph, guided=True)(x, targets)
    assert _rel(hub_guided, keras_guided) < 1e-5
    assert not np.allclose(keras_guided, make_grad_fn(model)(x, targets).numpy())
    with guided_activations(model) as swapped:
        assert swapped == 2
    assert "call" not in model.get_layer("expand_relu").__dict__  # override removed again


# ---- 4. live variables vs frozen graph -------------------------------------------------------


def test_live_mode_sees_variable_changes_without_retrace_and_frozen_after_refresh(cnn):
    model, path, x, _, targets = cnn
    loaded = tf.saved_model.load(path)
    live = ImportedGraph.from_saved_model(loaded, mode="live")
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, 14, 14, 1]), tf.TensorSpec([None], tf.int32)])
    def guided(v, t):
        traces.append(1)  # Python side effect: runs once per trace
        logits, _ = live(v, guided=True)
        return tf.gradients(tf.gather(logits, t, batch_dims=1), v)[0]

    kernel = next(v for v in loaded.variables if v.name.startswith("conv2/kernel"))
    snapshot = kernel.numpy()
    original = guided(x, targets).numpy()
    frozen = ImportedGraph.from_saved_model(loaded, mode="frozen")
    frozen_fn = _graph_grad_fn(frozen, guided=True)
    np.testing.assert_array_equal(frozen_fn(x, targets)[0].numpy(), original)

    kernel.assign(np.random.default_rng(5).normal(size=snapshot.shape).astype(np.float32))
    randomized = guided(x, targets).numpy()
    assert len(traces) == 1
    assert not np.allclose(randomized, original)
    # Same weights in the Keras model -> same guided map (the Keras variables are separate objects).
    keras_kernel = model.get_layer("conv2").kernel
    keras_kernel.assign(kernel.numpy())
    try:
        assert _rel(randomized, make_guided_grad_fn(model)(x, targets).numpy()) < 1e-5
    finally:
        keras_kernel.assign(snapshot)

    # Frozen: stale until refresh(), then a new trace equals the live map.
    np.testing.assert_array_equal(frozen_fn(x, targets)[0].numpy(), original)
    frozen.refresh()
    assert frozen.generation == 1
    assert _rel(_graph_grad_fn(frozen, guided=True)(x, targets)[0], randomized) < 1e-6

    kernel.assign(snapshot)
    np.testing.assert_array_equal(guided(x, targets).numpy(), original)
    assert len(traces) == 1


def _guided_map_and_warnings(path, x, targets):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = ImportedGraph.from_saved_model(tf.saved_model.load(path), mode="live")
    return graph, _graph_grad_fn(graph, guided=True)(x, targets)[0].numpy(), [str(w.message) for w in caught]


@pytest.mark.parametrize("breakage", ["helper missing", "helper computes other logits"])
def test_live_mode_falls_back_to_frozen_when_the_private_inlining_helper_fails(cnn, monkeypatch, breakage):
    """TensorFlow's private inlining helper is checked when a live graph is built: gone, or giving a graph
    that computes other logits, the graph is frozen instead, with one warning and the same map."""
    from harness.models import graph_import

    model, path, x, _, targets = cnn
    _, expected, quiet = _guided_map_and_warnings(path, x, targets)
    assert quiet == []
    real = graph_import._helper("_run_inline_graph_optimization")

    def perturbed(*args, **kwargs):  # a valid graph that computes something else: fc1 without its ReLU
        graph_def = real(*args, **kwargs)
        for node in graph_def.node:
            if node.op == "Relu" and "fc1" in node.name:
                node.op = "Identity"
        return graph_def

    broken = None if breakage == "helper missing" else perturbed
    helper = graph_import._helper
    monkeypatch.setattr(graph_import, "_helper",
                        lambda name: broken if name == "_run_inline_graph_optimization" else helper(name))
    graph, guided, warned = _guided_map_and_warnings(path, x, targets)
    assert graph.mode == "frozen"
    assert len(warned) == 1 and "using graph_mode frozen" in warned[0]
    np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-6)


# ---- 5. endpoints -----------------------------------------------------------------------------


def test_conv2_endpoint_is_its_relu_and_matches_keras(cnn):
    model, path, x, _, targets = cnn
    graph = ImportedGraph.from_saved_model(hub.KerasLayer(path).resolved_object)
    name = graph.resolve_endpoint("conv2")
    assert name.endswith("/Relu:0") and "/conv2_1/" in name  # Keras 3 scope of layer conv2
    assert graph.resolve_endpoint(name) == name  # exact tensor names pass through
    assert graph.resolve_endpoint(name[:-2]) == name  # so do op names
    _, (value,) = _graph_grad_fn(graph, guided=False, endpoints=["conv2"])(x, targets)
    layer_out, _ = keras_endpoint_model(model, "conv2")(x)
    np.testing.assert_allclose(value.numpy(), layer_out.numpy(), rtol=1e-6, atol=1e-6)

    with pytest.raises(HarnessError, match=r"'conv3'.*conv2"):
        graph.resolve_endpoint("conv3")
    with pytest.raises(HarnessError, match=r"'conv3'.*conv2"):
        keras_endpoint_model(model, "conv3")


def test_keras_uniquified_layer_names_resolve_to_the_right_layer(export_hub_style):
    # Keras 3 puts layer "block"'s ops under scope "block_1" and layer "block_1"'s
    # under "block_1_2": an exact-component match for "block_1" would be wrong.
    keras.utils.set_random_seed(4)
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(3, 3, activation="relu", name="block")(inp)
    b = keras.layers.Conv2D(3, 3, activation="relu", name="block_1")(a)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(b))
    model = keras.Model(inp, out, name="uniq")
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)))
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 1)).astype(np.float32)
    _, values = _graph_grad_fn(graph, False, endpoints=["block", "block_1"])(x, np.zeros(2, np.int32))
    for layer, value in zip(["block", "block_1"], values):
        np.testing.assert_allclose(value.numpy(), keras_endpoint_model(model, layer)(x)[0].numpy(), rtol=1e-6)


class _SlimLike(tf.__internal__.tracking.AutoTrackable):
    """TF-slim-style scopes: InceptionV3/{Mixed_7c, Logits, AuxLogits}; AuxLogits built last."""

    def __init__(self):
        rng = np.random.default_rng(7)
        self.w_mix = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32), name="InceptionV3/Mixed_7c/weights")
        self.w_log = tf.Variable(rng.normal(size=(6, 2)).astype(np.float32), name="InceptionV3/Logits/weights")
        self.w_aux = tf.Variable(rng.normal(size=(6, 2)).astype(np.float32), name="InceptionV3/AuxLogits/weights")
        self.variables = [self.w_mix, self.w_log, self.w_aux]
        self.trainable_variables = list(self.variables)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def __call__(self, x):
        with tf.name_scope("InceptionV3"):
            with tf.name_scope("Mixed_7c"):
                a = tf.nn.relu(tf.matmul(x, self.w_mix))
                mixed = tf.identity(tf.concat([a, -a], axis=1), name="output")
            with tf.name_scope("Logits"):
                logits = tf.matmul(mixed, self.w_log, name="MatMul")
            with tf.name_scope("AuxLogits"):
                aux = tf.matmul(mixed, self.w_aux, name="MatMul")
        return logits + 0.0 * aux  # keeps AuxLogits in the graph, after Logits


def test_slim_style_scopes_match_whole_components(tmp_path):
    path = str(tmp_path / "slim")
    tf.saved_model.save(_SlimLike(), path)
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(path))
    assert "AuxLogits" not in graph.resolve_endpoint("Logits")
    assert "/InceptionV3/Logits/MatMul" in graph.resolve_endpoint("Logits")
    assert "/InceptionV3/AuxLogits/MatMul" in graph.resolve_endpoint("AuxLogits")
    # The scope ends in an Identity: the ConcatV2 it forwards is preferred.
    mixed = graph.resolve_endpoint("Mixed_7c")
    assert mixed.split(":")[0] in graph.op_names() and "/Mixed_7c/concat" in mixed
    with pytest.raises(HarnessError, match=r"'Logit'.*Logits"):
        graph.resolve_endpoint("Logit")


# ---- 6. no ReLU, unsupported ReLU, eager misuse -------------------------------------------------


def test_model_without_relu_fails_clearly_in_both_paths(export_hub_style):
    keras.utils.set_random_seed(8)
    inp = keras.Input((5, 5, 1))
    h = keras.layers.Conv2D(2, 3, activation="tanh", name="conv")(inp)
    out = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(h))
    model = keras.Model(inp, out, name="tanh_net")
    x = np.ones((1, 5, 5, 1), np.float32)
    targets = np.zeros(1, np.int32)

    with pytest.raises(HarnessError, match="tanh_net has no ReLU activations"):
        make_guided_grad_fn(model)(x, targets)
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)), name="tanh_net")
    assert graph.relu_count == 0
    with pytest.raises(HarnessError, match="no Relu/Relu6 ops reachable.*tanh_net.*cannot be applied"):
        _graph_grad_fn(graph, guided=True)(x, targets)
    assert _rel(_graph_grad_fn(graph, guided=False)(x, targets)[0], make_grad_fn(model)(x, targets)) < 1e-5


@pytest.mark.parametrize("leaky, message", [
    (lambda h: keras.layers.ReLU(negative_slope=0.1, name="leaky")(h), "'leaky' is a ReLU with negative_slope=0.1"),
    (lambda h: keras.layers.LeakyReLU(0.2, name="leaky")(h), "'leaky' is a LeakyReLU"),
    (lambda h: keras.layers.Dense(3, activation="leaky_relu", name="leaky")(h), "'leaky' has activation leaky_relu"),
], ids=["relu_slope", "leaky_layer", "leaky_activation"])
def test_leaky_relu_is_one_clear_error_and_model_restored(leaky, message):
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="fc")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(leaky(h)), name="leaky_net")
    with pytest.raises(HarnessError, match=message + ".*supported: plain ReLU") as error:
        with guided_activations(model):
            pass
    assert "\n" not in str(error.value)
    assert model.get_layer("fc").activation is keras.activations.relu
    with pytest.raises(HarnessError, match=message) as error:  # through a compiled guided gradient, too
        make_guided_grad_fn(model)(np.zeros((1, 4), np.float32), np.zeros(1, np.int32))
    assert "\n" not in str(error.value)  # TensorFlow's "in user code:" trace is not part of the line


def test_leaky_relu_in_a_saved_model_is_one_clear_error(export_hub_style):
    keras.utils.set_random_seed(9)
    inp = keras.Input((5, 5, 1))
    h = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inp)
    h = keras.layers.LeakyReLU(0.2, name="leaky")(keras.layers.Flatten()(h))
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name="leaky_net")
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)), name="leaky_net")
    x, targets = np.ones((1, 5, 5, 1), np.float32), np.zeros(1, np.int32)
    with pytest.raises(HarnessError, match=r"leaky_net has LeakyRelu ops \(.*leaky.*\).*supported: Relu, Relu6") as error:
        _graph_grad_fn(graph, guided=True)(x, targets)
    assert "\n" not in str(error.value)
    assert _rel(_graph_grad_fn(graph, guided=False)(x, targets)[0], make_grad_fn(model)(x, targets)) < 1e-5


@pytest.mark.parametrize("mode", ["live", "frozen"])
def test_imported_graph_accepts_a_function_a_gradient_went_through(cnn, mode):
    model, path, x, _, targets = cnn
    loaded = tf.saved_model.load(path)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:  # TF now appends forward intermediates to the function's outputs
        tape.watch(xt)
        logits = loaded(xt)
    tape.gradient(logits, xt)
    assert len(loaded.__call__.get_concrete_function().outputs) > 1
    graph = ImportedGraph.from_saved_model(loaded, mode=mode)
    grads, _ = _graph_grad_fn(graph, guided=False)(x, targets)
    assert _rel(grads, make_grad_fn(model)(x, targets)) < 1e-5


def test_imported_graph_refuses_eager_calls(cnn):
    _, path, x, _, _ = cnn
    graph = ImportedGraph.from_saved_model(tf.saved_model.load(path))
    with pytest.raises(RuntimeError, match="inside a tf.function"):
        graph(x)


# ---- slow: Inception-scale cross-checks -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "build, size, endpoints",
    [
        # mixed9_1 / conv2d_1 collide with the Keras 3 scopes of mixed9 / conv2d.
        (lambda: keras.applications.InceptionV3(weights=None), 299, ["mixed10", "mixed9_1", "mixed9", "conv2d_1"]),
        (lambda: keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3)), 96,
         ["out_relu", "block_16_project", "block_1_expand_relu"]),
    ],
    ids=["inception_v3", "mobilenet_v2"],
)
def test_applications_keras_guided_equals_hub_guided(build, size, endpoints, export_hub_style):
    keras.backend.clear_session()  # the endpoints' auto-names (conv2d_1) count from a fresh session
    keras.utils.set_random_seed(9)
    model = build()
    x = np.random.default_rng(10).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
    targets = np.array([1, 7], np.int32)
    keras_fn = make_guided_grad_fn(model)
    keras_first, keras_guided = _timed(lambda: keras_fn(x, targets).numpy())
    keras_s = min(_timed(lambda: keras_fn(x, targets).numpy())[0] for _ in range(3)) / len(x)

    graph = ImportedGraph.from_saved_model(tf.saved_model.load(export_hub_style(model)))
    assert graph.relu_count > 0
    hub_fn = _graph_grad_fn(graph, guided=True)
    hub_first, hub_guided = _timed(lambda: hub_fn(x, targets)[0].numpy())
    hub_s = min(_timed(lambda: hub_fn(x, targets)[0].numpy())[0] for _ in range(3)) / len(x)
    rel = _rel(hub_guided, keras_guided)
    print(f"\n{model.name}: relu ops {graph.relu_count}, rel diff {rel:.2e}; first call (trace) "
          f"keras {keras_first:.2f} s, hub {hub_first:.2f} s; per image (best of 3, batch {len(x)}) "
          f"keras {keras_s:.3f} s, hub {hub_s:.3f} s")
    assert np.abs(keras_guided).max() > 0
    assert rel < 1e-5

    _, values = _graph_grad_fn(graph, guided=False, endpoints=endpoints)(x, targets)
    for name, value in zip(endpoints, values):
        assert _rel(value, keras_endpoint_model(model, name)(x)[0]) < 1e-5, name
