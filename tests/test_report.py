"""The report (harness.report) built from synthetic result folders: no TensorFlow, no model.

The synthetic runs follow the runner's file conventions (scores.csv, summary.csv, maps.npz, run.json)
with chosen per-cell means, so the report's numbers can be checked exactly.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.report import build_report
from harness.report.cli import main
from harness.report.figures import PAGE_PX
from harness.report.tables import MERGED_COLUMNS
from harness.results import write_csv, write_json, write_npz
from harness.results import SCORE_COLUMNS, SUMMARY_COLUMNS
from harness.summary import summarize

CNN_BLOCKS = ["logits", "fc1", "conv2", "conv1"]
METRICS = ["spearman_abs", "spearman_signed", "ssim", "hog"]
OFFSETS = np.array([-0.02, 0.0, 0.02])  # three images; the mean of every cell is exactly its target
# |Spearman| targets per method along original, logits, fc1, conv2, conv1.
CASCADE = {"gradient": [1.0, 0.62, 0.41, 0.12, 0.09],
           "guided_backprop": [1.0, 0.72, 0.70, 0.61, 0.45],
           "gradcam": [1.0, 0.55, 0.35, 0.30, float("nan")]}  # conv1: every image undefined (docs/protocol.md §5.1)
SKIP_REASON = "no Inception v3 checkpoint found offline"


# -- synthetic result folders ------------------------------------------------------------------------------
def _target(method: str, step: int, metric: str, table: dict) -> float:
    value = table[method][step]
    return value if metric != "spearman_signed" else value * 0.5


def _rows(model, schedule, blocks, table, metrics=METRICS):
    rows = []
    for method in table:
        for step, block in enumerate(["original", *blocks]):
            for metric in metrics:
                target = _target(method, step, metric, table)
                for i, offset in enumerate(OFFSETS):
                    value = float("nan") if np.isnan(target) else (1.0 if step == 0 else target + offset)
                    rows.append({"model": model, "method": method, "schedule": schedule, "step": step, "block": block,
                                 "image_id": f"mnist-test-{i}", "target_class": i, "metric": metric, "value": value,
                                 "degenerate": bool(np.isnan(value)),
                                 "reason": "constant map (compared)" if np.isnan(value) else "", "seed": 0})
    return rows


def _control_rows(model, methods, metrics=METRICS):
    levels = {"ceiling": 0.95, "random_model": 0.1, "random_mask": 0.0}
    return [{"model": model, "method": method, "schedule": "control", "step": -1, "block": block,
             "image_id": f"mnist-test-{i}", "target_class": i, "metric": metric, "value": level + offset,
             "degenerate": False, "reason": "", "seed": 0}
            for method in methods for block, level in levels.items() for metric in metrics
            for i, offset in enumerate(OFFSETS)]


def _maps(methods, blocks, channels=1, size=28):
    """Maps that fade from a digit-like blob into noise as the cascade proceeds."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    images = np.stack([np.exp(-((yy - 0.5) ** 2 + (xx - 0.3 - 0.2 * i) ** 2) * 30) for i in range(3)])
    images = np.repeat(images[..., None], channels, axis=-1).astype(np.float32)
    arrays = {"images": images, "image_ids": np.array([f"mnist-test-{i}" for i in range(3)]),
              "steps": np.arange(len(blocks) + 1), "blocks": np.array(["original", *blocks])}
    for method in methods:
        for step in range(len(blocks) + 1):
            mix = step / len(blocks)
            maps = (1 - mix) * (images - 0.3) + mix * rng.normal(0, 0.3, images.shape)
            arrays[f"{method}/{step:03d}"] = maps.astype(np.float32)
    return arrays


def write_run(folder: Path, model: str, schedule: str, rows: list[dict], maps: dict, experiment: str) -> Path:
    scores = pd.DataFrame.from_records(rows, columns=SCORE_COLUMNS)
    write_csv(folder / "scores.csv", scores)
    write_csv(folder / "summary.csv", summarize(scores))
    write_npz(folder / "maps.npz", maps)
    methods = list(dict.fromkeys(scores["method"]))
    write_json(folder / "run.json", {
        "config": {"experiment": experiment, "data": {"source": "mnist", "count": 3}, "target": "predicted",
                   "methods": methods},  # as experiment presets name them: config files only
        "methods": [{"name": m, "params": {"max_batch": 256}} for m in methods],  # as the runner resolves them
        "model": {"name": model, "identity": f"builtin:{model}", "source_kind": "builtin",
                  "input": {"size": [28, 28], "channels": 1, "value_range": [0.0, 1.0]}, "num_classes": 10,
                  "metrics": {"train_accuracy": 0.995, "test_accuracy": 0.981}, "blocks": []},
        "schedule": {"name": schedule, "steps": [], "reinit": {"scheme": "auto", "bn_stats": "keep"}},
        "metrics": {"metrics": METRICS, "ssim_window": 5, "preset": "paper"},
        "images": {"count": 3, "ids": [f"mnist-test-{i}" for i in range(3)]},
        "timings": {"total_seconds": 12.5}, "versions": {"numpy": "2.4.6", "pandas": "3.1.1"}, "seed": 0})
    return folder


def make_reproduce_folder(root: Path) -> Path:
    write_run(root / "cascading_cnn", "mnist_cnn", "cascading",
              _rows("mnist_cnn", "cascading", CNN_BLOCKS, CASCADE) + _control_rows("mnist_cnn", CASCADE),
              _maps(CASCADE, CNN_BLOCKS), "cascading_cnn")
    independent = {m: [1.0, 0.8, 0.7, 0.5, 0.3] for m in ("gradient", "guided_backprop")}
    write_run(root / "independent_cnn", "mnist_cnn", "independent",
              _rows("mnist_cnn", "independent", CNN_BLOCKS, independent), _maps(independent, CNN_BLOCKS),
              "independent_cnn")
    for model, values in (("mnist_cnn", {"gradient": [1.0, 0.18], "guided_backprop": [1.0, 0.55]}),
                          ("mnist_mlp_randlabels", {"gradient": [1.0, 0.61], "guided_backprop": [1.0, 0.69]})):
        write_run(root / "data_randomization" / model, model, "data_randomization",
                  _rows(model, "data_randomization", ["random_labels"], values, ["spearman_abs", "spearman_signed"]),
                  _maps(values, ["random_labels"]), "data_randomization")
    calibration = [r for r in _control_rows("mnist_cnn", ["gradient"]) if r["block"] == "random_mask"]
    write_run(root / "calibration", "mnist_cnn", "control", calibration, _maps([], []), "calibration")
    write_json(root / "inception_cascading" / "skipped.json",
               {"experiment": "inception_cascading", "reason": SKIP_REASON,
                "how_to_provide": "put the slim checkpoint under ~/.cache and run make reproduce"})
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_reproduce_folder(tmp_path_factory.mktemp("reproduce"))
    page = build_report(root)
    return root, page


# -- tests ---------------------------------------------------------------------------------------------------
def test_merged_summary_has_experiment_and_summary_columns(built):
    root, _ = built
    summary = pd.read_csv(root / "summary.csv")
    assert list(summary.columns) == ["experiment"] + SUMMARY_COLUMNS == MERGED_COLUMNS
    assert list(dict.fromkeys(summary["experiment"])) == ["cascading_cnn", "independent_cnn", "data_randomization",
                                                          "calibration"]  # the paper's order
    row = summary[(summary["experiment"] == "cascading_cnn") & (summary["method"] == "guided_backprop")
                  & (summary["block"] == "logits") & (summary["metric"] == "spearman_abs")]
    assert row["mean"].item() == pytest.approx(0.72)


def test_figures_are_readable_pngs(built):
    root, _ = built
    figures = sorted((root / "figures").glob("*.png"))
    names = {f.name for f in figures}
    for expected in ("cascading_cnn-mnist_cnn-cascading-curves.png",
                     "cascading_cnn-mnist_cnn-cascading-maps-absolute-0.png",
                     "cascading_cnn-mnist_cnn-cascading-maps-signed-2.png",
                     "independent_cnn-mnist_cnn-independent-boxes.png",
                     "data_randomization-all-data_randomization-bars.png"):
        assert expected in names
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(figure) as image:  # no wider than the page shows it; a palette keeps it light
            assert 300 <= image.width <= PAGE_PX and 200 <= image.height <= 4000, (figure.name, image.size)
            assert image.mode == "P", figure.name
        assert figure.stat().st_size > 5_000
    markdown = (root / "report.md").read_text()
    assert all(f"(figures/{name})" in markdown for name in names)  # every figure is shown with a caption


def test_report_starts_with_skipped_experiments_and_their_reason(built):
    root, _ = built
    markdown = (root / "report.md").read_text()
    assert markdown.startswith("# Sanity checks for saliency maps")
    assert markdown.index("## Skipped experiments") < markdown.index("## What ran")
    assert f"**inception_cascading**: {SKIP_REASON}" in markdown
    assert "How to provide: put the slim checkpoint" in markdown


def test_paper_vs_run_table_has_paper_values_and_our_means(built):
    root, _ = built
    markdown = (root / "report.md").read_text()
    assert ("| Guided Backprop | logits | 0.89 ± 0.031 | 0.720 [0.700, 0.740] | 3 | **-5.48 SD** | **> 2 SD** "
            "| cascading_cnn |") in markdown
    assert "| Gradient | conv1 | 0.08 ± 0.030 | 0.090 [0.070, 0.110] | 3 | +0.33 SD | within 2 SD |" in markdown
    assert "| Integrated Gradients | conv1 | 0.992 ± 0.0050 | — |" in markdown  # not run here: shown, not invented
    assert "| Grad-CAM | conv1 | 0.30 ± 0.13 | undefined (3 of 3 degenerate) | 0 | — | — |" in markdown
    # Data randomization: random-label model names match their true-label model; a range is a range;
    # values read off a figure have no SD and their difference is absolute.
    assert "| Gradient | random labels | 0.60 (value, no SD) | 0.610 [0.590, 0.630] | 3 | +0.010 absolute |" in markdown
    assert ("| Gradient | random labels | 0.00-0.12 (range, no SD) | 0.090 [0.070, 0.110] | 3 | +0.000 absolute "
            "| within ±0.03 (no SD) |") in markdown
    assert "never used to tune anything" in markdown


def test_summary_tables_and_claims_come_from_the_data(built):
    root, _ = built
    markdown = (root / "report.md").read_text()
    assert "| Gradient | 1.00 [1.00, 1.00] | 0.62 [0.60, 0.64] |" in markdown
    assert "undefined (3 of 3 degenerate)" in markdown  # Grad-CAM at conv1: counted, not zero-filled
    assert "control: ceiling" in markdown
    assert "**calibration: MNIST CNN, |Spearman|**" in markdown and "| Gradient | 0.00 [-0.02, 0.02] |" in markdown
    assert "Gradient, MNIST CNN (cascading_cnn, cascading): |Spearman| 1.00 at original -> 0.09" in markdown
    assert "depends on the weights: **inconclusive** (n = 3 images with a defined score, below the minimum 10)" in markdown
    assert "Grad-CAM, MNIST CNN (cascading_cnn, cascading)" in markdown and "**undetermined**" in markdown
    assert ("Guided Backprop, MNIST CNN (cascading_cnn, cascading): |Spearman| 0.72 [0.70, 0.74] (paper: 0.89) "
            "after logits") in markdown
    assert "stays >= 0.5 through conv2" in markdown
    assert "depends on the training labels" in markdown
    assert "| Guided Backprop | `guided_backprop` | max_batch=256 | predicted |" in markdown  # methods table


def test_degenerate_score_with_a_finite_value_counts_in_the_mean_and_stays_flagged(tmp_path):
    """SSIM of a constant map is finite and flagged degenerate: summary.csv, the merged summary and
    the report agree that it is the test's outcome, in mean and CI (n counts it), and n_flagged
    counts it once; n_degenerate counts only undefined scores (n + n_degenerate = the images)."""
    rows = _rows("mnist_cnn", "cascading", CNN_BLOCKS, {"gradient": CASCADE["gradient"]})
    cell = [r for r in rows if r["metric"] == "ssim" and r["step"] == 1]  # logits: 0.60, 0.62, 0.64
    cell[2].update(value=1.0, degenerate=True, reason="constant map (compared)")  # finite, flagged
    root = tmp_path / "reproduce"
    run = write_run(root / "cascading_cnn", "mnist_cnn", "cascading", rows, _maps(["gradient"], CNN_BLOCKS),
                    "cascading_cnn")
    build_report(root)
    for summary in (pd.read_csv(run / "summary.csv"), pd.read_csv(root / "summary.csv")):
        row = summary[(summary["metric"] == "ssim") & (summary["step"] == 1)].iloc[0]
        assert (row["n"], row["n_degenerate"], row["n_flagged"]) == (3, 0, 1)
        assert row["mean"] == pytest.approx(np.mean([0.60, 0.62, 1.0])) and 0.60 <= row["ci_low"] <= row["ci_high"] <= 1.0
        assert row["sd"] == pytest.approx(np.std([0.60, 0.62, 1.0], ddof=1))
        other = summary[(summary["metric"] == "ssim") & (summary["step"] == 2)].iloc[0]
        assert (other["n"], other["n_degenerate"], other["n_flagged"]) == (3, 0, 0)
    markdown = (root / "report.md").read_text()
    assert "| Gradient | 1.00 [1.00, 1.00] | 0.74 [0.60, 1.00] (1 of 3 from a constant map) | 0.41 [0.39, 0.43] |" in markdown
    assert "counted in their cell as 'k of N from a constant map'" in markdown
    verdicts = pd.read_csv(root / "verdicts.csv")  # the reproduction folder's verdicts, by experiment
    assert set(verdicts["experiment"]) == {"cascading_cnn"} and set(verdicts["verdict"]) == {"inconclusive"}
    assert "undefined)" not in markdown and "n = 4" not in markdown


def test_the_verdict_matrix_comes_before_the_first_figure(built):
    """Per model one matrix (methods x tests from every experiment on it), each cell coloured by its
    verdict and giving the value and CI; all before the first figure, the claims folded after the
    headline figures."""
    root, page = built
    html = page.read_text()
    matrix = html.index("<h2>Verdicts</h2>")
    assert matrix < html.index("<figure") < html.index("<details><summary>The paper")
    cnn = html[html.index("<caption>MNIST CNN</caption>", matrix):]
    cnn = cnn[:cnn.index("</table>")]
    assert "<th>MPRT cascading</th>" in cnn and "<th>MPRT independent</th>" in cnn
    gradient = re.search(r"<tr><td>Gradient</td>(.*?)</tr>", cnn).group(1)
    assert re.search(r'<td class="inconclusive">inconclusive 0\.\d\d \[-?\d\.\d\d, \d\.\d\d\]</td>', gradient)
    assert cnn.count("<tr><td>Gradient</td>") == 1
    assert set(re.findall(r'<td class="(\w+)">(\w+)', cnn)) <= {(v, v) for v in ("pass", "fail", "inconclusive", "undefined")}


def test_html_is_self_contained(built):
    root, page = built
    assert page == root / "report.html"
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(list((root / "figures").glob("*.png")))
    assert 'src="figures/' not in html and "<link" not in html and "<script" not in html
    assert "<style>" in html and "Guided Backprop" in html and SKIP_REASON in html


def test_rebuild_is_identical(built):
    root, _ = built
    before = {name: (root / name).read_bytes() for name in ("report.md", "report.html", "summary.csv")}
    build_report(root)
    assert {name: (root / name).read_bytes() for name in before} == before


def test_single_run_folder_keeps_the_runners_summary(tmp_path):
    blocks = ["logits", "hidden3", "hidden2", "hidden1"]
    rows = _rows("mnist_mlp", "cascading", blocks, {"gradient": [1, .2, .1, .02, .02]})
    run = write_run(tmp_path / "run", "mnist_mlp", "cascading", rows, _maps(["gradient"], blocks), "cascading_mlp")
    runner_summary = (run / "summary.csv").read_bytes()
    page = build_report(run)
    assert page == run / "report" / "report.html"
    assert (run / "summary.csv").read_bytes() == runner_summary
    assert "| Gradient | hidden3 | 0.10 ± 0.062 | 0.100 [" in (run / "report" / "report.md").read_text()


def test_report_never_imports_tensorflow(tmp_path):
    root = write_run(tmp_path / "run", "mnist_cnn", "cascading", _rows("mnist_cnn", "cascading", CNN_BLOCKS, CASCADE),
                     _maps(["gradient"], CNN_BLOCKS), "cascading_cnn")
    code = ("import sys; from harness.report.cli import main\n"
            f"try:\n    main([{str(root)!r}])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"report: {root / 'report' / 'report.html'}"


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_cli_errors_name_the_folder(tmp_path, capsys, make):
    folder = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness-report: error: ") and str(folder) in err[0]



# -- runs of one experiment with different settings: refused, never mixed ------------------------------------
def _cascading_run(folder: Path, count: int = 3, samples: int | None = None) -> Path:
    """A cascading_cnn run whose run.json records `data.count` (and SmoothGrad's samples when given)."""
    import json

    methods = {"gradient": CASCADE["gradient"]} | ({"smoothgrad": CASCADE["guided_backprop"]} if samples else {})
    run = write_run(folder, "mnist_cnn", "cascading", _rows("mnist_cnn", "cascading", CNN_BLOCKS, methods),
                    _maps(methods, CNN_BLOCKS), "cascading_cnn")
    record = json.loads((run / "run.json").read_text())
    record["config"]["data"]["count"] = count
    for method in record["methods"]:
        if method["name"] == "smoothgrad":
            method["params"]["samples"] = samples
    write_json(run / "run.json", record)
    return run


def test_quick_and_full_runs_of_one_experiment_are_refused(tmp_path, capsys):
    root = tmp_path / "reproduce"
    root.mkdir()
    other = make_reproduce_folder(tmp_path / "other")
    for name in ("independent_cnn", "data_randomization", "calibration"):  # the rest, as make reproduce leaves it
        (other / name).rename(root / name)
    _cascading_run(root / "cascading_cnn" / "runs" / "full", count=100, samples=50)
    _cascading_run(root / "cascading_cnn" / "runs" / "quick", count=2, samples=2)
    with pytest.raises(SystemExit) as exit_info:
        main([str(root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"harness-report: error: experiment 'cascading_cnn' in '{root / 'cascading_cnn'}' "
                             "mixes runs 'runs/full' and 'runs/quick' with different settings: "
                             "data.count (100 vs 2), methods.smoothgrad.samples (50 vs 2); "), err[0]
    assert "results/reproduce-quick" in err[0]
    assert not (root / "report.html").exists() and not (root / "summary.csv").exists()  # nothing half-mixed


def test_the_same_run_twice_is_refused(tmp_path):
    from harness.errors import HarnessError

    root = tmp_path / "reproduce"
    _cascading_run(root / "cascading_cnn" / "runs" / "a")
    _cascading_run(root / "cascading_cnn" / "runs" / "b")
    with pytest.raises(HarnessError, match=r"mixes runs 'runs/a' and 'runs/b': the same run twice \(model "
                                           r"mnist_cnn, schedule cascading, methods gradient, same settings\)"):
        build_report(root)
    assert not (root / "summary.csv").exists()


def test_runs_of_different_models_in_one_experiment_are_kept(tmp_path):
    """Data randomization: one run per model, same settings: reported together (a setting that only one
    model's run has, such as its schedule's donor, is not a difference)."""
    root = make_reproduce_folder(tmp_path / "reproduce")
    build_report(root)
    summary = pd.read_csv(root / "summary.csv")
    assert set(summary.loc[summary["experiment"] == "data_randomization", "model"]) == {"mnist_cnn",
                                                                                       "mnist_mlp_randlabels"}


def test_runs_sharing_a_method_are_refused_runs_splitting_methods_are_kept(tmp_path):
    from harness.errors import HarnessError

    root = tmp_path / "reproduce"
    _cascading_run(root / "cascading_cnn" / "runs" / "both", samples=50)       # gradient + smoothgrad
    _cascading_run(root / "cascading_cnn" / "runs" / "gradient")              # gradient again
    with pytest.raises(HarnessError, match=r"mixes runs 'runs/both' and 'runs/gradient': the same run twice "
                                           r"\(model mnist_cnn, schedule cascading, methods gradient,"):
        build_report(root)
    split = tmp_path / "split"
    _cascading_run(split / "cascading_cnn" / "runs" / "gradient")
    smoothgrad = _cascading_run(split / "cascading_cnn" / "runs" / "smoothgrad", samples=50)
    import json
    record = json.loads((smoothgrad / "run.json").read_text())
    record["methods"] = [m for m in record["methods"] if m["name"] == "smoothgrad"]
    write_json(smoothgrad / "run.json", record)
    build_report(split)  # one experiment, its methods split over two runs: one report


def test_every_registered_method_metric_and_control_has_a_display_name():
    """The report speaks the paper's language: a newly registered method, metric or control without
    an entry in harness/report/labels.py would show up as its raw key."""
    from harness import controls, methods, metrics
    from harness.report import labels

    assert set(methods.names()) <= set(labels.METHOD_LABELS)
    assert set(metrics.METRIC_NAMES) <= set(labels.METRIC_LABELS) <= set(labels.METRIC_SHORT)
    assert set(controls.CONTROLS) <= set(labels.CONTROL_LABELS)


@pytest.mark.parametrize("model, paper_model", [
    ("mnist_cnn", "mnist_cnn"), ("mnist_cnn_randlabels", "mnist_cnn"), ("mnist_mlp_randlabels", "mnist_mlp"),
    ("mnist_cnn_authors", "mnist_cnn"), ("mnist_cnn_authors_seed1", "mnist_cnn"), ("mnist_mlp_authors", "mnist_mlp"),
    ("mnist_cnn_authors@5000", "mnist_cnn_authors@5000"), ("mnist_cnn_fast", "mnist_cnn_fast")])
def test_the_authors_recipe_at_full_budget_is_compared_with_the_paper_and_its_snapshots_are_not(model, paper_model):
    """A run of the authors' recipe finds the paper's values; a less trained snapshot must not be
    judged against them, nor a different recipe."""
    from harness.report.labels import base_model

    assert base_model(model) == paper_model
