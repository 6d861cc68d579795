"""The authors' step-budget recipes: architecture, weight decay, steps counted, checkpoint/resume, snapshots.

Every training here is a few dozen steps into a temporary cache (`HARNESS_CACHE_DIR`).
"""
import json

import numpy as np
import pytest

from harness import zoo
from harness.zoo import budget

CNN = zoo.RECIPES["mnist_cnn_authors"]


def _regularization_loss(model) -> float:
    import tensorflow as tf

    return float(tf.add_n(model.losses))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    return tmp_path


def _state(model, optimizer):
    return [v.numpy() for v in model.weights] + [v.numpy() for v in optimizer.variables]


def _same_bytes(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_authors_recipes_follow_the_authors_code():
    for name in ("mnist_cnn_authors", "mnist_mlp_authors"):
        recipe = zoo.RECIPES[name]
        assert (recipe.learning_rate, recipe.batch_size, recipe.steps, recipe.adam_epsilon) == (1e-4, 50, 55_000, 1e-8)
        assert recipe.snapshots == (1_200, 5_000, 15_000, 30_000, 55_000)
    assert zoo.RECIPES["mnist_cnn_authors"].weight_decay == 1e-3
    assert zoo.RECIPES["mnist_mlp_authors"].weight_decay == 0.0  # src/train_mlp_models.py: no regularization


def test_authors_cnn_has_no_dropout_layer():
    import keras

    model, _, _ = budget.build(CNN)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == []
    assert [v.path for v in model.trainable_variables] == [
        f"{layer}/{var}" for layer in ("conv1", "conv2", "fc1", "logits") for var in ("kernel", "bias")]
    model, _, _ = budget.build(zoo.RECIPES["mnist_mlp_authors"])
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "logits"])
def test_regularization_is_the_authors_l2_loss(layer):
    """0.001 * tf.nn.l2_loss(W) = 0.001 * sum(W^2) / 2 on conv1, conv2 and fc1; nothing on the logits."""
    model, _, _ = budget.build(CNN)
    rng = np.random.default_rng(0)
    for other in ("conv1", "conv2", "fc1", "logits"):
        model.get_layer(other).kernel.assign(np.zeros(model.get_layer(other).kernel.shape, np.float32))
    kernel = model.get_layer(layer).kernel
    known = (rng.standard_normal(kernel.shape) * 0.1 / np.sqrt(kernel.shape.num_elements() / 800)).astype(np.float32)
    kernel.assign(known)
    expected = 0.0 if layer == "logits" else 1e-3 * float(np.sum(known.astype(np.float64) ** 2)) / 2
    assert expected == 0.0 or expected > 1e-3  # a factor of 2 is far outside the tolerance
    assert abs(_regularization_loss(model) - expected) <= 1e-7


def test_training_loss_is_cross_entropy_plus_the_regularization():
    import tensorflow as tf

    x, y, _, _ = zoo.mnist.load_split()
    model, _, optimizer = budget.build(CNN)
    idx = budget.batch_indices(CNN.seed, len(x), CNN.batch_size, 0, 1)
    logits = model(x[idx[0]], training=False)
    xent = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[idx[0]], logits)))
    reg = _regularization_loss(model)
    train = budget.make_train_fn(model, optimizer, x, y, chunk=1, jit_compile=False)
    assert float(train(idx, np.int32(1))) == pytest.approx(xent + reg, rel=1e-5)
    assert reg > 1.0  # the authors' penalty on a fresh CNN is large (fc1 alone: ~12)


def test_a_recipe_of_n_steps_makes_n_optimizer_updates(cache, monkeypatch):
    monkeypatch.setattr(budget, "CHUNK", 10)  # 37 = 10 + 10 + 10 + 7: whole and partial chunks
    recipe = budget.StepRecipe("cnn", weight_decay=1e-3, steps=37, snapshots=())
    model, step, history = budget.train_until("t_cnn", recipe, 37, log=lambda _: None, progress=False, export=False)
    assert step == 37 and history[-1]["to"] == 37
    ckpt = budget.state_dir("t_cnn", recipe) / "latest.npz"
    with np.load(ckpt) as data:
        assert int(data["o0"]) == 37  # optimizer.iterations, saved as the first optimizer variable
    fresh, _, optimizer = budget.build(recipe)
    assert budget.load_checkpoint(ckpt, fresh, optimizer)[0] == 37
    assert int(optimizer.iterations.numpy()) == 37


def test_batches_depend_only_on_the_step():
    whole = budget.batch_indices(0, 4000, 50, 0, 170)  # crosses two epoch boundaries (80 steps each)
    parts = np.concatenate([budget.batch_indices(0, 4000, 50, s, n) for s, n in ((0, 30), (30, 57), (87, 83))])
    assert (whole == parts).all()
    assert sorted(whole[:80].ravel().tolist()) == list(range(4000))  # one epoch visits each digit once
    assert not (whole[:80] == whole[80:160]).all()  # a new order each epoch
    assert not (budget.batch_indices(1, 4000, 50, 0, 80) == whole[:80]).all()  # and each seed


@pytest.mark.parametrize("stop", ["stop_after", "interrupt"])
def test_killed_training_resumes_to_the_same_bytes(cache, monkeypatch, stop):
    """Stopped after 15 steps (or by Ctrl-C / SIGTERM during the first call), resumed in a fresh model, to 30
    steps == 30 steps in one go, weights and Adam state byte for byte."""
    monkeypatch.setattr(budget, "CHUNK", 8)
    recipe = budget.StepRecipe("cnn", weight_decay=1e-3, steps=30, snapshots=())
    quiet = dict(log=lambda _: None, progress=False, export=False)
    if stop == "stop_after":
        budget.train_until("resumed", recipe, 30, stop_after=15, **quiet)
        first = 15
    else:
        real = budget.make_train_fn

        def interrupted_in_the_first_call(*args, **kwargs):
            fn, calls = real(*args, **kwargs), []

            def call(*a):
                result = fn(*a)
                calls.append(1)
                if len(calls) == 1:  # the signal arrives while the first call runs
                    raise KeyboardInterrupt
                return result
            return call

        monkeypatch.setattr(budget, "make_train_fn", interrupted_in_the_first_call)
        with pytest.raises(KeyboardInterrupt):
            budget.train_until("resumed", recipe, 30, **quiet)
        monkeypatch.setattr(budget, "make_train_fn", real)
        first = 8
    assert budget.checkpoint_step(budget.state_dir("resumed", recipe) / "latest.npz") == first
    resumed, step, history = budget.train_until("resumed", recipe, 30, **quiet)
    assert step == 30 and [(h["from"], h["to"]) for h in history] == [(0, first), (first, 30)]
    assert all(h["seconds"] > 0 for h in history)
    whole, step, _ = budget.train_until("whole", recipe, 30, **quiet)
    assert step == 30
    a = np.load(budget.state_dir("resumed", recipe) / "latest.npz")
    b = np.load(budget.state_dir("whole", recipe) / "latest.npz")
    arrays = [k for k in a.files if k != "meta"]
    assert arrays == [k for k in b.files if k != "meta"] and len(arrays) > 8
    assert _same_bytes([a[k] for k in arrays], [b[k] for k in arrays])
    assert not _same_bytes([a["w0"]], [budget.build(recipe)[0].weights[0].numpy()])  # it did train


def test_snapshots_are_exported_and_load_as_builtin_models(cache, monkeypatch):
    from harness.models import load_model

    monkeypatch.setattr(budget, "CHUNK", 4)
    recipe = budget.StepRecipe("cnn", weight_decay=1e-3, steps=12, snapshots=(5, 12))
    monkeypatch.setitem(zoo.RECIPES, "tiny_cnn_authors", recipe)
    path = zoo.model_path("tiny_cnn_authors@5", log=lambda _: None)  # trains 0 -> 5, exports @5
    assert path == budget.snapshot_path("tiny_cnn_authors", recipe, 5)
    assert budget.available_snapshots("tiny_cnn_authors", recipe) == [5]
    full = zoo.model_path("tiny_cnn_authors", log=lambda _: None)  # resumes 5 -> 12, exports @12
    assert full == budget.snapshot_path("tiny_cnn_authors", recipe, 12)
    meta = json.loads((full / "harness.json").read_text())
    assert meta["name"] == "tiny_cnn_authors@12" and meta["recipe"]["steps"] == 12
    metrics = meta["metrics"]
    assert metrics["steps"] == 12 and metrics["device"].startswith(("CPU", "NVIDIA")) and metrics["train_seconds"] > 0
    assert [(s["from"], s["to"]) for s in metrics["segments"]] == [(0, 5), (5, 12)]
    model = load_model({"source": "builtin:tiny_cnn_authors@5", "name": "tiny@5"})
    assert [b.name for b in model.blocks] == ["conv1", "conv2", "fc1", "logits"]
    with np.load(budget.state_dir("tiny_cnn_authors", recipe) / "step-5.npz") as data:
        kernel = model.variables[0]
        assert "conv1" in kernel.name and kernel.variable.numpy().tobytes() == data["w0"].tobytes()
    with pytest.raises(zoo.HarnessError, match="NAME@STEPS"):
        zoo.model_path("mnist_cnn_randlabels@5", log=lambda _: None)


def test_no_training_on_demand_when_told(cache, monkeypatch):
    monkeypatch.setenv("HARNESS_ZOO_TRAIN", "0")
    with pytest.raises(zoo.HarnessError, match=r"mnist_cnn_authors@1200 is not trained yet.*--until 1200"):
        zoo.model_path("mnist_cnn_authors@1200", log=lambda _: None)
    assert not (cache / "zoo" / ".train").exists()


def test_shared_near_zero_fraction():
    from harness.zoo import study

    rng = np.random.default_rng(0)
    reference = rng.uniform(0.5, 1.0, (3, 10, 10, 1))
    other = rng.uniform(0.5, 1.0, (3, 10, 10, 1))
    reference[:, :2] = 0.0    # a frame of 20 % zeros in the trained map ...
    other[:, :1] = 1e-4       # ... of which half is near zero in the other map too
    other[:, 1:2] = -0.9     # large and negative: not near zero (magnitudes are compared)
    assert study.shared_near_zero(reference, other).tolist() == pytest.approx([0.1] * 3)
    assert study.near_zero(reference).mean() == pytest.approx(0.2)


def test_budget_table_reads_each_snapshots_run(tmp_path):
    """One run folder per snapshot -> rows (steps, method) with the logits step's |Spearman| and the
    shared-near-zero fraction of the kept maps; markdown and figure from it."""
    from harness.results import maps_key
    from harness.zoo import study

    for steps, value in ((5000, 0.4), (1200, 0.1)):
        run = tmp_path / "runs" / f"run-{steps}"
        run.mkdir(parents=True)
        model = f"mnist_cnn_authors@{steps}"
        (run / "run.json").write_text(json.dumps({"config": {"model": {"source": f"builtin:{model}"}}}))
        rows = [[model, m, m, "cascading", step, block, "spearman_abs", 3, v, 0.1, 0.05, v - 0.1, v + 0.1, 0]
                for m in ("gradient", "gradcam") for step, block, v in ((0, "original", 1.0), (1, "logits", value))]
        rows.append([model, "gradient", "gradient", "cascading", 1, "logits", "ssim", 3, 0.9, 0, 0, 0.9, 0.9, 0])
        _summary(rows).to_csv(run / "summary.csv", index=False)
        trained = np.ones((3, 4, 5, 1))
        trained[:, 0] = 0.0  # 5 of 20 pixels near zero ...
        logits = np.ones((3, 4, 5, 1))
        logits[:, 0, :2] = 0.0  # ... 2 of those shared
        np.savez(run / "maps.npz", **{maps_key("gradient", 0): trained, maps_key("gradient", 1): logits})
    table = study.budget_table(tmp_path)
    assert table[["steps", "method", "spearman_abs"]].values.tolist() == [
        [1200, "gradient", 0.1], [5000, "gradient", 0.4], [1200, "gradcam", 0.1], [5000, "gradcam", 0.4]]
    gradient = table[table["method"] == "gradient"]
    assert gradient["shared_near_zero"].tolist() == pytest.approx([0.1, 0.1])
    assert gradient["trained_near_zero"].tolist() == pytest.approx([0.25, 0.25])
    assert table[table["method"] == "gradcam"]["shared_near_zero"].isna().all()  # no maps kept for it
    markdown = study.budget_markdown(table)
    assert "| 1,200 |" in markdown and "0.40 [0.30, 0.50] (10%)" in markdown
    assert study.budget_figure(table, tmp_path / "fig.png").stat().st_size > 1000


def test_a_snapshot_exported_by_a_running_trainer_is_used_at_once(cache, monkeypatch):
    """While another process holds the trainer lock (a long training), asking for a snapshot waits
    only until that snapshot appears, not until the lock is free, and trains nothing itself."""
    import fcntl
    import threading
    import time

    monkeypatch.setattr(budget, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(budget, "train_until", lambda *a, **k: pytest.fail("must not train"))
    recipe = zoo.RECIPES["mnist_cnn_authors"]
    path = budget.snapshot_path("mnist_cnn_authors", recipe, 1200)
    (cache / "zoo").mkdir(parents=True)
    with open(cache / "zoo" / ".mnist_cnn_authors.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the running trainer

        def export():
            path.mkdir(parents=True)
            (path / "saved_model.pb").write_bytes(b"")

        timers = [threading.Timer(0.3, export),
                  threading.Timer(5.0, lambda: fcntl.flock(held, fcntl.LOCK_UN))]  # the trainer ends
        for timer in timers:
            timer.start()
        began = time.monotonic()
        try:
            assert zoo.model_path("mnist_cnn_authors@1200", log=lambda _: None) == path
            assert time.monotonic() - began < 4.0  # before the trainer let go of the lock
        finally:
            timers[1].cancel()


def _summary(rows):
    """summary.csv rows given up to n_degenerate; the columns after it (counts) are 0."""
    import pandas as pd

    from harness.results import SUMMARY_COLUMNS

    named = SUMMARY_COLUMNS[:SUMMARY_COLUMNS.index("n_degenerate") + 1]
    return pd.DataFrame(rows, columns=named).reindex(columns=SUMMARY_COLUMNS, fill_value=0)


def _cascade_run(folder, model: str, curves: dict[str, list[float]]) -> None:
    """A fabricated run folder: `model`'s cascading |Spearman| means per method (steps 1, 2, ...)."""
    run = folder / "runs" / model.replace("@", "-")
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"model": {"source": f"builtin:{model}"}}}))
    rows = [[model, m, m, "cascading", step, f"block{step}", "spearman_abs", 3, v, 0.1, 0.05, v - 0.1, v + 0.1, 0]
            for m, values in curves.items() for step, v in enumerate([1.0, *values])]
    _summary(rows).to_csv(run / "summary.csv", index=False)


def test_budget_table_keeps_recipes_apart(tmp_path):
    """Two recipes with snapshots at the same step count are two rows each, labelled by recipe (a
    table keyed by steps alone would merge them)."""
    from harness.zoo import study

    _cascade_run(tmp_path, "mnist_cnn_authors@1200", {"gradient": [0.1]})
    _cascade_run(tmp_path, "mnist_cnn_fast@1200", {"gradient": [0.5]})
    table = study.budget_table(tmp_path)
    assert sorted(zip(table["recipe"], table["steps"], table["spearman_abs"])) == [
        ("mnist_cnn_authors", 1200, 0.1), ("mnist_cnn_fast", 1200, 0.5)]
    markdown = study.budget_markdown(table)
    assert "| mnist_cnn_authors | 1,200 |" in markdown and "| mnist_cnn_fast | 1,200 |" in markdown


def test_recipe_agreement_compares_whole_curves_with_the_seed_spread(tmp_path):
    """Distance and spread are the largest gap over every cascade step (not the logits step only):
    the candidate agrees at the logits step but is 0.3 off at the last step, beyond the seeds' 0.1."""
    from harness.zoo import study

    _cascade_run(tmp_path, "ref@55000", {"gradient": [0.6, 0.4, 0.1], "gradcam": [0.5, 0.3, 0.3]})
    _cascade_run(tmp_path, "ref_seed1@55000", {"gradient": [0.55, 0.35, 0.2], "gradcam": [0.45, 0.3, 0.25]})
    _cascade_run(tmp_path, "cheap@5500", {"gradient": [0.6, 0.4, 0.4], "gradcam": [0.52, 0.27, 0.3]})
    curves = study.cascade_curves(tmp_path)
    agreement = study.recipe_agreement(curves, "ref@55000", "ref_seed1@55000", ["cheap@5500"])
    cheap = agreement[agreement["candidate"] == "cheap@5500"].set_index("method")
    assert cheap.loc["gradient", "distance"] == pytest.approx(0.3)
    assert cheap.loc["gradient", "spread"] == pytest.approx(0.1)
    assert not cheap.loc["gradient", "within"]
    assert cheap.loc["gradcam", "distance"] == pytest.approx(0.03)
    assert cheap.loc["gradcam", "within"]
    with pytest.raises(ValueError, match="no cascading runs of 'missing@1'"):
        study.recipe_agreement(curves, "ref@55000", "missing@1", [])


def test_a_kill_during_a_snapshots_export_is_repaired_by_the_next_request(cache, monkeypatch):
    """Killed while exporting @5 (its checkpoints already written): asking for @5 again exports it
    from the checkpoint (the same weights, the same training record) instead of returning a folder
    that does not exist."""
    monkeypatch.setattr(budget, "CHUNK", 4)
    recipe = budget.StepRecipe("cnn", weight_decay=1e-3, steps=12, snapshots=(5, 12))
    monkeypatch.setitem(zoo.RECIPES, "tiny_cnn_authors", recipe)
    real_export = zoo.mnist.export_model

    def killed_mid_export(model, path, *args):  # the kill lands after the SavedModel's first files
        real_export(model, path.parent / ".partial", *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.mnist, "export_model", killed_mid_export)
    with pytest.raises(KeyboardInterrupt):
        zoo.model_path("tiny_cnn_authors@5", log=lambda _: None)
    monkeypatch.setattr(zoo.mnist, "export_model", real_export)
    folder = budget.state_dir("tiny_cnn_authors", recipe)
    assert budget.checkpoint_step(folder / "latest.npz") == 5 and (folder / "step-5.npz").is_file()
    assert budget.available_snapshots("tiny_cnn_authors", recipe) == []
    path = zoo.model_path("tiny_cnn_authors@5", log=lambda _: None)
    assert (path / "saved_model.pb").is_file() and budget.available_snapshots("tiny_cnn_authors", recipe) == [5]
    meta = json.loads((path / "harness.json").read_text())
    assert meta["name"] == "tiny_cnn_authors@5" and [(s["from"], s["to"]) for s in meta["metrics"]["segments"]] == [(0, 5)]
    with np.load(folder / "step-5.npz") as data:
        from harness.models import load_model

        model = load_model({"source": "builtin:tiny_cnn_authors@5", "name": "tiny@5"})
        assert model.variables[0].variable.numpy().tobytes() == data["w0"].tobytes()
    assert budget.checkpoint_step(folder / "latest.npz") == 5
