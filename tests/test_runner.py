"""The runner on a tiny SavedModel: controls, resume after kill -9, sweeps, bad input."""
import dataclasses
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
from harness.controls import RANDOM_MODEL_DRAWS
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
    assert list(summary.columns) == ["model", "method", "variant", "schedule", "step", "block", "metric", "n", "mean",
                                     "sd", "se", "ci_low", "ci_high", "n_degenerate", "n_flagged"]
    row = summary[(summary["step"] == 1) & (summary["metric"] == "spearman_abs")].iloc[0]
    values = scores[(scores["step"] == 1) & (scores["metric"] == "spearman_abs")]["value"]
    assert row["n"] == 6 and np.isclose(row["mean"], values.mean()) and row["ci_low"] <= row["mean"] <= row["ci_high"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["model"]["name"] == "tiny" and record["trace_counts"]["gradient/logit"] == 1
    assert record["model"]["recipe"] == {"architecture": "tiny", "learning_rate": 1e-3}  # how it was trained
    assert record["versions"]["tensorflow"].startswith("2.21")
    with np.load(run_dir / "maps.npz") as maps:
        assert maps["gradient/004"].shape == (6, 8, 8, 1) and list(maps["blocks"])[1] == "logits"


def test_each_model_state_is_visited_once(tmp_path, tiny_saved_model, image_folder, monkeypatch):
    """All methods run at a step before the next step: one randomization per schedule step and two
    for the random_model control, however many methods there are."""
    from harness.schedules import Randomizer

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


def test_each_map_is_post_processed_once_and_step_0_reuses_the_originals(tmp_path, tiny_saved_model, image_folder,
                                                                        monkeypatch):
    """Scoring computes each map's forms once (counted on the HOG form): the original maps once for
    the whole run, and at step 0, where they are compared with themselves, not a second time, nor in
    the ceiling control, whose maps of a deterministic method (gradient) are the originals' bytes;
    every other state's maps once (the random_model control's two models both)."""
    import dataclasses

    from harness.metrics import FORMS

    computed = []
    hog = FORMS["hog"]
    monkeypatch.setitem(FORMS, "hog", dataclasses.replace(
        hog, compute=lambda maps, settings: (computed.append(len(maps)), hog.compute(maps, settings))[1]))
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r")), log=lambda _: None)
    steps = json.loads((run_dir / "run.json").read_text())["schedule"]["steps"]
    images = 6
    # originals + steps 1.. + random_model (two fresh models) + random_mask; the ceiling's are the originals
    assert sum(computed) == images * (1 + (len(steps) - 1) + 2 + 1)
    scores = pd.read_csv(run_dir / "scores.csv")
    assert np.allclose(scores[scores["step"] == 0]["value"], 1.0)  # each original map against itself


def test_run_killed_at_any_point_resumes_to_identical_scores(tmp_path, tiny_saved_model, image_folder):
    path, _ = tiny_saved_model
    from skimage import io
    for i in range(6, 150):  # enough images that the run is still going when it is killed
        io.imsave(image_folder / f"img{i}.png", np.full((8, 8), i, np.uint8), check_contrast=False)
    killed = tmp_path / "killed"
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as errors:
        job = subprocess.Popen([*HARNESS, *tiny_overrides(path, image_folder, killed)],
                               stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None and not list(killed.glob("runs/*/parts/s001-*.csv")):
            time.sleep(0.02)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    started = list(killed.glob("runs/*"))
    assert started, f"the job wrote no run folder (exit {job.returncode}): {stderr.read_text()[-2000:]}"
    run_dir = started[0]
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
    (["controls=[placebo]"], "controls must be null or a list of values, each one of ceiling, random_model, "
                             "random_mask, random_logit, got \\['placebo'\\]"),
    (["methods=[gradient,magic]"], "unknown saliency method 'magic'"),
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


# -- the classes explained (review items 2 and 3) ----------------------------------------------------
class ExplainedClasses:
    """Records the classes every `_maps` call explains, by model state."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, list[np.ndarray]] = {}
        real = runner.Runner.maps

        def spy(runner_self, method, step, targets):
            self.calls.setdefault(step.block, []).append(np.array(targets))
            return real(runner_self, method, step, targets)
        monkeypatch.setattr(runner.Runner, "maps", spy)


def trained_argmax(saved_model, run_dir):
    from harness.models import load_model

    record = json.loads((run_dir / "run.json").read_text())
    model = load_model(record["config"]["model"], log=lambda _: None)
    images = np.load(run_dir / "maps.npz")["images"]
    return np.argmax(model.predict(model.input_spec.to_model_space(images)), axis=1)


def test_reference_maps_explain_the_label_when_target_is_label(tmp_path, tiny_saved_model, image_folder, monkeypatch):
    """target=label: the step-0 maps that every step is compared with explain the label, and the
    rows say so (they explained the trained model's argmax while the rows said 'label')."""
    path, _ = tiny_saved_model
    spy = ExplainedClasses(monkeypatch)
    first = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "probe"), "controls=[]"),
                       log=lambda _: None)
    argmax = trained_argmax(path, first)
    labels = (argmax + 1) % 3  # every image's label differs from its prediction
    spy.calls.clear()
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), "target=label",
                                f"data.labels=[{','.join(map(str, labels))}]"), log=lambda _: None)
    for block, calls in spy.calls.items():
        for targets in calls:
            np.testing.assert_array_equal(targets, labels, err_msg=f"maps at {block} explain other classes")
    scores = pd.read_csv(run_dir / "scores.csv")
    explained = scores[scores["block"] != "random_mask"]
    by_image = dict(zip(sorted(p.name for p in image_folder.iterdir()), labels))
    assert (explained["target_class"] == explained["image_id"].map(by_image)).all()
    assert (scores["reference_class"] == scores["image_id"].map(by_image)).all()
    with np.load(run_dir / "maps.npz") as maps:
        from harness.models import load_model
        model = load_model(json.loads((run_dir / "run.json").read_text())["config"]["model"], log=lambda _: None)
        x = model.input_spec.to_model_space(maps["images"])
        expected = runner.method_registry.get("gradient")(model, x, labels.astype(np.int32), None, {})
        np.testing.assert_allclose(maps["gradient/000"], expected, rtol=1e-6)


@pytest.mark.parametrize("target", ["original", "predicted"])
def test_random_model_control_follows_the_target_rule(tmp_path, tiny_saved_model, image_folder, monkeypatch, target):
    """The random_model floor explains the classes the run's rule picks (original: the trained model's
    argmax; predicted: each random model's own), and its rows record them."""
    path, _ = tiny_saved_model
    spy = ExplainedClasses(monkeypatch)
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), f"target={target}",
                                "controls=[random_model]"), log=lambda _: None)
    argmax = trained_argmax(path, run_dir)
    a, b = (spy.calls[f"random_model_{i}"][0] for i in RANDOM_MODEL_DRAWS)
    if target == "original":
        np.testing.assert_array_equal(a, argmax)
        np.testing.assert_array_equal(b, argmax)
    rows = pd.read_csv(run_dir / "scores.csv").query("block == 'random_model'").drop_duplicates("image_id")
    np.testing.assert_array_equal(rows["target_class"], b)
    np.testing.assert_array_equal(rows["reference_class"], a)


# -- several entries of one method (item 4) -----------------------------------------------------------
def test_two_entries_of_one_method_are_two_variants(tmp_path, tiny_saved_model, image_folder):
    from harness.report import build_report

    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r" / "variants"), "controls=[ceiling]",
                                "methods=[{name:integrated_gradients,steps:3},{name:integrated_gradients,steps:5}]"),
                         log=lambda _: None)
    report = build_report(tmp_path / "r").read_text()
    assert "integrated_gradients[steps=3]" in report and "integrated_gradients[steps=5]" in report
    scores = pd.read_csv(run_dir / "scores.csv")
    assert set(scores["method"]) == {"integrated_gradients"}
    assert set(scores["variant"]) == {"integrated_gradients[steps=3]", "integrated_gradients[steps=5]"}
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary["n"] == 6).all() and len(summary) == 2 * 6 * 4  # 2 variants x (5 steps + ceiling) x 4 metrics
    steps3, steps5 = (scores[(scores["variant"] == f"integrated_gradients[steps={k}]") & (scores["step"] == 4)]
                      for k in (3, 5))
    assert not np.allclose(steps3["value"], steps5["value"])  # each variant scored against its own originals
    with np.load(run_dir / "maps.npz") as maps:
        assert {"integrated_gradients[steps=3]/000", "integrated_gradients[steps=5]/000"} <= set(maps.files)
    labelled = runner.Plan.from_config(config(
        "methods=[{name:gradient,label:plain},{name:gradient,label:again}]")).methods
    assert [m.label for m in labelled] == ["plain", "again"]
    with pytest.raises(HarnessError, match="two method entries are both labelled 'gradient'"):
        runner.Plan.from_config(config("methods=[gradient,gradient]"))


# -- the resume key and run.json (items 10 and 11) -----------------------------------------------------
def test_changed_model_or_images_are_a_new_run(tmp_path, tiny_saved_model, image_folder):
    """Overwriting the model or an image under the same config must not reuse the old parts."""
    from harness.models.export import export_hub_style
    from skimage import io

    path, _ = tiny_saved_model
    overrides = [*tiny_overrides(path, image_folder, tmp_path / "r"), "controls=[]"]
    before = runner.run(config(*overrides), log=lambda _: None)
    metadata = json.loads((Path(path) / "harness_metadata.json").read_text()) \
        if (Path(path) / "harness_metadata.json").exists() else None
    export_hub_style(tiny_cnn(seed=1), Path(path), metadata or {"name": "tiny", "input": {
        "size": [8, 8], "channels": 1, "value_range": [0.0, 1.0]}})
    after_model = runner.run(config(*overrides), log=lambda _: None)
    assert after_model != before
    fresh = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "fresh"), "controls=[]"),
                       log=lambda _: None)
    assert (after_model / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes()
    io.imsave(image_folder / "img0.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    after_images = runner.run(config(*overrides), log=lambda _: None)
    assert after_images not in (before, after_model)
    record = json.loads((after_images / "run.json").read_text())
    assert record["images"]["digest"] and record["model"]["weights_digest"]


class Killed(BaseException):
    """Stands for kill -9 at a chosen point: nothing after it runs."""


def kill_at(monkeypatch, where: str):
    """Make the run die at `where`: 'part' (after the third unit's part), 'control' (between the
    random_model control's two models), 'assembly' (after scores.csv, before run.json)."""
    from harness.schedules import Randomizer

    if where == "part":
        written, real = [], runner.write_csv

        def write_csv(path, frame):
            result = real(path, frame)
            written.append(path)
            if len(written) == 3:
                raise Killed(where)
            return result
        monkeypatch.setattr(runner, "write_csv", write_csv)
    elif where == "control":
        real_step = Randomizer.step

        def step(self, step):
            if step.block == f"random_model_{RANDOM_MODEL_DRAWS[1]}":
                raise Killed(where)
            return real_step(self, step)
        monkeypatch.setattr(Randomizer, "step", step)
    else:
        from harness import results

        real_json = results.write_json

        def write_json(path, data):
            if Path(path).name == "run.json":
                raise Killed(where)
            return real_json(path, data)
        monkeypatch.setattr(results, "write_json", write_json)


@pytest.mark.parametrize("where", ["part", "control", "assembly"])
def test_killed_at_each_point_resumes_to_identical_files(tmp_path, tiny_saved_model, image_folder, monkeypatch, where):
    path, _ = tiny_saved_model
    overrides = "methods=[gradient,{name:smoothgrad,samples:2}]", "maps_to_keep=4"  # of the 6 images
    fresh = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "fresh"), *overrides), log=lambda _: None)
    with monkeypatch.context() as patch:
        kill_at(patch, where)
        with pytest.raises(Killed):
            runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "killed"), *overrides), log=lambda _: None)
    run_dir = next((tmp_path / "killed").glob("runs/*"))
    assert not (run_dir / "run.json").exists()
    computed = []
    real = runner.Runner._unit
    monkeypatch.setattr(runner.Runner, "_unit", lambda self, step, method, targets: (
        computed.append((step.index, method.label)), real(self, step, method, targets))[1])
    resumed = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "killed"), *overrides), log=lambda _: None)
    assert resumed.name == fresh.name
    for name in ("scores.csv", "summary.csv"):
        assert (resumed / name).read_bytes() == (fresh / name).read_bytes(), name
    with np.load(resumed / "maps.npz") as got, np.load(fresh / "maps.npz") as expected:
        assert sorted(got.files) == sorted(expected.files)
        for key in expected.files:
            assert got[key].dtype == expected[key].dtype and np.array_equal(got[key], expected[key]), key
    if where == "part":  # three units were committed before the kill: the resume computes the rest only
        assert computed == [(1, "smoothgrad"), *((i, m) for i in range(2, 5) for m in ("gradient", "smoothgrad"))]
    if where == "assembly":
        assert computed == []  # every unit was done: only the files are assembled
    record = json.loads((resumed / "run.json").read_text())
    sessions = record["computations"]
    stems = [stem for c in sessions for stem in c["units"]]
    assert sorted(stems) == sorted(record["timings"]["method_seconds"]) and len(stems) == len(set(stems))
    timings = record["timings"]  # the finished sessions' time and this invocation's assembling
    assert timings["kernel_seconds"] + timings["overhead_seconds"] == pytest.approx(timings["total_seconds"])
    assert len(sessions) == (1 if where == "assembly" else 2)
    assert sessions[0]["versions"]["tensorflow"].startswith("2.21")
    assert sessions[0]["seconds"] is None if where != "assembly" else sessions[0]["seconds"] > 0


def test_rerun_of_a_finished_run_keeps_its_record(tmp_path, tiny_saved_model, image_folder):
    """run.json is the first computation's record: a rerun neither recomputes nor rewrites it."""
    path, _ = tiny_saved_model
    overrides = [*tiny_overrides(path, image_folder, tmp_path / "r"), "controls=[ceiling]"]
    run_dir = runner.run(config(*overrides), log=lambda _: None)
    before = {name: (run_dir / name).read_bytes() for name in ("run.json", "scores.csv", "summary.csv")}
    record = json.loads(before["run.json"])
    assert record["trace_counts"]["gradient/logit"] == 1 and record["timings"]["total_seconds"] > 0
    runner.run(config(*overrides), log=lambda _: None)
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_run_json_splits_the_wall_time_into_kernels_and_runner_overhead(tmp_path, tiny_saved_model, image_folder,
                                                                        monkeypatch):
    """run.json's timings: kernel + overhead = total, the kernel is the method calls' time (scoring is
    overhead), and the overhead's parts add up to it with none negative (no time counted twice).
    Known delays in the method, the scoring and the drawing of new weights make the split checkable
    on a tiny model; the random_model control's two drawn models are randomize time, not other; a
    slowed metric's time is in its own entry of score_by_metric, inside score."""
    from harness import methods, schedules
    from harness.metrics import METRICS

    kernel_delay, score_delay, draw_delay, ssim_delay = 0.05, 0.2, 0.1, 0.05
    real_ssim = METRICS["ssim"]
    monkeypatch.setitem(METRICS, "ssim", dataclasses.replace(
        real_ssim, compute=lambda *a: (time.sleep(ssim_delay), real_ssim.compute(*a))[1]))
    real_get, real_compare, real_draw = methods.get, runner.compare_batch, schedules.draw_blocks
    draws = []

    def slow_draw(*args):
        draws.append(args)
        time.sleep(draw_delay)
        return real_draw(*args)

    monkeypatch.setattr(schedules, "draw_blocks", slow_draw)

    def slow_method(name):
        explain = real_get(name)
        return lambda *args: (time.sleep(kernel_delay), explain(*args))[1]

    monkeypatch.setattr(methods, "get", slow_method)
    monkeypatch.setattr(runner, "compare_batch", lambda *a, **k: (time.sleep(score_delay), real_compare(*a, **k))[1])
    path, _ = tiny_saved_model
    overrides = [*tiny_overrides(path, image_folder, tmp_path / "r"), "controls=[ceiling,random_model]",
                 "map_cache=false"]
    began = time.perf_counter()
    run_dir = runner.run(config(*overrides), log=lambda _: None)
    wall = time.perf_counter() - began
    t = json.loads((run_dir / "run.json").read_text())["timings"]
    units = len(t["method_seconds"])  # 5 steps and 2 controls: at least one method call and one scoring each
    assert units == 7
    assert len(draws) >= 4 + 2  # the 4 randomized steps and the control's two models
    assert t["overhead_parts"]["randomize"] >= len(draws) * draw_delay
    assert t["overhead_parts"]["other"] < draw_delay
    assert t["kernel_seconds"] + t["overhead_seconds"] == pytest.approx(t["total_seconds"])
    assert t["overhead_fraction"] == pytest.approx(t["overhead_seconds"] / t["total_seconds"])
    assert t["total_seconds"] + t["load_seconds"] <= wall
    # the kernel is what the units' maps took (scoring is not in it) ...
    assert t["kernel_seconds"] >= units * kernel_delay
    assert t["kernel_seconds"] == pytest.approx(sum(t["method_seconds"].values()), abs=0.05)
    # ... and the scoring is overhead, in its own part
    assert t["overhead_parts"]["score"] >= units * score_delay
    assert set(t["overhead_parts"]) >= {"score", "write", "randomize", "targets", "assemble", "other"}
    assert sum(t["overhead_parts"].values()) == pytest.approx(t["overhead_seconds"])
    assert min(t["overhead_parts"].values()) >= 0
    by_metric = t["score_by_metric"]
    assert set(by_metric) == set(json.loads((run_dir / "run.json").read_text())["metrics"]["metrics"]) >= {"ssim"}
    assert by_metric["ssim"] >= units * ssim_delay
    assert sum(by_metric.values()) <= t["overhead_parts"]["score"] - units * score_delay  # the sleep before them


def test_an_unreadable_part_is_computed_again(tmp_path, tiny_saved_model, image_folder):
    """After a power loss a part can exist with no bytes: it is not done, and the rerun mends it."""
    path, _ = tiny_saved_model
    overrides = [*tiny_overrides(path, image_folder, tmp_path / "r"), "controls=[ceiling]"]
    run_dir = runner.run(config(*overrides), log=lambda _: None)
    scores = (run_dir / "scores.csv").read_bytes()
    (run_dir / "parts" / "s002-gradient.csv").write_bytes(b"")
    (run_dir / "parts" / "s003-gradient.npz").write_bytes(b"PK\x03\x04")
    (run_dir / "run.json").unlink()
    runner.run(config(*overrides), log=lambda _: None)
    assert (run_dir / "scores.csv").read_bytes() == scores
    assert len(json.loads((run_dir / "run.json").read_text())["computations"]) == 2


def test_parts_and_the_run_archive_store_their_maps_uncompressed(tmp_path, tiny_saved_model, image_folder):
    """A unit's part and the run's maps.npz keep the maps as they are (compressing them was most of
    writing an InceptionV3 unit), and a part reads back as the maps the archive holds. Catches either
    written compressed again."""
    import zipfile

    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"), "controls=[]"), log=lambda _: None)
    parts = sorted((run_dir / "parts").glob("*.npz"))
    assert parts
    for archive in [*parts, run_dir / "maps.npz"]:
        assert {i.compress_type for i in zipfile.ZipFile(archive).infolist()} == {zipfile.ZIP_STORED}
    with np.load(run_dir / "maps.npz") as archive, np.load(parts[-1]) as part:
        assert any(np.array_equal(archive[key], part["maps"]) for key in archive.files)


def test_calibration_killed_before_its_record_is_finished_on_rerun(tmp_path):
    from harness.calibration import run_calibration

    run_dir = run_calibration(tmp_path, pairs=2)
    (run_dir / "run.json").unlink()  # killed between summary.csv and run.json
    (run_dir / "summary.csv").write_text("stale")
    run_calibration(tmp_path, pairs=2)
    assert (run_dir / "run.json").is_file() and pd.read_csv(run_dir / "summary.csv")["n"].min() == 2


def test_two_invocations_in_one_second_are_two_sessions(tmp_path):
    """A resume right after a kill (same process, same second) must not overwrite the killed
    session's record: run.json would then list one computation for two."""
    first, second = runner.Session.open(tmp_path), runner.Session.open(tmp_path)
    assert first.id != second.id and len(list(tmp_path.glob("session-*.json"))) == 2


def test_a_control_and_a_schedule_are_one_registered_function_each(tmp_path, tiny_saved_model, image_folder,
                                                                  monkeypatch):
    """Adding a control or a schedule touches nothing else: the runner validates and runs it."""
    from harness import controls, schedules

    monkeypatch.setitem(controls.CONTROLS, "zeros", lambda run, methods: {
        m.label: controls.ControlMaps(np.zeros_like(run.original_maps[m.label]), run.reference_targets, 0.0)
        for m in methods})
    monkeypatch.setitem(schedules.SCHEDULES, "top_only", lambda names: [schedules.Step(1, names[-1], (names[-1],))])
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"),
                                "controls=[zeros]", "schedule.name=top_only"), log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    assert list(scores["block"].drop_duplicates()) == ["original", "logits", "zeros"]
    zeros = scores[(scores["block"] == "zeros") & (scores["metric"] == "spearman_abs")]
    assert zeros["degenerate"].all()  # a constant map against the originals: undefined, flagged
