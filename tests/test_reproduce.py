"""A reduced version of every experiment (few images, few samples): the files and their columns."""
import json

import pandas as pd
import pytest

from harness import reproduce
from harness.tables import SCORE_COLUMNS, SUMMARY_COLUMNS


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    reproduce.main(["--quick", "--out", str(out)])
    return out


def test_every_offline_experiment_ran(reproduced):
    for name in ("cascading_cnn", "cascading_mlp", "independent_cnn", "data_randomization", "calibration"):
        runs = list((reproduced / name).glob("runs/*/scores.csv"))
        assert runs, name
        for scores in runs:
            assert list(pd.read_csv(scores).columns) == SCORE_COLUMNS
            assert list(pd.read_csv(scores.parent / "summary.csv").columns) == SUMMARY_COLUMNS


def test_inception_is_skipped_with_the_reason(reproduced):
    skipped = json.loads((reproduced / "inception_cascading" / "skipped.json").read_text())
    assert "could not be resolved" in skipped["reason"] and "TFHUB_CACHE_DIR" in skipped["how_to_provide"]


def test_data_randomization_rows(reproduced):
    scores = pd.concat(pd.read_csv(p) for p in (reproduced / "data_randomization").glob("runs/*/scores.csv"))
    assert set(scores["schedule"]) == {"data_randomization"}
    assert set(scores["block"]) == {"original", "random_labels"}
    assert set(scores["model"]) == {"mnist_cnn", "mnist_mlp"}
    for record in (json.loads(p.read_text()) for p in (reproduced / "data_randomization").glob("runs/*/run.json")):
        donor = record["model"]["donor"]
        assert donor["name"] == record["model"]["name"] + "_randlabels"
        assert donor["metrics"]["train_accuracy"] >= 0.95 and donor["metrics"]["test_accuracy"] < 0.2


def test_cascading_cnn_has_every_method_and_block(reproduced):
    scores = pd.read_csv(next((reproduced / "cascading_cnn").glob("runs/*/scores.csv")))
    assert {"gradient", "smoothgrad", "guided_backprop", "gradcam", "guided_gradcam", "integrated_gradients",
            "gradient_x_input", "ig_smoothgrad", "vargrad"} <= set(scores["method"])
    assert list(scores.loc[scores["step"] >= 0, "block"].drop_duplicates()) == ["original", "logits", "fc1", "conv2", "conv1"]


def test_report_and_merged_summary(reproduced):
    summary = pd.read_csv(reproduced / "summary.csv")
    assert summary.columns[0] == "experiment" and list(summary.columns[1:]) == SUMMARY_COLUMNS
    assert {"cascading_cnn", "data_randomization", "calibration"} <= set(summary["experiment"])
    html = (reproduced / "report.html").read_text()
    assert "data:image/png;base64" in html and "inception_cascading" in (reproduced / "report.md").read_text()
    models = (reproduced / "report.md").read_text().split("**Models**")[1].split("**Methods")[0]
    assert "(`mnist_cnn_randlabels`)" in models and "(`mnist_mlp_randlabels`)" in models  # with accuracies
    assert "`none`" not in models  # calibration has no model


def test_rerun_only_rebuilds(reproduced, capsys):
    reproduce.main(["--quick", "--out", str(reproduced), "cascading_mlp"])
    assert "training" not in capsys.readouterr().out
