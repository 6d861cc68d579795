"""The end-to-end slice and the command line: `harness ...` writes scores.csv; mistakes are one line."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness import runner
from harness.cli import CONFIG_DIR
from harness.errors import HarnessError
from conftest import CHEAP_CNN

HARNESS = [sys.executable, "-c", "from harness.cli import main; main()"]


def config(*overrides):
    """The default config (the built-in CNN as an early snapshot, unless the overrides name a model)."""
    if not any(o.startswith(("model=", "model.source=")) for o in overrides):
        overrides = (f"model.source={CHEAP_CNN}", *overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_slice_writes_scores(tmp_path):
    run_dir = runner.run(config("data.count=3", f"results_dir={tmp_path}", "progress=false"), log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    assert set(scores.loc[scores["schedule"] == "control", "block"]) == {"ceiling", "random_model", "random_mask"}
    scores = scores[scores["schedule"] != "control"]
    for column in ("model", "method", "schedule", "step", "block", "image_id", "target_class", "metric", "value"):
        assert column in scores.columns
    assert list(scores["block"].drop_duplicates()) == ["original", "logits", "fc1", "conv2", "conv1"]
    assert set(scores["metric"]) >= {"spearman_abs", "spearman_signed"}
    assert len(scores) == 5 * 3 * 4  # steps x images x metrics
    original = scores[scores["step"] == 0]
    assert (original.loc[original["metric"].str.startswith("spearman"), "value"] == 1.0).all()
    assert scores.loc[scores["step"] == 4, "value"].abs().max() < 0.9  # a random network draws other maps
    assert (scores["model"] == "mnist_cnn").all() and (scores["schedule"] == "cascading").all()
    for name in ("summary.csv", "maps.npz", "run.json"):
        assert (run_dir / name).is_file()
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_same_config_twice_gives_identical_scores(tmp_path):
    first = runner.run(config("data.count=2", f"results_dir={tmp_path / 'a'}", "progress=false"), log=lambda _: None)
    second = runner.run(config("data.count=2", f"results_dir={tmp_path / 'b'}", "progress=false"), log=lambda _: None)
    assert (first / "scores.csv").read_bytes() == (second / "scores.csv").read_bytes()


def test_saved_model_folder_through_the_runner(tmp_path, tiny_saved_model):
    from skimage import data as photos, io

    path, _ = tiny_saved_model
    folder = tmp_path / "images"
    folder.mkdir()
    io.imsave(folder / "camera.png", photos.camera())  # grayscale, resized to 8x8 by the harness
    cfg = config("model=hub", f"model.source={path}", "data=folder", f"data.path={folder}",
                 f"results_dir={tmp_path}", "progress=false", "schedule=independent")
    scores = pd.read_csv(runner.run(cfg, log=lambda _: None) / "scores.csv")
    assert set(scores["model"]) == {"tiny"} and scores["step"].max() == 4


@pytest.mark.parametrize("overrides, message", [
    (["model.blocks.names=[conv1,nope]"], "block 'nope' matches no variable of mnist_cnn"),
    (["schedule.scheme=gaussian"], "unknown schedule.scheme 'gaussian'; valid: auto, own"),
    (["schedule.name=sideways"], "unknown schedule.name 'sideways'; valid: cascading"),
    (["data=photos"], "image 'chelsea' has 3 channels; the model takes 1"),
    (["target=best"], "unknown target 'best'; valid: predicted, original, label"),
    (["model.source=/no/such/model"], "model source '/no/such/model' does not resolve"),
    (["data=folder", "data.path=/no/such/folder"], "data.path '/no/such/folder' does not exist"),
])
def test_bad_input_raises_one_clear_error(tmp_path, overrides, message):
    with pytest.raises(HarnessError, match=message):
        runner.run(config(*overrides, f"results_dir={tmp_path}", "progress=false"), log=lambda _: None)
    assert not list(tmp_path.rglob("*.csv"))


def test_unwritable_results_folder(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(HarnessError, match="is not writable"):
        runner.run(config(f"results_dir={blocked / 'sub'}", "progress=false"), log=lambda _: None)


def _cli(*args, cwd):
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize("arg, message", [
    ("model=mnist_resnet", "harness: error: unknown model 'mnist_resnet'; valid: deeplabv3plus_resnet50, hub, "
                           "inception_v3, inception_v3_hub, keras_file, mnist_cnn"),
    ("schedule=_base", "harness: error: unknown schedule '_base'; valid: bottom_up, cascading, "),  # a building block
    ("method=gradient,saliency_magic", "harness: error: unknown method 'saliency_magic'; valid: "),
    ("schedule=sideways", "harness: error: unknown schedule 'sideways'; valid: bottom_up, cascading, data_randomization, independent"),
    ("model.source=/no/such/model", "harness: error: model source '/no/such/model' does not resolve"),
])
def test_cli_mistakes_are_one_line_and_exit_2(tmp_path, arg, message):
    done = _cli(arg, f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness:")]
    assert errors == [errors[0]] and errors[0].startswith(message), done.stderr
    assert not list((tmp_path).rglob("*.csv"))


@pytest.mark.parametrize("count", ["0", "-3"])
def test_cli_bad_data_count_is_one_line_and_no_run_folder(tmp_path, count):
    done = _cli(f"data.count={count}", f"results_dir={tmp_path / 'results'}", "progress=false", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness:")]
    assert errors == [f"harness: error: data.count must be a whole number of images >= 1 (or null for all of "
                      f"them), got {count}"], done.stderr
    assert not (tmp_path / "results").exists() and not list(tmp_path.rglob("*.csv"))


def test_cli_prints_the_run_folder_last(tmp_path):
    done = _cli("data.count=2", f"model.source={CHEAP_CNN}", f"results_dir={tmp_path / 'results'}",
                "progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("results: ")
    assert (Path(last.removeprefix("results: ")) / "scores.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no Hydra log in the working directory


def test_cli_layers_lists_blocks(tmp_path):
    done = _cli("layers", "model=mnist_cnn", f"model.source={CHEAP_CNN}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fc1/kernel" in done.stdout and "[3136, 1024]" in done.stdout and "3,212,288 parameters" in done.stdout


def test_help_names_the_program_and_starts_with_three_commands(tmp_path):
    done = _cli("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("harness: ") and "Hydra" not in lines[0]
    commands = [line.split()[:3] for line in lines[1:8] if line.startswith("  harness ")]
    assert [c[1] for c in commands] == ["model=mnist_cnn", "layers", "experiment=cascading_cnn"], lines[:8]
    options = dict(line.split(": ", 1) for line in lines if line.split(":")[0] in ("model", "schedule", "experiment")
                   and ": " in line)
    assert "vgg16" in options["model"] and "_base" not in options["model"] + options["schedule"]
    assert "_mnist_methods" not in options["experiment"]
    shown = _cli("--help", "model=resnet50", cwd=tmp_path).stdout  # the config the overrides compose
    assert "source: keras_applications:ResNet50" in shown and "gradcam_endpoint: conv5_block3_out" in shown
    assert sorted(p.name for p in tmp_path.iterdir()) == []


TENSORFLOW_NOISE = ("cudart_stub", "cuInit", "absl::InitializeLog", "oneDNN custom operations")


def test_commands_print_no_tensorflow_start_up_noise(tmp_path, tiny_saved_model):
    """A user sees the harness's lines only: TensorFlow's C++ start-up chatter is silenced (it is
    written before TF_CPP_MIN_LOG_LEVEL is read), in the CLI and in `harness.reproduce`."""
    path, _ = tiny_saved_model
    layers = subprocess.run([*HARNESS, "layers", "model=hub", f"model.source={path}"],
                            capture_output=True, text=True, timeout=300)
    assert layers.returncode == 0, layers.stderr
    assert "logits" in layers.stdout
    reproduce = subprocess.run([sys.executable, "-m", "harness.reproduce", "nonsense"],
                               capture_output=True, text=True, timeout=300)
    assert reproduce.returncode == 2 and "unknown experiment 'nonsense'" in reproduce.stderr
    for output in (layers.stderr, reproduce.stderr):
        assert not [noise for noise in TENSORFLOW_NOISE if noise in output], output
