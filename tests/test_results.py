"""The results-folder format (harness.results): the one reader, the run record, the maps keys."""
import json

import numpy as np
import pandas as pd

from harness import results
from harness.results import RunRecord


def test_read_table_keeps_text_as_written(tmp_path):
    """A block called NA, an image id like 0001 and an empty reason survive a write and a read:
    pandas' defaults would turn them into NaN, 1 and NaN."""
    frame = pd.DataFrame([{c: "" for c in results.SCORE_COLUMNS} | {
        "model": "m", "method": "gradient", "variant": "gradient", "schedule": "cascading", "step": 1,
        "block": "NA", "image_id": "0001", "target_class": 3, "reference_class": 3, "metric": "ssim",
        "value": 0.5, "degenerate": False, "reason": "", "seed": 0}])
    results.write_csv(tmp_path / results.SCORES, frame)
    back = results.read_table(tmp_path / results.SCORES)
    assert back.loc[0, "block"] == "NA" and back.loc[0, "image_id"] == "0001" and back.loc[0, "reason"] == ""
    assert back.loc[0, "value"] == 0.5 and back.loc[0, "step"] == 1


def test_run_record_round_trip_and_older_records(tmp_path):
    record = RunRecord(config={"experiment": {"name": "cascading_cnn"}}, seed=3, model={"name": "mnist_cnn"},
                       schedule={"name": "cascading"}, methods=[{"name": "integrated_gradients", "label": "ig5",
                                                                 "params": {"steps": 5}}])
    record.write(tmp_path)
    data = json.loads((tmp_path / results.RECORD).read_text())
    assert data["format_version"] == results.FORMAT_VERSION and "extra" not in data
    back = RunRecord.read(tmp_path)
    assert back == record
    assert (back.experiment, back.model_name, back.schedule_name, back.method_labels()) == (
        "cascading_cnn", "mnist_cnn", "cascading", ["ig5"])
    # A version-1 record: no format_version, no labels, a field this version does not know.
    old = RunRecord.from_json({"seed": 1, "methods": [{"name": "gradient", "params": {}}], "images": None,
                               "note": "kept"})
    assert old.format_version == 1 and old.method_labels() == ["gradient"] and old.images == {}
    assert old.to_json()["note"] == "kept"


def test_maps_keys_round_trip():
    key = results.maps_key("integrated_gradients[steps=5]", 3)
    assert key == "integrated_gradients[steps=5]/003"
    assert results.split_maps_key(key) == ("integrated_gradients[steps=5]", 3)
    assert results.split_maps_key("images") is None and results.split_maps_key("image_ids") is None


def test_every_module_uses_the_one_format():
    """Column lists, sentinels and the CSV reader are defined once: no module re-declares them."""
    from pathlib import Path

    package = Path(results.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "results.py":
            continue
        text = path.read_text()
        assert "keep_default_na" not in text, f"{path} reads a results CSV by hand"
        for name in ("SCORE_COLUMNS =", "SUMMARY_COLUMNS =", "GROUP_COLUMNS =", "CONTROL_STEP =", "ORIGINAL =",
                     "RANDOM_LABELS =", "CONTROL_SCHEDULE ="):
            assert name not in text, f"{path} re-declares {name.rstrip(' =')}"
    np.testing.assert_equal(results.CONTROL_STEP, -1)
