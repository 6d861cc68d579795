"""The random-logit test (Sixt et al.) as the control `random_logit`: a seeded other class per image."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import runner
from harness.controls import random_other_classes
from harness.errors import HarnessError

from test_runner import config, image_folder, tiny_overrides  # noqa: F401 - image_folder is a fixture

IDS = [f"img{i}" for i in range(400)]


@pytest.mark.parametrize("num_classes", [2, 3, 10, 1001])
def test_the_random_class_is_never_the_explained_one_and_covers_the_others(num_classes):
    explained = np.random.default_rng(num_classes).integers(num_classes, size=len(IDS))
    others = random_other_classes(explained, IDS, num_classes, seed=0)
    assert others.dtype == np.int32 and not np.any(others == explained)
    assert others.min() >= 0 and others.max() < num_classes
    if num_classes <= 10:  # every other class is drawn for some image
        for cls in range(num_classes):
            assert set(others[explained == cls]) == set(range(num_classes)) - {cls}


def test_the_random_class_is_reproducible_by_seed_and_image():
    explained = np.random.default_rng(1).integers(10, size=len(IDS))
    first = random_other_classes(explained, IDS, 10, seed=3)
    np.testing.assert_array_equal(first, random_other_classes(explained, IDS, 10, seed=3))
    assert np.mean(first != random_other_classes(explained, IDS, 10, seed=4)) > 0.5
    # an image gets its class from its id, not from its place in the set
    np.testing.assert_array_equal(random_other_classes(explained[::-1], IDS[::-1], 10, seed=3), first[::-1])
    with pytest.raises(HarnessError, match="random_logit needs a model with at least 2 classes; this one has 1"):
        random_other_classes(np.zeros(2, np.int32), IDS[:2], 1, seed=0)


def test_random_logit_rows_compare_the_map_of_another_class_on_the_trained_model(
        tmp_path, tiny_saved_model, image_folder):  # noqa: F811
    path, _ = tiny_saved_model
    overrides = [*tiny_overrides(path, image_folder, tmp_path / "r"), "methods=[gradient,edge_detector]",
                 "controls=[random_logit]"]
    scores = pd.read_csv(runner.run(config(*overrides), log=lambda _: None) / "scores.csv")
    rows = scores[scores["block"] == "random_logit"]
    assert (rows["schedule"] == "control").all() and (rows["step"] == -1).all() and len(rows) == 2 * 6 * 4
    explained = scores[scores["step"] == 0].groupby("image_id")["target_class"].first()
    assert (rows["reference_class"].to_numpy() == explained[rows["image_id"]].to_numpy()).all()
    assert (rows["target_class"] != rows["reference_class"]).all()
    expected = random_other_classes(explained.to_numpy(), list(explained.index), 3, seed=0)
    assert dict(zip(explained.index, expected)) == dict(zip(rows["image_id"], rows["target_class"]))
    gradient = rows[(rows["method"] == "gradient") & (rows["metric"] == "spearman_abs")]["value"]
    edges = rows[(rows["method"] == "edge_detector") & (rows["metric"] == "spearman_abs")]["value"]
    assert np.allclose(edges, 1.0) and gradient.max() < 0.999  # no model, no class: the same map
    again = pd.read_csv(runner.run(config(*overrides[:4], f"results_dir={tmp_path / 'again'}", *overrides[5:]),
                                   log=lambda _: None) / "scores.csv")
    pd.testing.assert_frame_equal(again[again["block"] == "random_logit"].reset_index(drop=True),
                                  rows.reset_index(drop=True))
