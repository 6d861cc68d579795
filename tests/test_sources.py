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


def test_variable_order_is_execution_order_not_listing_order(tiny_saved_model):
    """hub lists trainable variables first; the blocks must still run input -> output."""
    path, _ = tiny_saved_model
    model = load_model({"source": str(path), "blocks": {"names": ["logits", "conv1", "fc1", "conv2"]}})
    assert [b.name for b in model.blocks] == ["conv1", "conv2", "fc1", "logits"]


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
