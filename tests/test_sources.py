"""Model sources: SavedModel folder, TF-Hub handle over HTTP (127.0.0.1), Keras files, keras.applications."""
import http.server
import tarfile
import threading

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.models import load_model

from conftest import tiny_cnn


def _same_logits(model, keras_model, images):
    np.testing.assert_allclose(model.predict(images), keras_model(images, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_saved_model_folder(tiny_saved_model, images8):
    path, keras_model = tiny_saved_model
    model = load_model({"source": str(path)})
    assert model.source_kind == "saved_model" and model.name == "tiny"
    assert [b.name for b in model.blocks] == ["conv1", "conv2", "fc1", "logits"]
    assert model.input_spec.size == (8, 8) and model.num_classes == 3
    assert model.variables[0].initializer == {"kind": "truncated_normal", "std": 0.1}
    _same_logits(model, keras_model, images8)


def _export_listing(model, path, listing):
    """Export `model` hub-style, but with its `variables` listed in the order `listing` gives."""
    import tensorflow as tf

    from harness.models.export import _HubStyle, write_metadata

    module = _HubStyle(model, tuple(model.inputs[0].shape[1:]))
    module.variables = listing(list(model.variables))
    module.trainable_variables = [v for v in module.variables if v.trainable]
    tf.saved_model.save(module, str(path))
    write_metadata(path, {"name": "tiny", "input": {"size": [8, 8], "channels": 1}})
    return path


@pytest.mark.parametrize("listing", [
    # hub.KerasLayer / TF-Hub SavedModels: trainable variables first, then the rest
    lambda vs: [v for v in vs if v.trainable] + [v for v in vs if not v.trainable],
    lambda vs: vs[::-1],
], ids=["trainable_first", "reversed"])
def test_variable_order_is_execution_order_not_listing_order(tmp_path, listing):
    """The SavedModel lists its variables out of execution order; the loader must not trust it."""
    keras_model = tiny_cnn(batch_norm=True)
    execution = [v.path for v in keras_model.variables]  # a functional model lists input -> output
    assert execution[:6] == ["conv1/kernel", "conv1/bias", "bn1/gamma", "bn1/beta", "bn1/moving_mean",
                             "bn1/moving_variance"]
    path = _export_listing(keras_model, tmp_path / "tiny", listing)
    import tensorflow_hub as hub

    listed = [v.name.split(":")[0] for v in hub.load(str(path)).variables]
    assert listed != execution and sorted(listed) == sorted(execution)  # the test's premise
    model = load_model({"source": str(path), "blocks": {"names": ["logits", "conv1", "fc1", "conv2", "bn1"]}},
                       log=lambda _: None)
    # input -> output, layer by layer: a layer's variables together (trainable-first listing puts
    # bn1's moving statistics after the logits), in the order the forward pass runs them.
    layers = [v.name.split("/")[0] for v in model.variables]
    assert [layer for i, layer in enumerate(layers) if i == 0 or layers[i - 1] != layer] == [
        "conv1", "bn1", "conv2", "fc1", "logits"]
    assert sorted(v.name for v in model.variables) == sorted(execution)
    assert [b.name for b in model.blocks] == ["conv1", "bn1", "conv2", "fc1", "logits"]
    assert [b.name for b in load_model({"source": str(path)}, log=lambda _: None).blocks] == [
        "conv1", "bn1", "conv2", "fc1", "logits"]


# -- slim-converted SavedModels: every variable under one root scope --------------------------------------
def _slim_style_saved_model(path, root: str, layers: list[str]):
    """A SavedModel whose variables are named like a slim-converted TF-Hub model (`root/layer/weights`),
    one dense layer per name, 2 x 2 x 1 input -> 3 logits."""
    import tensorflow as tf

    class SlimStyle(tf.__internal__.tracking.AutoTrackable):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            sizes = [4] + [5] * (len(layers) - 1) + [3]
            self.weights = [tf.Variable(rng.normal(size=(a, b)).astype(np.float32), name=f"{root}/{layer}/weights")
                            for layer, a, b in zip(layers, sizes[:-1], sizes[1:])]
            self.biases = [tf.Variable(np.zeros(b, np.float32), name=f"{root}/{layer}/biases")
                           for layer, b in zip(layers, sizes[1:])]
            self.variables = [v for pair in zip(self.weights, self.biases) for v in pair]

        @tf.function(input_signature=[tf.TensorSpec([None, 2, 2, 1], tf.float32)])
        def __call__(self, x):
            x = tf.reshape(x, [-1, 4])
            for w, b in zip(self.weights, self.biases):
                x = tf.matmul(x, w) + b
            return x

    tf.saved_model.save(SlimStyle(), str(path))
    return path


def test_shared_root_scope_is_skipped_at_depth_one(tmp_path):
    layers = ["conv1", "block1", "block2", "logits"]
    path = _slim_style_saved_model(tmp_path / "resnet", "resnet_v2_50", layers)
    lines = []
    model = load_model({"source": str(path), "blocks": {"depth": 1}}, log=lines.append)
    assert [b.name for b in model.blocks] == layers  # not one block "resnet_v2_50"
    assert model.block("block1").variables[0].name == "resnet_v2_50/block1/weights"
    assert lines == []


def test_fewer_than_three_blocks_warns_once(tmp_path):
    path = _slim_style_saved_model(tmp_path / "shallow", "MobilenetV2", ["Conv", "Logits"])
    lines = []
    model = load_model({"source": str(path), "name": "shallow"}, log=lines.append)
    assert [b.name for b in model.blocks] == ["Conv", "Logits"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("warning: model shallow has only 2 blocks (Conv, Logits)")
    assert "model.blocks.depth" in lines[0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _QuietHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hub_handle_over_http(tiny_saved_model, http_server, tmp_path, monkeypatch, images8):
    path, keras_model = tiny_saved_model
    root, url = http_server
    with tarfile.open(root / "tiny.tar.gz", "w:gz") as tar:
        for item in path.iterdir():
            tar.add(item, arcname=item.name)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    model = load_model({"source": f"{url}/tiny.tar.gz", "input": {"size": [8, 8], "channels": 1}})
    assert model.source_kind == "hub" and model.identity == f"{url}/tiny.tar.gz"
    assert any((tmp_path / "hub-cache").iterdir())  # tensorflow_hub's own cache was used
    _same_logits(model, keras_model, images8)


def test_hub_handle_that_does_not_resolve(http_server, tmp_path, monkeypatch):
    _, url = http_server
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    with pytest.raises(HarnessError, match=f"TF-Hub handle '{url}/missing.tar.gz' could not be resolved"):
        load_model({"source": f"{url}/missing.tar.gz"})


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file(tmp_path, suffix, images8):
    keras_model = tiny_cnn()
    file = tmp_path / f"tiny{suffix}"
    keras_model.save(file)
    model = load_model({"source": str(file)})
    assert model.source_kind == "keras_file"
    assert [b.name for b in model.blocks] == ["conv1", "conv2", "fc1", "logits"]
    _same_logits(model, keras_model, images8)


def test_keras_applications_random_weights():
    model = load_model({"source": "keras_applications:MobileNetV2", "input": {"size": [32, 32], "channels": 3}})
    assert model.num_classes == 1000 and model.input_spec.size == (32, 32)
    assert model.blocks[0].name == "Conv1" and model.blocks[-1].name == "predictions"


@pytest.mark.parametrize("source, message", [
    ("builtin:mnist_resnet", "unknown built-in model 'mnist_resnet'; valid: mnist_cnn"),
    ("keras_applications:NoSuchNet", "unknown keras.applications model 'NoSuchNet'; valid: "),
    ("/nonexistent/model", "model source '/nonexistent/model' does not resolve"),
    ("/nonexistent/model.keras", "no such Keras file"),
    ("", "model.source is empty"),
])
def test_bad_sources(source, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_model({"source": source})


def test_folder_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(HarnessError, match="is a folder without saved_model.pb"):
        load_model({"source": str(tmp_path)})


def test_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "bogus.keras"
    bogus.write_bytes(b"not a zip file")
    with pytest.raises(HarnessError, match="is not a loadable Keras model"):
        load_model({"source": str(bogus)})


def test_model_whose_output_is_not_a_logit_vector(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs))
    file = tmp_path / "segmenter.keras"
    model.save(file)
    with pytest.raises(HarnessError, match=r"outputs shape \[1, 6, 6, 2\], not a \[batch, classes\] logit vector"):
        load_model({"source": str(file)})


def test_unknown_block_name_lists_nearest(tiny_saved_model):
    path, _ = tiny_saved_model
    with pytest.raises(HarnessError, match="block 'conv3' matches no variable of tiny; nearest scope names: conv"):
        load_model({"source": str(path), "blocks": {"names": ["conv3"]}})
