"""harness.cache's map key: it covers the code and the model structure that shape a map."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from harness import cache, runner
from harness.models import load_model
from harness.models.backends import Backend
from harness.models.export import export_hub_style

from conftest import tiny_cnn, wrap_keras
from test_runner import config, image_folder, tiny_overrides  # noqa: F401 - image_folder: a fixture


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the installed harness package that code_digest reads instead of the real one."""
    copy = tmp_path / "harness"
    shutil.copytree(Path(cache.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "__file__", str(copy / "cache.py"))
    cache.code_digest.cache_clear()
    yield copy
    cache.code_digest.cache_clear()  # the real package's digest again for the tests after this one


def test_code_digest_covers_code_outside_the_kernels_and_models(package_copy):
    """The segmentation reduction (harness/segmentation.py) shapes a segmenter's maps: editing it is
    another key. Red when only methods/ and models/ are hashed."""
    parts = {"method": "gradient"}
    before = cache.map_key(parts)
    for name in ("segmentation.py", "runner.py"):
        source = package_copy / name
        source.write_text(source.read_text() + "\n# edited\n")
        cache.code_digest.cache_clear()
        after = cache.map_key(parts)
        assert after != before, name
        before = after


def _variant(activation: str):
    """tiny_cnn with conv1's activation swapped, the weights of tiny_cnn(seed=0)."""
    x = inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation=activation, name="conv1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="tiny_cnn")
    model.set_weights(tiny_cnn().get_weights())
    return model


@pytest.fixture
def two_structures(tmp_path):
    """The same weights in two graphs, each as a Keras file and as a SavedModel: {kind: (path, path)}."""
    paths = {"keras": [], "saved_model": []}
    for activation in ("relu", "tanh"):
        model = _variant(activation)
        keras_file = tmp_path / f"{activation}.keras"
        model.save(keras_file)
        paths["keras"].append(str(keras_file))
        paths["saved_model"].append(str(export_hub_style(model, tmp_path / activation, {
            "name": "tiny", "input": {"size": [8, 8], "channels": 1, "value_range": [0.0, 1.0]}})))
    return paths


def test_same_weights_in_another_graph_is_another_key(two_structures):
    """A Keras file or a SavedModel with the same weights and another activation: the same weights
    digest (all the key held of the model besides its source kind), another structure digest.
    Red when the structure is left out of the key."""
    for kind, (relu, tanh) in two_structures.items():
        a, b = (load_model({"source": path}, log=lambda _: None) for path in (relu, tanh))
        assert runner.weights_digest(a) == runner.weights_digest(b), kind
        assert cache.structure_digest(a) != cache.structure_digest(b), kind


def test_the_same_model_loaded_again_is_the_same_key(two_structures, tiny_saved_model):
    """Loading again (in this process and in another) gives the same structure digest: a SavedModel's
    functions and a trace's placeholders are named anew on each load, and must not count. A Keras
    model built again in code has the same config, and so has the same graph exported twice. Red when names are hashed as they are."""
    paths = [two_structures["keras"][0], two_structures["saved_model"][0], str(tiny_saved_model[0])]
    here = [[cache.structure_digest(load_model({"source": p}, log=lambda _: None)) for p in paths] for _ in range(2)]
    assert here[0] == here[1]
    assert here[0][1] == here[0][2] != here[0][0]  # two exports of one graph; a Keras file is hashed otherwise
    forward_only = [wrap_keras(tiny_cnn()) for _ in range(2)]
    for model in forward_only:
        model.backend = Backend()  # known only by its forward pass: its traced graph's digest
    assert cache.structure_digest(forward_only[0]) == cache.structure_digest(forward_only[1])
    assert cache.structure_digest(wrap_keras(tiny_cnn())) == cache.structure_digest(wrap_keras(tiny_cnn()))
    script = ("import json, sys; from harness import cache; from harness.models import load_model; "
              "print(json.dumps([cache.structure_digest(load_model({'source': p}, log=lambda _: None)) "
              "for p in sys.argv[1:]]))")
    other = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-2000:]
    assert json.loads(other.stdout.strip().splitlines()[-1]) == here[0]


def test_a_run_on_another_graph_computes_its_own_maps(tmp_path, two_structures, image_folder):  # noqa: F811
    """End to end: a run on the tanh Keras file after one on the relu file (same weights) does not
    read the relu model's maps; a second run on the relu file does. Red when the map key holds no
    structure."""
    def cached(path, results):
        # target=label: the same classes explained whatever the two models predict
        cfg = config(*tiny_overrides(path, image_folder, tmp_path / results), "controls=[]", "schedule=independent",
                     "target=label", "data.labels=[0,1,2,0,1,2]")
        record = json.loads((runner.run(cfg, log=lambda _: None) / "run.json").read_text())
        return record["computations"][0].get("cached_original_maps")

    relu, tanh = two_structures["keras"]
    assert cached(relu, "a") is None
    assert cached(tanh, "b") is None
    assert cached(relu, "c") == ["gradient"]
