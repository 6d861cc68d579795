"""The `repairs` experiment: its runs compose, and the report takes runs that differ only in controls."""
from __future__ import annotations

import pytest

from harness import reproduce
from harness.errors import HarnessError
from harness.report.load import load_folder
from harness.results import write_json


def test_repairs_runs_every_test_on_the_cnn_and_the_mlp(tmp_path):
    definition = reproduce.definitions()["repairs"]
    assert definition.get("default", True) is True  # part of `make reproduce`
    seen = set()
    for overrides in definition["runs"]:
        cfg, _ = reproduce.compose_run(list(overrides), tmp_path, quick=False)
        names = [m if isinstance(m, str) else m["name"] for m in cfg.methods]
        assert {"gradient", "smoothgrad", "integrated_gradients", "gradient_x_input", "guided_backprop",
                "random_attribution", "edge_detector"} <= set(names)
        assert ("gradcam" in names) == (cfg.model.name == "mnist_cnn")
        assert "emprt" in cfg.metrics.metrics
        seen.add((cfg.model.name, cfg.schedule.name, tuple(cfg.controls)))
        if cfg.schedule.name == "smprt":
            assert (cfg.schedule.samples, cfg.schedule.spread) == (50, 0.1)
    for model in ("mnist_cnn", "mnist_mlp"):
        assert {(m, s, c) for m, s, c in seen if m == model} == {
            (model, "cascading", ()), (model, "bottom_up", ("random_logit",)), (model, "smprt", ())}


def _run(folder, schedule, controls, count=50):
    write_json(folder / "run.json", {
        "config": {"experiment": "repairs", "data": {"source": "mnist", "count": count}, "controls": controls,
                   "schedule": {"name": schedule}},
        "methods": [{"name": "gradient", "label": "gradient", "params": {}}],
        "model": {"name": "mnist_cnn"}, "schedule": {"name": schedule}, "seed": 0})


def test_runs_of_one_experiment_may_differ_in_their_controls_not_in_other_settings(tmp_path):
    root = tmp_path / "reproduce"
    _run(root / "repairs" / "runs" / "cascading", "cascading", [])
    _run(root / "repairs" / "runs" / "bottom_up", "bottom_up", ["random_logit"])
    (experiment,) = load_folder(root)
    assert len(experiment.runs) == 2
    _run(root / "repairs" / "runs" / "smprt", "smprt", [], count=2)
    with pytest.raises(HarnessError, match=r"with different settings: data.count \(50 vs 2\)"):
        load_folder(root)
