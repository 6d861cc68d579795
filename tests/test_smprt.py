"""sMPRT (Hedström et al. 2024) as the schedule `smprt`: bottom-up, every map denoised over noisy copies."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import methods, runner
from harness.errors import HarnessError
from harness.methods.smoothgrad import denoised, draw_noise
from harness.schedules import Smoothing, schedule_steps

from conftest import tiny_cnn, wrap_keras
from test_runner import config, image_folder, tiny_overrides  # noqa: F401 - image_folder is a fixture

BLOCKS = ["conv1", "conv2", "fc1", "logits"]  # execution order, input first


def test_smprt_randomizes_bottom_up_from_the_input():
    steps = schedule_steps("smprt", BLOCKS)
    assert steps == schedule_steps("bottom_up", BLOCKS)
    assert [s.block for s in steps] == ["original", "conv1", "conv2", "fc1", "logits"]
    assert [s.randomized for s in steps[1:]] == [("conv1",), ("conv1", "conv2"), ("conv1", "conv2", "fc1"),
                                                 tuple(BLOCKS)]


def test_denoised_is_the_mean_over_noisy_copies_with_the_last_one_clean(images8):
    model = wrap_keras(tiny_cnn())
    targets = np.argmax(model.predict(images8), 1).astype(np.int32)
    gradient = methods.get("gradient")
    got = denoised(gradient, 3, 0.1, np.random.default_rng(7))(model, images8, targets, None, {})
    noise = draw_noise(np.random.default_rng(7), images8, 2, 0.1)  # images, then copies, then pixels
    copies = [images8 + noise[:, 0], images8 + noise[:, 1], images8]
    expected = np.mean([gradient(model, c, targets, None, {}) for c in copies], axis=0, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    sigma = 0.1 * (images8.max(axis=(1, 2, 3)) - images8.min(axis=(1, 2, 3)))
    np.testing.assert_allclose(noise.std(axis=(1, 2, 3, 4)), sigma, rtol=0.35)  # 0.1 x each image's range
    one = denoised(gradient, 1, 0.1, np.random.default_rng(7))(model, images8, targets, None, {})
    np.testing.assert_array_equal(one, gradient(model, images8, targets, None, {}))


def test_the_noisy_copies_go_through_the_method_in_few_batched_calls(images8):
    calls = []

    def method(model, rows, targets, rng, params):
        calls.append(len(rows))
        return rows * 2.0
    x = np.concatenate([images8, images8])  # 10 images
    maps = denoised(method, 50, 0.1, np.random.default_rng(0))(None, x, np.zeros(10, np.int32), None,
                                                                {"max_batch": 100})
    assert calls == [100] * 5  # 2 images x 50 copies a call, not one call per copy
    np.testing.assert_allclose(maps.mean(), 2 * x.mean(), atol=0.05)


def test_smprt_with_one_sample_equals_bottom_up_mprt_exactly(tmp_path, tiny_saved_model, image_folder):  # noqa: F811
    path, _ = tiny_saved_model
    methods_list = "methods=[gradient,{name:smoothgrad,samples:3},{name:integrated_gradients,steps:4},gradcam]"
    common = [*tiny_overrides(path, image_folder, tmp_path / "r"), methods_list, "controls=[ceiling,random_logit]",
              "model.gradcam_endpoint=conv2"]
    mprt = runner.run(config(*common, "schedule=bottom_up"), log=lambda _: None)
    smprt = runner.run(config(*common, "schedule=smprt", "schedule.samples=1"), log=lambda _: None)
    a, b = pd.read_csv(mprt / "scores.csv"), pd.read_csv(smprt / "scores.csv")
    assert set(b.loc[b["step"] >= 0, "schedule"]) == {"smprt"}
    columns = [c for c in a.columns if c != "schedule"]
    pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)
    with np.load(mprt / "maps.npz") as left, np.load(smprt / "maps.npz") as right:
        assert set(left.files) == set(right.files)
        for key in left.files:
            np.testing.assert_array_equal(left[key], right[key])



def test_smprt_draws_the_same_noisy_copies_for_every_model_state(tmp_path, tiny_saved_model, image_folder):  # noqa: F811
    path, _ = tiny_saved_model
    common = [*tiny_overrides(path, image_folder, tmp_path / "r"), "methods=[gradient,edge_detector]",
              "controls=[ceiling]"]
    plain = runner.run(config(*common, "schedule=bottom_up"), log=lambda _: None)
    smoothed = runner.run(config(*common, "schedule=smprt", "schedule.samples=4"), log=lambda _: None)
    with np.load(plain / "maps.npz") as left, np.load(smoothed / "maps.npz") as right:
        assert not np.allclose(left["gradient/002"], right["gradient/002"])
        assert not np.allclose(left["edge_detector/000"], right["edge_detector/000"])  # denoised, not plain
        for step in range(1, 5):  # a model-free map stays put: the copies differ by nothing but the model
            np.testing.assert_array_equal(right[f"edge_detector/{step:03d}"], right["edge_detector/000"])
    scores = pd.read_csv(smoothed / "scores.csv")
    ceiling = scores[(scores["block"] == "ceiling") & (scores["metric"] == "spearman_abs")]
    assert np.allclose(ceiling["value"], 1.0)  # a deterministic method under the same copies: its ceiling is 1


@pytest.mark.parametrize("overrides, message", [
    (["schedule=smprt", "schedule.samples=0"], "schedule.samples must be an integer >= 1, got 0"),
    (["schedule=smprt", "schedule.spread=-0.1"], "schedule.spread must be a number >= 0, got -0.1"),
    (["schedule=bottom_up", "+schedule.samples=5"], "schedule.samples belongs to a smoothed schedule \\(smprt\\); "
                                                   "schedule 'bottom_up' has no such setting"),
])
def test_bad_smoothing_settings_are_one_clear_error(tmp_path, overrides, message):
    with pytest.raises(HarnessError, match=message):
        runner.Plan.from_config(config(f"results_dir={tmp_path}", *overrides))


def test_smprt_defaults_are_fifty_copies_at_a_tenth_of_the_range(tmp_path):
    plan = runner.Plan.from_config(config(f"results_dir={tmp_path}", "schedule=smprt"))
    assert plan.smoothing == Smoothing(50, 0.1) and plan.schedule == "smprt"
    assert runner.Plan.from_config(config(f"results_dir={tmp_path}", "schedule=bottom_up")).smoothing is None
