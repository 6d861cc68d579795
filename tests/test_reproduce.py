"""A reduced version of every experiment (few images, few samples): the files and their columns."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import reproduce
from harness.results import SCORE_COLUMNS, SUMMARY_COLUMNS


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    reproduce.main(["--quick", "--out", str(out)])
    return out


def test_every_offline_experiment_ran(reproduced):
    for name in ("cascading_cnn", "cascading_mlp", "independent_cnn", "data_randomization", "calibration", "repairs",
                 "segmentation"):
        runs = list((reproduced / name).glob("runs/*/scores.csv"))
        assert runs, name
        for scores in runs:
            assert list(pd.read_csv(scores).columns) == SCORE_COLUMNS
            assert list(pd.read_csv(scores.parent / "summary.csv").columns) == SUMMARY_COLUMNS


def test_quick_runs_take_early_snapshots_and_few_noisy_copies(reproduced):
    # Catches: --quick training the 55,000-step default models (most of an hour each on 2 cores), or
    # running sMPRT's 50 noisy copies per map.
    records = [json.loads(p.read_text()) for p in reproduced.glob("*/runs/*/run.json")]
    sources = {r["config"]["model"]["source"] for r in records if r["config"].get("model")}
    assert {"builtin:mnist_cnn_authors@1200", "builtin:mnist_mlp_authors@1200", "builtin:mnist_seg@500"} <= sources
    assert all("@" in s or s.endswith("_randlabels") for s in sources if s.startswith("builtin:")), sources
    smprt = [r for r in records if (r["config"].get("schedule") or {}).get("name") == "smprt"]
    assert smprt and all(r["config"]["schedule"]["samples"] == reproduce.QUICK_METHOD_PARAMS["samples"] for r in smprt)


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


def test_rerun_computes_nothing_finished(reproduced, capsys, monkeypatch):
    """A rerun of a finished experiment trains nothing, calls no saliency kernel and no forward pass,
    and leaves every finished part file (bytes and modification time) as it was."""
    from harness import methods
    from harness.models.wrapper import ModelUnderTest

    folder = reproduced / "cascading_mlp"
    parts = sorted(p for p in folder.rglob("parts/*") if p.is_file())
    assert parts
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts}
    calls = []
    methods._load_families()
    for name, kernel in list(methods._REGISTRY.items()):
        monkeypatch.setitem(methods._REGISTRY, name,
                            lambda *args, _name=name, _kernel=kernel: calls.append(_name) or _kernel(*args))
    predict = ModelUnderTest.predict

    def counted_predict(self, x, *args, **kwargs):
        if np.asarray(x).any():  # a forward pass over images (loading a model probes it with zeros)
            calls.append("predict")
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(ModelUnderTest, "predict", counted_predict)
    capsys.readouterr()
    reproduce.main(["--quick", "--out", str(reproduced), "cascading_mlp"])
    assert "training" not in capsys.readouterr().out
    assert calls == []  # nothing recomputed
    assert sorted(p for p in folder.rglob("parts/*") if p.is_file()) == parts
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts} == before


def test_quick_runs_default_to_their_own_folder(tmp_path, monkeypatch):
    """--quick writes results/reproduce-quick, never into the full run's results/reproduce."""
    import harness.report

    monkeypatch.chdir(tmp_path)
    outs = []
    monkeypatch.setattr(reproduce, "run_experiment", lambda name, definition, out, quick, extra: outs.append((out, quick)) or "done")
    monkeypatch.setattr(reproduce, "train_models", lambda *args: None)  # tests/test_prepare.py
    monkeypatch.setattr(harness.report, "build_report", lambda out: outs.append(("report", out)) or out / "report.html")
    reproduce.main(["--quick", "cascading_mlp"])
    reproduce.main(["cascading_mlp"])
    reproduce.main(["--quick", "--out", "elsewhere", "cascading_mlp"])
    reproduce.main(["cascading_mlp", "--out", "after", "data.count=3"])  # options after names and overrides
    assert outs == [(Path("results/reproduce-quick"), True), ("report", Path("results/reproduce-quick")),
                    (Path("results/reproduce"), False), ("report", Path("results/reproduce")),
                    (Path("elsewhere"), True), ("report", Path("elsewhere")),
                    (Path("after"), False), ("report", Path("after"))]


def test_a_donor_may_be_a_snapshot_and_quick_runs_take_the_donors_early_one(monkeypatch):
    # Catches a donor `NAME@STEPS` refused as an unknown config (the authors' random-label recipe's
    # 8,000-step snapshot could not be a donor), and a quick run starting the donor's full 110,000
    # steps (its donor not cut to the early snapshot, as its model is).
    from harness import runner
    from harness.config import model_defaults
    from harness.errors import HarnessError

    assert model_defaults("mnist_cnn_randlabels_authors@8000")["source"] == "builtin:mnist_cnn_randlabels_authors@8000"
    assert model_defaults("mnist_cnn_randlabels_authors") == model_defaults("mnist_cnn_randlabels_authors@8000") | {
        "source": "builtin:mnist_cnn_randlabels_authors"}
    for bad in ("mnist_cnn_randlabels_authors@x", "mnist_cnn_randlabels_authors@0", "inception_v3@100"):
        with pytest.raises(HarnessError, match="@STEPS"):
            model_defaults(bad)
    loaded = []
    monkeypatch.setattr("harness.models.load_model", lambda config, log: loaded.append(config["source"]))
    runner._donor_model({"donor_model": "mnist_mlp_randlabels_authors@8000"}, log=print)
    assert loaded == ["builtin:mnist_mlp_randlabels_authors@8000"]

    def donor(quick, name):
        cfg, _ = reproduce.compose_run(["experiment=data_randomization_cnn", f"schedule.donor_model={name}"],
                                       Path("unused"), quick)
        return cfg.schedule.donor_model

    assert donor(True, "mnist_cnn_randlabels_authors") == f"mnist_cnn_randlabels_authors@{reproduce.QUICK_TRAINING_STEPS}"
    assert donor(True, "mnist_cnn_randlabels_authors@900") == "mnist_cnn_randlabels_authors@900"
    assert donor(True, "mnist_cnn_randlabels") == "mnist_cnn_randlabels"  # a fit without snapshots: as it is
    assert donor(False, "mnist_cnn_randlabels_authors") == "mnist_cnn_randlabels_authors"
