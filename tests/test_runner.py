"""The runner on a tiny SavedModel: controls, resume after kill -9, sweeps, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness import runner
from harness.config import CONFIG_DIR
from harness.errors import HarnessError

from conftest import tiny_cnn, wrap_keras

HARNESS = [sys.executable, "-c", "from harness.cli import main; main()"]


@pytest.fixture
def image_folder(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        io.imsave(folder / f"img{i}.png", (rng.uniform(0, 1, (8, 8)) * 255).astype(np.uint8), check_contrast=False)
    return folder


def tiny_overrides(saved_model, folder, results):
    return ["model=hub", f"model.source={saved_model}", "data=folder", f"data.path={folder}",
            f"results_dir={results}", "progress=false"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_controls_and_summary(tmp_path, tiny_saved_model, image_folder):
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r")), log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    controls = scores[scores["schedule"] == "control"]
    assert set(controls["block"]) == {"ceiling", "random_model", "random_mask"}
    assert (controls["step"] == -1).all()
    ceiling = controls[(controls["block"] == "ceiling") & controls["metric"].str.startswith("spearman")]
    assert np.allclose(ceiling["value"], 1.0)  # the gradient is deterministic: its ceiling is 1
    mask = controls[(controls["block"] == "random_mask") & (controls["metric"] == "spearman_signed")]
    assert mask["value"].abs().mean() < 0.3
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary.columns) == ["model", "method", "schedule", "step", "block", "metric", "n", "mean", "sd",
                                     "se", "ci_low", "ci_high", "n_degenerate"]
    row = summary[(summary["step"] == 1) & (summary["metric"] == "spearman_abs")].iloc[0]
    values = scores[(scores["step"] == 1) & (scores["metric"] == "spearman_abs")]["value"]
    assert row["n"] == 6 and np.isclose(row["mean"], values.mean()) and row["ci_low"] <= row["mean"] <= row["ci_high"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["model"]["name"] == "tiny" and record["trace_counts"]["gradient/logit"] == 1
    assert record["versions"]["tensorflow"].startswith("2.21")
    with np.load(run_dir / "maps.npz") as maps:
        assert maps["gradient/004"].shape == (6, 8, 8, 1) and list(maps["blocks"])[1] == "logits"


def test_each_model_state_is_visited_once(tmp_path, tiny_saved_model, image_folder, monkeypatch):
    """All methods run at a step before the next step: one randomization per schedule step and two
    for the random_model control, however many methods there are."""
    from harness.randomization import Randomizer

    visited = []
    real_step = Randomizer.step

    def counting_step(self, step):
        visited.append(step.block)
        return real_step(self, step)

    monkeypatch.setattr(Randomizer, "step", counting_step)
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), "methods=[gradient,{name:smoothgrad,samples:2}]"),
                        log=lambda _: None)
    steps = json.loads((run_dir / "run.json").read_text())["schedule"]["steps"]
    assert visited == [s["block"] for s in steps] + ["random_model_10001", "random_model_10002"]
    assert set(pd.read_csv(run_dir / "scores.csv")["method"]) == {"gradient", "smoothgrad"}


def test_run_killed_at_any_point_resumes_to_identical_scores(tmp_path, tiny_saved_model, image_folder):
    path, _ = tiny_saved_model
    from skimage import io
    for i in range(6, 150):  # enough images that the run is still going when it is killed
        io.imsave(image_folder / f"img{i}.png", np.full((8, 8), i, np.uint8), check_contrast=False)
    killed = tmp_path / "killed"
    job = subprocess.Popen([*HARNESS, *tiny_overrides(path, image_folder, killed)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob("runs/*/parts/s001-*.csv")):
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    run_dir = next(killed.glob("runs/*"))
    assert not (run_dir / "scores.csv").exists(), "the run finished before it could be killed"
    for part in (run_dir / "parts").glob("*.csv"):
        pd.read_csv(part)  # every committed part parses
    resumed = runner.run(config(*tiny_overrides(path, image_folder, killed)), log=lambda _: None)
    fresh = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "fresh")), log=lambda _: None)
    assert resumed.name == fresh.name
    assert (resumed / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes()


def test_sweep_merges_jobs(tmp_path, tiny_saved_model, image_folder):
    path, _ = tiny_saved_model
    done = subprocess.run([*HARNESS, "-m", "schedule=cascading,independent", "controls=[]",
                           *tiny_overrides(path, image_folder, tmp_path / "r")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sweep = Path(done.stdout.strip().splitlines()[-1].removeprefix("sweep results: "))
    merged = pd.read_csv(sweep / "scores.csv")
    assert set(merged["schedule"]) == {"cascading", "independent"}
    assert len(pd.read_csv(sweep / "summary.csv")) == 2 * 5 * 4


@pytest.mark.parametrize("extra, message", [
    (["metrics.metrics=[spearman_abs,sharpness]"], "unknown metric 'sharpness'"),
    (["controls=[placebo]"], "unknown control 'placebo'; valid: ceiling, random_model, random_mask"),
    (["methods=[gradient,magic]"], "unknown method 'magic'"),
])
def test_bad_settings(tmp_path, tiny_saved_model, image_folder, extra, message):
    path, _ = tiny_saved_model
    with pytest.raises(HarnessError, match=message):
        runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), *extra), log=lambda _: None)
    assert not list((tmp_path / "r").rglob("*.csv"))


def test_empty_folder_and_broken_image(tmp_path, tiny_saved_model, image_folder):
    path, _ = tiny_saved_model
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HarnessError, match=f"data.path '{empty}' contains no images"):
        runner.run(config(*tiny_overrides(path, empty, tmp_path / "r")), log=lambda _: None)
    (image_folder / "broken.png").write_text("this is not a PNG")
    with pytest.raises(HarnessError, match="image '.*broken.png' does not decode"):
        runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r")), log=lambda _: None)


def test_nan_model_output_stops_the_run(tmp_path, images8):
    from harness.data import ImageSet

    model = wrap_keras(tiny_cnn())
    bias = model.block("logits").variables[1].variable
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    plan = runner.Plan.from_config(config(f"results_dir={tmp_path}", "progress=false"))
    images = ImageSet(images8, [f"i{i}" for i in range(len(images8))])
    with pytest.raises(HarnessError, match="produced NaN/inf logits at step 0"):
        runner.Runner(plan, model, images, tmp_path / "run", print).execute()
    assert not (tmp_path / "run" / "scores.csv").exists()
