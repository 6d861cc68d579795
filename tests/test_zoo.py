"""The built-in models reach test accuracies close to the paper's (docs/protocol.md §1.7), and load from the cache."""
import json
import os

import pytest

from harness import zoo
from harness.zoo import budget
from harness.models import load_model
from conftest import CHEAP_CNN


def _metrics(name):
    return json.loads((zoo.model_path(name, log=lambda _: None) / "harness.json").read_text())["metrics"]


@pytest.mark.parametrize("name, held_out", [("mnist_cnn@1200", 0.95), ("mnist_mlp@1200", 0.93)])
def test_true_label_models_generalize(name, held_out):
    assert _metrics(name)["test_accuracy"] >= held_out


@pytest.mark.parametrize("name", ["mnist_cnn_randlabels", "mnist_mlp_randlabels"])
def test_random_label_models_memorize_and_do_not_generalize(name):
    metrics = _metrics(name)
    assert metrics["train_accuracy"] >= 0.95
    assert metrics["test_accuracy"] < 0.2  # chance is 0.1


def test_split_is_stratified_and_disjoint():
    from harness.zoo import mnist
    import numpy as np

    x_train, y_train, x_test, y_test = mnist.load_split()
    assert len(x_train) == 4000 and len(x_test) == 1000
    assert np.bincount(y_test).tolist() == [100] * 10
    assert x_test.min() == 0.0 and x_test.max() <= 1.0
    assert not (set(map(bytes, x_test.reshape(1000, -1)[:50])) & set(map(bytes, x_train.reshape(4000, -1))))


def test_permuted_labels_keep_the_marginal():
    import numpy as np
    from harness.zoo import mnist

    y = np.repeat(np.arange(10), 50)
    permuted = mnist.permuted_labels(y, 0)
    assert sorted(permuted.tolist()) == sorted(y.tolist()) and (permuted != y).mean() > 0.8


def test_builtin_loads_through_the_saved_model_path():
    model = load_model({"source": CHEAP_CNN, "name": "mnist_cnn"})
    assert model.source_kind == "builtin" and model.saved_model is not None
    assert [b.name for b in model.blocks] == ["conv1", "conv2", "fc1", "logits"]
    assert model.variables[0].initializer == {"kind": "truncated_normal", "std": 0.1}


def test_split_is_parsed_once_and_handed_out_as_copies():
    from harness.zoo import mnist

    first = mnist.load_split()
    first[0][:] = -1.0  # a caller scribbling on its arrays ...
    second = mnist.load_split()
    assert second[0].min() == 0.0  # ... does not reach the next caller
    assert mnist._split.cache_info().misses == 1


def test_default_models_are_the_authors_recipes_and_share_their_training():
    # Catches: the default built-ins drifting from the authors' recipes (the reproduction's numbers
    # would change silently), or an alias training a second copy of one trajectory.
    assert zoo.RECIPES[zoo.canonical("mnist_cnn")] == budget.StepRecipe("cnn", weight_decay=1e-3)
    assert zoo.RECIPES[zoo.canonical("mnist_mlp")] == budget.StepRecipe("mlp")
    assert zoo.RECIPES[zoo.canonical("mnist_cnn")].steps == 55_000
    assert zoo.model_path("mnist_cnn@1200", log=lambda _: None) == zoo.model_path("mnist_cnn_authors@1200",
                                                                                  log=lambda _: None)
    # The random-label models keep their recipes (and cache keys).
    assert {name: zoo.RECIPES[name].key() for name in ("mnist_cnn_randlabels", "mnist_mlp_randlabels")} == {
        "mnist_cnn_randlabels": "f682cdad45", "mnist_mlp_randlabels": "6eb6e9ec1e"}


def test_no_test_can_use_the_full_budget_model(monkeypatch):
    # Catches: HARNESS_ZOO_MAX_STEPS not applied (a test would start training for most of an hour).
    assert os.environ["HARNESS_ZOO_MAX_STEPS"] == "1200"  # conftest: for this process and its commands
    with pytest.raises(zoo.HarnessError, match=r"mnist_cnn_authors@55000: more steps than "
                                               r"HARNESS_ZOO_MAX_STEPS=1200 allows; use a snapshot such as "
                                               r"mnist_cnn_authors@1200"):
        zoo.model_path("mnist_cnn", log=lambda _: None)
    monkeypatch.setenv("HARNESS_ZOO_MAX_STEPS", "1199")
    with pytest.raises(zoo.HarnessError, match="HARNESS_ZOO_MAX_STEPS=1199"):
        zoo.model_path("mnist_mlp@1200", log=lambda _: None)  # cached or not


def test_unknown_builtin_names_are_one_clear_error():
    with pytest.raises(zoo.HarnessError, match="unknown built-in model 'nope'"):
        zoo.model_path("nope")
    with pytest.raises(zoo.HarnessError, match="NAME@STEPS"):
        zoo.model_path("mnist_mlp_randlabels@100")
    with pytest.raises(zoo.HarnessError, match="at least 1"):
        zoo.model_path("mnist_cnn_authors@0")
