"""The speed benchmark in its tiny mode: it runs, and its CSV / Markdown have the promised shape."""
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness import bench
from harness.bench import common, methods, repairs
from harness.bench.common import Options

QUICK_CNN = dict(quick=True, models=("cnn",))


def test_quick_bench_writes_the_table(tmp_path):
    csv = bench.run(["methods", "repairs"], Options(**QUICK_CNN, methods=("gradient", "smoothgrad", "occlusion",
                                                                          "guided_backprop", "cam")),
                    tmp_path, log=lambda _: None)
    table = pd.read_csv(csv)
    for column in ("model", "method", "images", "harness_s", "reference_s", "speedup", "limit_s", "limit_ratio"):
        assert column in table.columns
    rows = table.set_index("method")
    assert list(rows.index) == ["gradient", "smoothgrad", "occlusion", "guided_backprop", "cam", "smprt (gradient)",
                                "emprt (gradient)"]
    assert (rows.loc[["gradient", "smoothgrad", "occlusion"], ["harness_s", "reference_s", "limit_s"]] > 0).all().all()
    rounds = {side: np.array(rows.loc["occlusion", f"{side}_rounds_s"].split(), float)
              for side in ("harness", "reference", "limit")}
    np.testing.assert_allclose(rows.loc["occlusion", "harness_s"], rounds["harness"].min(), rtol=1e-5)  # 6 digits
    assert len(rounds["harness"]) >= common.PAIRED  # quick rows get several rounds: paired medians
    shared = min(map(len, rounds.values()))
    np.testing.assert_allclose(rows.loc["occlusion", "speedup"],
                               np.median(rounds["reference"][:shared] / rounds["harness"][:shared]), rtol=1e-5)
    np.testing.assert_allclose(rows.loc["occlusion", "limit_ratio"],
                               np.median(rounds["harness"][:shared] / rounds["limit"][:shared]), rtol=1e-5)
    assert rows.loc["gradient", "agreement"] < 1e-5 and rows.loc["occlusion", "agreement"] < 1e-5
    assert np.isnan(rows.loc["guided_backprop", "reference_s"])  # PAIR core has no Guided Backprop
    assert rows.loc["cam", "note"].startswith("not run: method cam needs a Keras model")
    markdown = (tmp_path / "bench.md").read_text()
    assert "| method | images | settings | harness s | PAIR s | speedup |" in markdown and "### mnist_cnn" in markdown
    # The repaired tests: their gradient rows (N noisy copies; two model states) timed against the limit.
    assert rows.loc["smprt (gradient)", "rows"] == repairs.QUICK_SAMPLES * 1
    assert rows.loc["emprt (gradient)", "rows"] == 2 * 1
    assert (rows.loc[["smprt (gradient)", "emprt (gradient)"], ["harness_s", "limit_s", "limit_ratio"]] > 0).all().all()
    assert "Target sMPRT and eMPRT within 1.3x of the raw-TF limit: mnist_cnn smprt (gradient) " in markdown
    assert "re-initializing 4 blocks (3,274,634 weights" in rows.loc["emprt (gradient)", "note"]


def test_sequential_paths_get_one_limit_row_per_image_and_call():
    x = np.zeros((3, 28, 28, 1), np.float32)
    assert common.limit_rows_per_call("guided_ig", {"max_batch": "auto"}, x) == 3
    assert common.limit_rows_per_call("integrated_gradients", {"max_batch": "auto"}, x) > 3
    assert common.limit_rows_per_call("integrated_gradients", {"max_batch": 2}, x) == 2


def test_each_side_gets_rounds_by_its_own_time_and_keeps_its_fastest_result(monkeypatch):
    clock, calls = [0.0], {"quick": [], "medium": [], "slow": []}
    durations = {"quick": iter([1.5, 0.5, 1.0, 0.7, 0.9]), "medium": iter([5.0, 4.0, 4.5]), "slow": iter([20.0])}

    def side(name):
        def run():
            seconds = next(durations[name])
            calls[name].append(seconds)
            clock[0] += seconds
            return seconds
        return run
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    timed = common.rounds({name: side(name) for name in calls}, repeats=1)
    assert {name: len(c) for name, c in calls.items()} == {"quick": 5, "medium": 3, "slow": 1}
    assert {name: (t.best, t.value) for name, t in timed.items()} == {
        "quick": (0.5, 0.5), "medium": (4.0, 4.0), "slow": (20.0, 20.0)}
    np.testing.assert_allclose(timed["quick"].seconds, [1.5, 0.5, 1.0, 0.7, 0.9])


def test_ratios_are_medians_of_rounds_run_back_to_back_else_of_best_times():
    harness = common.Timing([4.0, 2.0, 2.2, 1.0], None)  # a burst slowed round 0; round 3 ran alone
    limit = common.Timing([2.0, 2.0, 2.0], None)
    assert common.ratio(harness, limit) == 1.1  # median of 2.0, 1.0, 1.1
    assert common.ratio(harness, common.Timing([3.0, 2.5], None)) == 1.0 / 2.5  # too few shared rounds: bests


def test_xrai_cold_limit_holds_pairs_felzenszwalb_calls_for_every_image(monkeypatch):
    from types import SimpleNamespace

    from saliency.core import xrai as pair_xrai
    from skimage import segmentation

    rng = np.random.default_rng(0)
    images = np.stack([rng.uniform(0, 1, (28, 28, 1)), rng.uniform(-1, 1, (28, 28, 1))]).astype(np.float32)
    real, calls = segmentation.felzenszwalb, []

    def recorded(im, **settings):
        calls.append((im, settings))
        return real(im, **settings)
    monkeypatch.setattr(segmentation, "felzenszwalb", recorded)  # PAIR calls it through this module too
    methods.felzenszwalb_work(SimpleNamespace(images=images))()
    ours, calls[:] = list(calls), []
    for image in images:
        pair_xrai._get_segments_felzenszwalb(image)

    def key(call):
        return tuple(sorted(call[1].items())), float(call[0].sum())
    assert len(ours) == len(calls) == 6 * len(images)
    for mine, pairs in zip(sorted(ours, key=key), sorted(calls, key=key)):
        assert mine[1] == pairs[1]
        np.testing.assert_allclose(mine[0], pairs[0], rtol=0, atol=1e-6)


def _frame(model: str, rows: list[tuple]) -> pd.DataFrame:
    """Bench rows (method, harness_s, reference_s, limit_s) with their ratios, as `measure` gives them."""
    return pd.DataFrame([{"model": model, "method": m, "harness_s": h, "reference_s": r, "limit_s": lim,
                          "speedup": r / h, "limit_ratio": h / lim} for m, h, r, lim in rows])


def test_cnn_targets_check_pair_and_limit_and_name_the_cause_of_a_miss():
    lines = methods.target_lines(_frame("mnist_cnn", [
        ("smoothgrad", 0.16, 0.96, 0.15), ("integrated_gradients", 0.1, 0.65, 0.1), ("occlusion", 0.3, 4.0, 0.25),
        ("gradient", 0.0277, 0.0127, 0.0314),      # the raw-TF rows are themselves slower than PAIR's
        ("gradcam", 0.02, 0.0123, 0.01)]))         # overhead: 2x its limit
    text = "\n".join(lines)
    assert "Target >= 5x PAIR for SmoothGrad, IG, Occlusion: smoothgrad 6x met, integrated_gradients 6.5x met" in text
    assert ("Target no slower than PAIR: MISSED by gradient 0.458x (the raw-TF limit 0.0314 s is itself slower "
            "than PAIR's one-image calls 0.0127 s on this CPU), gradcam 0.615x (harness overhead: 2x the raw-TF "
            "limit 0.01 s)") in text
    assert "Target within 1.3x of the raw-TF limit: MISSED by gradcam 2x" in text
    met = "\n".join(methods.target_lines(_frame("mnist_cnn", [("gradient", 0.006, 0.016, 0.007)])))
    assert met == "Target no slower than PAIR: met. Target within 1.3x of the raw-TF limit: met."  # no 5x rows


def test_the_page_names_the_cpu_beside_the_date_and_docs_keep_their_hand_written_part(monkeypatch, tmp_path):
    """Catches: a page without the CPU model or the date, a docs page without its generated-file
    header, or a rerun that drops (or doubles) what a person wrote after the KEPT line."""
    monkeypatch.setattr(common, "cpu_model", lambda: "Test CPU 9000")
    docs = tmp_path / "docs" / "benchmarks.md"
    frame = pd.DataFrame([{"scenario": "methods", "method": "gradient"}])
    for written in range(2):
        common.write(frame, ["## A section", "", f"run {written}"], ["methods"], tmp_path / "out", docs)
        if not written:
            docs.write_text(docs.read_text() + "Earlier runs, by hand.\n")
    page = docs.read_text()
    assert page.startswith(common.GENERATED) and "run 1" in page and "run 0" not in page
    assert page.count(common.KEPT) == 1 and page.endswith(f"{common.KEPT}\nEarlier runs, by hand.\n")
    measured = next(line for line in page.splitlines() if line.startswith("Measured "))
    assert " · Test CPU 9000 · " in measured and re.search(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d", measured)
    assert (tmp_path / "out" / "bench.md").read_text() in page and (tmp_path / "out" / "bench.csv").exists()


@pytest.mark.slow  # a process of its own: TensorFlow's start, the CNN snapshot, one quick method (~1 min)
def test_the_entry_point_runs_one_scenario_and_writes_both_files(tmp_path):
    """Catches: `python -m harness.bench --scenarios ...` not writing bench.md or the --docs page."""
    docs = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, "-m", "harness.bench", "--scenarios", "methods", "--models", "cnn",
                           "--methods", "gradient", "--quick", "--out", str(tmp_path), "--docs", str(docs)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| gradient | 1 |" in (tmp_path / "bench.md").read_text() and "| gradient | 1 |" in docs.read_text()


def test_an_unknown_scenario_is_one_line_naming_the_valid_ones(capsys, tmp_path, monkeypatch):
    """Catches: an unknown name found only when its turn comes (after the scenarios before it ran)."""
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the bench ran"))
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--scenarios", "methods,speed", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and not any(tmp_path.iterdir())
    assert f"unknown scenario: speed; valid: {', '.join(bench.SCENARIOS)}" in capsys.readouterr().err


def test_cpu_model_reads_the_model_name():
    from pathlib import Path

    name = common.cpu_model()
    assert name and "\n" not in name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        assert name in cpuinfo.read_text()


def test_quick_inception_keeps_the_few_occlusion_windows():
    """Breakage caught: `--quick` giving Inception occlusion's 21-px quick window, which PAIR's
    stride-1 loop slides over 299 x 299 for hours (the quick bench never finished)."""
    quick, full = common.inception_params(True), common.inception_params(False)
    assert quick["occlusion"]["size"] == full["occlusion"]["size"] == common.INCEPTION["occlusion"]["size"]
    assert quick["smoothgrad"]["samples"] < full["smoothgrad"]["samples"]  # the rest stays quick
    assert quick["gradcam"]["endpoint"] == "mixed10"
