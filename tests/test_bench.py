"""The speed benchmark in its tiny mode: it runs, and its CSV / Markdown have the promised shape."""
import numpy as np
import pandas as pd

from harness import bench


def test_quick_bench_writes_the_table(tmp_path):
    csv = bench.run(["cnn"], ["gradient", "smoothgrad", "occlusion", "guided_backprop", "cam"], tmp_path,
                    quick=True, log=lambda _: None)
    table = pd.read_csv(csv)
    assert list(table.columns) == bench.COLUMNS
    for column in ("model", "method", "images", "harness_s", "reference_s", "speedup", "limit_s", "limit_ratio"):
        assert column in table.columns
    rows = table.set_index("method")
    assert list(rows.index) == ["gradient", "smoothgrad", "occlusion", "guided_backprop", "cam"]
    assert (rows.loc[["gradient", "smoothgrad", "occlusion"], ["harness_s", "reference_s", "limit_s"]] > 0).all().all()
    np.testing.assert_allclose(rows.loc["occlusion", "speedup"],
                               rows.loc["occlusion", "reference_s"] / rows.loc["occlusion", "harness_s"])
    assert rows.loc["gradient", "agreement"] < 1e-5 and rows.loc["occlusion", "agreement"] < 1e-5
    assert np.isnan(rows.loc["guided_backprop", "reference_s"])  # PAIR core has no Guided Backprop
    assert rows.loc["cam", "note"].startswith("not run: method cam needs a Keras model")
    markdown = (tmp_path / "bench.md").read_text()
    assert "| method | images | settings | harness s | PAIR s | speedup |" in markdown and "## mnist_cnn" in markdown


def test_rows_per_image_count_the_work_of_each_method():
    assert bench.rows_per_image("ig_smoothgrad", {"samples": 3, "steps": 4}, (28, 28, 1)) == (12, 0)
    assert bench.rows_per_image("xrai", {"steps": 5}, (28, 28, 1)) == (10, 0)
    assert bench.rows_per_image("occlusion", {"size": 15, "stride": 1}, (28, 28, 1)) == (0, 14 * 14 + 1)
    assert bench.rows_per_image("guided_gradcam", {}, (28, 28, 1)) == (2, 0)


def test_sequential_paths_get_one_limit_row_per_image_and_call():
    x = np.zeros((3, 28, 28, 1), np.float32)
    assert bench.limit_rows_per_call("guided_ig", {"max_batch": "auto"}, x) == 3
    assert bench.limit_rows_per_call("integrated_gradients", {"max_batch": "auto"}, x) > 3
    assert bench.limit_rows_per_call("integrated_gradients", {"max_batch": 2}, x) == 2


def test_each_side_gets_rounds_by_its_own_time_and_keeps_its_best(monkeypatch):
    clock, calls = [0.0], {"quick": [], "medium": [], "slow": []}
    durations = {"quick": iter([1.5, 0.5, 1.0, 0.7, 0.9]), "medium": iter([5.0, 4.0, 4.5]), "slow": iter([20.0])}

    def side(name):
        def run():
            seconds = next(durations[name])
            calls[name].append(seconds)
            clock[0] += seconds
            return seconds
        return run
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    best = bench._best_of({name: side(name) for name in calls}, repeats=1)
    assert {name: len(c) for name, c in calls.items()} == {"quick": 5, "medium": 3, "slow": 1}
    assert best == {"quick": (0.5, 0.5), "medium": (4.0, 4.0), "slow": (20.0, 20.0)}
