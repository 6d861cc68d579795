"""The model-free pseudo-methods: a random attribution and an edge detector, run like any method."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.filters import sobel

from harness import methods, runner
from harness.errors import HarnessError
from harness.metrics import MetricSettings, compare_batch

from conftest import tiny_cnn, wrap_keras
from test_runner import config, image_folder, tiny_overrides  # noqa: F401 - image_folder is a fixture

PAPER = MetricSettings()


def maps_of(name, model, x, targets, seed=0, params=None):
    return methods.get(name)(model, x, targets, np.random.default_rng(seed),
                             {"gradcam_endpoint": "conv2", **methods.spec(name).quick, **(params or {})})


def test_edge_detector_is_the_sobel_magnitude_of_each_channel():
    x = np.random.default_rng(3).uniform(0, 1, (2, 9, 7, 3)).astype(np.float32)
    maps = maps_of("edge_detector", None, x, np.zeros(2, np.int32))
    assert maps.shape == x.shape and maps.dtype == np.float32
    for i in range(2):
        for c in range(3):
            np.testing.assert_allclose(maps[i, ..., c], sobel(x[i, ..., c]), rtol=1e-6)
    with pytest.raises(HarnessError, match="edge_detector: unknown mode 'blur'; valid: reflect"):
        maps_of("edge_detector", None, x, np.zeros(2, np.int32), params={"mode": "blur"})


def test_random_attribution_is_seeded_noise_of_the_input_shape():
    x = np.zeros((3, 8, 8, 1), np.float32)
    a, b = (maps_of("random_attribution", None, x, np.zeros(3, np.int32), seed=1) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and not np.array_equal(a, maps_of("random_attribution", None, x, np.zeros(3), seed=2))
    uniform = maps_of("random_attribution", None, x, np.zeros(3), params={"distribution": "uniform"})
    assert uniform.min() >= -1 and uniform.max() <= 1
    with pytest.raises(HarnessError, match="unknown distribution 'cauchy'; valid: normal, uniform"):
        maps_of("random_attribution", None, x, np.zeros(3), params={"distribution": "cauchy"})


def test_random_attribution_has_spearman_near_zero_against_every_method():
    """64 images of 8 x 8: one image's Spearman of independent maps has SD ~0.13, the mean of 64 ~0.016."""
    model = wrap_keras(tiny_cnn())
    x = np.random.default_rng(5).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    targets = np.argmax(model.predict(x), 1).astype(np.int32)
    noise = maps_of("random_attribution", model, x, targets, seed=11)
    for name in ("gradient", "smoothgrad", "gradient_x_input", "integrated_gradients", "guided_backprop",
                 "gradcam", "edge_detector", "random_attribution"):
        scores = compare_batch(maps_of(name, model, x, targets), noise, PAPER)
        for metric in ("spearman_abs", "spearman_signed"):
            values = np.array([next(s.value for s in row if s.metric == metric) for row in scores])
            values = values[np.isfinite(values)]
            assert len(values) > 50, (name, metric)
            assert abs(values.mean()) < 0.06 and np.abs(values).mean() < 0.2, (name, metric, values.mean())


def test_in_a_run_the_edge_detector_never_changes_and_random_attribution_never_agrees(
        tmp_path, tiny_saved_model, image_folder):  # noqa: F811 - the fixture imported above
    path, _ = tiny_saved_model
    run_dir = runner.run(config(*tiny_overrides(path, image_folder, tmp_path / "r"),
                                "methods=[edge_detector,random_attribution,gradient]"), log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    steps = scores[scores["schedule"] != "control"]
    assert set(steps["step"]) == {0, 1, 2, 3, 4} and set(scores["method"]) == {"edge_detector", "random_attribution",
                                                                              "gradient"}
    edges = steps[steps["method"] == "edge_detector"]
    for metric in ("spearman_abs", "spearman_signed", "ssim", "hog"):
        np.testing.assert_allclose(edges.loc[edges["metric"] == metric, "value"], 1.0, atol=1e-12)
    with np.load(run_dir / "maps.npz") as maps:
        for step in range(1, 5):  # the same bytes before and after every randomization step
            np.testing.assert_array_equal(maps[f"edge_detector/{step:03d}"], maps["edge_detector/000"])
        assert not np.array_equal(maps["gradient/004"], maps["gradient/000"])
    noise = steps[(steps["method"] == "random_attribution") & (steps["step"] > 0)
                  & steps["metric"].isin(["spearman_abs", "spearman_signed"])]
    assert len(noise) == 2 * 4 * 6 and abs(noise["value"].mean()) < 0.1 and noise["value"].abs().max() < 0.6


def test_the_bench_gives_a_pseudo_method_no_raw_tf_limit(tmp_path):
    from harness import bench
    from harness.bench.common import Options

    rows = pd.read_csv(bench.run(["methods"], Options(quick=True, models=("cnn",), methods=("edge_detector", "gradient")),
                                 tmp_path, log=lambda _: None)).set_index("method")
    assert rows.loc["edge_detector", "rows"] == 0 and rows.loc["edge_detector", "harness_s"] > 0
    assert np.isnan(rows.loc["edge_detector", "limit_s"]) and np.isnan(rows.loc["edge_detector", "limit_ratio"])
    assert rows.loc["edge_detector", "note"] == "no model rows: no raw-TF limit"
    assert rows.loc["gradient", "limit_ratio"] > 0
