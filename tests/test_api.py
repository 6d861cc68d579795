"""The Python API (harness.api, docs/api.md): the CLI's config, runner and files, from a notebook."""
import os
import subprocess
import tempfile
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness
from harness.errors import HarnessError
from conftest import CHEAP_CNN, tiny_cnn

HARNESS = [sys.executable, "-c", "from harness.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda *_: None}


def _trained_tiny(steps: int = 5):
    """The tests' tiny 8x8 CNN after a few Adam steps on seeded noise (weights off their initializers)."""
    import keras

    model = tiny_cnn(seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.random((20, 8, 8, 1), np.float32), rng.integers(0, 3, 20), epochs=steps, batch_size=20, verbose=0)
    return model


def _tiny_images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).random((n, 8, 8, 1)).astype(np.float32)


def test_import_harness_imports_neither_tensorflow_nor_hydra():
    code = ("import sys, harness; harness.HarnessError; harness.sanity_check; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'hydra') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_sanity_check_leaves_the_process_alone(tmp_path):
    """The environment and TensorFlow's log levels are the commands' (tests/test_cli.py), never a
    notebook's: a whole sanity_check in a fresh process adds no variable to os.environ (the import
    included) and leaves TensorFlow's Python logger where the user had it."""
    code = ("import sys, os, logging; sys.path.insert(0, 'tests'); import numpy as np\n"
            "from conftest import tiny_cnn; os.environ.pop('TF_CPP_MIN_LOG_LEVEL')  # the test's own setting undone\n"
            "import tensorflow as tf, keras; tf.get_logger().setLevel(logging.INFO); env = dict(os.environ)\n"
            "import harness\n"

            "result = harness.sanity_check(tiny_cnn(), np.random.default_rng(0).random((2, 8, 8, 1)),\n"
            "                              controls=None, progress=False, log=lambda *_: None)\n"
            "changed = sorted(k for k in {*env, *os.environ} if env.get(k) != os.environ.get(k))\n"
            "print('runs:', len(result.scores) > 0, 'env:', changed,\n"
            "      'tf log:', logging.getLevelName(tf.get_logger().level))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**env, "HARNESS_MAP_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "runs: True env: [] tf log: INFO"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The CLI's run of the cheap CNN on two MNIST images with one method (no map cache)."""
    results = tmp_path_factory.mktemp("cli")
    done = subprocess.run([*HARNESS, f"model.source={CHEAP_CNN}", "data.count=2", "method=gradient",
                           f"results_dir={results}", "progress=false", "map_cache=false"],
                          capture_output=True, text=True, cwd=results, timeout=600)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("results: "))


@pytest.mark.slow
def test_api_and_cli_write_the_same_run_byte_for_byte(cli_run, tmp_path):
    result = harness.sanity_check(CHEAP_CNN, "mnist", methods="gradient", data__count=2, map_cache=False,
                                  results_dir=tmp_path, **QUIET)
    assert result.folder.name == cli_run.name  # the same config, so the same run key
    for name in ("scores.csv", "summary.csv", "verdicts.csv"):
        assert (result.folder / name).read_bytes() == (cli_run / name).read_bytes(), name


@pytest.mark.slow
def test_load_of_a_cli_folder_gives_its_tables(cli_run):
    from harness.results import maps_key, read_table

    result = harness.load(cli_run)
    pd.testing.assert_frame_equal(result.scores, read_table(cli_run / "scores.csv"))
    pd.testing.assert_frame_equal(result.summary, read_table(cli_run / "summary.csv"))
    assert list(result.verdicts["test"]) == list(pd.read_csv(cli_run / "verdicts.csv")["test"])
    with np.load(cli_run / "maps.npz") as archive:
        np.testing.assert_array_equal(result.maps("gradient", 3), archive[maps_key("gradient", 3)])
    assert "MPRT cascading" in repr(result) and "<pre>" in result._repr_html_()


def test_in_memory_model_and_its_keras_file_give_the_same_run(tmp_path):
    """The run key names the model by its weights and structure digests, not by its source: a model
    object and its .keras file are one run (the same folder name, the same scores.csv bytes)."""
    model = _trained_tiny()
    path = tmp_path / "tiny.keras"
    model.save(path)  # saved compiled; the file is read back with compile=False
    images = _tiny_images()
    settings = {"methods": ["gradient", "integrated_gradients"], **QUIET}
    in_memory = harness.sanity_check(model, images, results_dir=tmp_path / "memory", **settings)
    from_file = harness.sanity_check(str(path), images, results_dir=tmp_path / "file", **settings)
    assert (in_memory.record.model["source_kind"], from_file.record.model["source_kind"]) == ("memory", "keras_file")
    assert in_memory.folder.name == from_file.folder.name
    for name in ("scores.csv", "summary.csv"):
        assert (in_memory.folder / name).read_bytes() == (from_file.folder / name).read_bytes(), name
    # The file into the model object's results folder: its finished run, found (run.json not rewritten).
    again = harness.sanity_check(str(path), images, results_dir=tmp_path / "memory", **settings)
    assert again.folder == in_memory.folder and again.record.model["source_kind"] == "memory"


def test_explain_gives_the_runs_original_maps(tmp_path):
    model = _trained_tiny()
    images = _tiny_images(4)
    result = harness.sanity_check(model, images, methods=[{"name": "smoothgrad", "samples": 3}],
                                  results_dir=tmp_path, controls=None, **QUIET)
    maps = harness.explain(model, images, "smoothgrad", samples=3)
    assert maps.shape[0] == 4
    np.testing.assert_array_equal(maps, result.maps("smoothgrad", 0))


def test_temporary_folder_lives_until_close_or_save(tmp_path):
    result = harness.sanity_check(_trained_tiny(1), _tiny_images(2), controls=None, **QUIET)
    temporary = result.folder
    assert temporary.is_dir()
    saved = result.save(tmp_path / "kept")
    assert not temporary.exists() and (saved.folder / "run.json").is_file()
    assert harness.load(tmp_path / "kept").summary.equals(saved.summary)


def _cli_error(*args) -> str:
    done = subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    return done.stderr.strip().splitlines()[-1].removeprefix("harness: error: ")


@pytest.mark.parametrize("arguments, message", [
    ({"methods": ["gradient", "saliency_magic"]}, "unknown saliency method 'saliency_magic'; valid: "),
    ({"methods": "saliency_magic"}, "unknown method 'saliency_magic'; valid: "),
    ({"labels": [1, 2]}, "data.labels has 2 entries for 3 images"),
    ({"images": np.zeros((3, 8, 8, 3), np.float32)}, "image 'array_0000' has 3 channels; the model takes 1"),
    ({"images": np.zeros((8, 8), np.float32)}, "images of shape [8, 8]: give an array [N, H, W, C]"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"schedule": "sideways"}, "unknown schedule 'sideways'; valid: "),
])
def test_bad_arguments_raise_before_anything_is_written(tmp_path, arguments, message):
    arguments = {"images": _tiny_images(), **arguments}
    results = tmp_path / "results"
    with pytest.raises(HarnessError) as caught:
        harness.sanity_check(tiny_cnn(), results_dir=results, **arguments, **QUIET)
    assert str(caught.value).startswith(message)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_api_messages_are_the_clis(tmp_path):
    for api_args, cli_args in [({"methods": "saliency_magic"}, ["method=saliency_magic"]),
                               ({"seed": -1}, ["seed=-1"])]:
        with pytest.raises(HarnessError) as caught:
            harness.sanity_check(CHEAP_CNN, "mnist", results_dir=tmp_path, **api_args, **QUIET)
        assert str(caught.value) == _cli_error(*cli_args, f"results_dir={tmp_path}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two methods on the trained tiny CNN, cascading, with the random-model control."""
    result = harness.sanity_check(_trained_tiny(), _tiny_images(2), methods=["gradient", "integrated_gradients"],
                                  controls=["random_model"], results_dir=tmp_path_factory.mktemp("tiny"), **QUIET)
    return result


def test_plot_curves_is_the_reports_figure(tiny_run):
    from matplotlib.figure import Figure

    from harness.report.labels import method_label, metric_label

    figure = tiny_run.plot_curves()
    assert isinstance(figure, Figure)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    metrics = list(dict.fromkeys(tiny_run.summary.query("schedule == 'cascading'")["metric"]))
    assert sorted(ax.get_title() for ax in panels) == sorted(map(metric_label, metrics))
    steps = tiny_run.summary.query("schedule == 'cascading'")["step"].nunique()
    for ax in panels:  # per method: its curve over every step, and its random-model control level
        curves = [line for line in ax.lines if line.get_label() in {method_label("gradient"),
                                                                      method_label("integrated_gradients")}]
        assert len(curves) == 2 and all(len(line.get_xdata()) == steps for line in curves)
        assert sum(line.get_linestyle() == ":" for line in ax.lines) == 2


def test_plot_maps_is_the_reports_grid(tiny_run):
    from harness.report.labels import method_label

    figure = tiny_run.plot_maps(1, kind="signed")
    mosaic = figure.axes[0].images[0].get_array()
    steps = len(tiny_run.summary.query("schedule == 'cascading'")["step"].unique())
    assert mosaic.shape == (2 * 9 - 1, (steps + 1) * 9 - 1, 3)  # 8x8 cells, 1-pixel gaps: 2 methods x input + steps
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {method_label("gradient"), method_label("integrated_gradients"), "input"} <= texts
    assert len(figure.axes) == 2  # the mosaic and the colour bar
    np.testing.assert_allclose(mosaic[:8, :8, 0], _tiny_images(2)[1, ..., 0], atol=1e-6)  # image 1's input cell
    with pytest.raises(HarnessError, match="image 2 has no kept maps; valid: 0 to 1"):
        tiny_run.plot_maps(2)
    with pytest.raises(HarnessError, match="unknown map kind 'log'; valid: absolute, signed"):
        tiny_run.plot_maps(kind="log")


def _tf_keras_twin(model):
    """The tiny CNN rebuilt in tf-keras (Keras 2) with the Keras 3 model's weights."""
    import tf_keras

    x = inputs = tf_keras.Input((8, 8, 1), name="image")
    for layer in model.layers[1:]:
        config = {k: v for k, v in layer.get_config().items() if k in ("name", "filters", "kernel_size", "padding",
                                                                       "activation", "units")}
        x = getattr(tf_keras.layers, type(layer).__name__)(**config)(x)
    twin = tf_keras.Model(inputs, x, name="tiny_tf_keras")
    twin.set_weights(model.get_weights())
    return twin


class _Linear:
    """A tf.Module with a serving signature only (a dict output), made lazily (TensorFlow imported)."""

    @staticmethod
    def saved(path):
        import tensorflow as tf

        class Linear(tf.Module):
            def __init__(self):
                super().__init__(name="linear")
                rng = np.random.default_rng(5)
                with tf.name_scope("hidden"):
                    self.w1 = tf.Variable(rng.normal(size=(64, 6)).astype(np.float32), name="kernel")
                with tf.name_scope("logits"):
                    self.w2 = tf.Variable(rng.normal(size=(6, 3)).astype(np.float32), name="kernel")

            @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
            def serve(self, x):
                return {"scores": tf.nn.relu(tf.reshape(x, [-1, 64]) @ self.w1) @ self.w2}

        module = Linear()
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        return module


def test_tf_keras_and_loaded_savedmodel_objects_run_as_savedmodel_folders(tmp_path, monkeypatch):
    """A tf-keras model and a loaded SavedModel (serving signature only) go through the SavedModel
    loader (source kind saved_model, named after the object); their original maps are the model's."""
    import tensorflow as tf

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the exported folders go
    (tmp_path / "tmp").mkdir()
    model, images = _trained_tiny(), _tiny_images()
    twin = harness.sanity_check(_tf_keras_twin(model), images, results_dir=tmp_path / "a", controls=None, **QUIET)
    keras3 = harness.sanity_check(model, images, results_dir=tmp_path / "b", controls=None, **QUIET)
    assert (twin.record.model["source_kind"], twin.record.model["name"]) == ("saved_model", "tiny_tf_keras")
    assert [b["name"] for b in twin.record.model["blocks"]] == ["conv1", "conv2", "fc1", "logits"]
    np.testing.assert_allclose(twin.maps("gradient", 0), keras3.maps("gradient", 0), rtol=1e-5, atol=1e-7)

    module = _Linear.saved(tmp_path / "linear")
    loaded = tf.saved_model.load(str(tmp_path / "linear"))
    result = harness.sanity_check(loaded, images, results_dir=tmp_path / "c", controls=None, **QUIET)
    assert result.record.model["source_kind"] == "saved_model"
    assert [b["name"] for b in result.record.model["blocks"]] == ["hidden", "logits"]
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = module.serve(x)["scores"]
        chosen = tf.reduce_sum(logits * tf.one_hot(tf.argmax(logits, 1), 3))
    np.testing.assert_allclose(result.maps("gradient", 0), tape.gradient(chosen, x).numpy(), rtol=1e-5, atol=1e-7)
    assert not list((tmp_path / "tmp").glob("harness-model-*"))  # the exported SavedModel folders are gone


@pytest.mark.parametrize("model, message", [
    (object(), "model of type builtins.object is not one the harness takes; give a Keras 3 or tf-keras model"),
    ("tf.Module", "model of type Module has neither a serving_default signature nor a __call__ traced"),
])
def test_a_model_object_the_harness_cannot_take_is_one_line(tmp_path, model, message):
    import tensorflow as tf

    model = tf.Module() if model == "tf.Module" else model
    with pytest.raises(HarnessError) as caught:
        harness.sanity_check(model, _tiny_images(), results_dir=tmp_path / "results", **QUIET)
    assert str(caught.value).startswith(message)
    assert "a source string (a model config name, builtin:NAME" in str(caught.value)
    assert not list(tmp_path.rglob("*"))
