"""harness.zoo.prepare: the models a run needs, trained before its experiments, with a time estimate."""
import pytest

from harness import reproduce, zoo
from harness.zoo import budget, prepare


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    return tmp_path


def _export(name):
    path = zoo.cached_path(name)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")


def test_plan_groups_trajectories_and_leaves_out_what_is_cached_or_not_allowed(cache, monkeypatch):
    monkeypatch.setenv("HARNESS_ZOO_MAX_STEPS", "5000")
    _export("mnist_mlp_randlabels")
    groups = prepare.plan(["mnist_cnn@1200", "mnist_cnn_randlabels", "mnist_cnn_authors@5000", "mnist_cnn@1200",
                           "mnist_mlp_randlabels", "mnist_mlp@55000", "nonsense", "mnist_seg@500"])
    # One worker per trajectory, its snapshots in step order; longest first.
    assert groups == [["mnist_cnn_authors@1200", "mnist_cnn_authors@5000"], ["mnist_cnn_randlabels"], ["mnist_seg@500"]]
    monkeypatch.setenv("HARNESS_ZOO_TRAIN", "0")
    assert prepare.plan(["mnist_cnn@1200"]) == []


def test_the_estimate_counts_from_the_checkpoint(cache, monkeypatch):
    monkeypatch.setattr(prepare, "CNN_STEPS_PER_SECOND", 10.0)
    monkeypatch.setattr(prepare, "START_SECONDS", 0.0)
    assert prepare.reference_seconds(["mnist_cnn_authors@1200", "mnist_cnn_authors@5000"]) == 500.0
    recipe = zoo.RECIPES["mnist_cnn_authors"]
    folder = budget.state_dir("mnist_cnn_authors", recipe)
    model, _, optimizer = budget.build(recipe)
    optimizer.iterations.assign(1200)
    budget.save_checkpoint(folder / "step-1200.npz", model, optimizer, 1200, [])
    assert prepare.reference_seconds(["mnist_cnn_authors@5000"]) == 380.0


def test_workers_threads_and_wall_time():
    assert prepare.workers(4, cores=2) == 2 and prepare.threads(2, cores=2) == 2  # measured faster on 2 cores
    assert prepare.workers(4, cores=1) == 1 and prepare.workers(4, cores=16, gpu=True) == 1
    assert prepare.workers(5, cores=16) == 5 and prepare.threads(5, cores=16) == 3
    assert prepare.makespan([60, 30, 20, 10], 1) == 120
    assert prepare.makespan([60, 30, 20, 10], 2) == 60  # 60 | 30 + 20 + 10
    assert prepare.wall_seconds([60, 30, 20, 10], 2, cores=2) == 120  # two cores: the reference's
    assert prepare.wall_seconds([60, 30, 20, 10], 4, cores=16) == 60  # the longest training


def test_one_line_before_training_says_what_and_how_long(cache, monkeypatch):
    monkeypatch.setenv("HARNESS_ZOO_MAX_STEPS", "55000")
    monkeypatch.setattr(prepare, "warm_up", lambda: 2 / prepare.CNN_STEPS_PER_SECOND)  # half as fast
    trained, lines = [], []
    monkeypatch.setattr(zoo, "model_path", lambda name, log: trained.append(name))
    monkeypatch.setattr(prepare, "workers", lambda count, gpu: 1)
    prepare.train_all(["mnist_mlp", "mnist_cnn_randlabels", "mnist_mlp_randlabels"], log=lines.append,
                      quick_names=lambda: ["mnist_mlp@1200"])
    full = 2 * (55_000 / prepare.MLP_STEPS_PER_SECOND + 150 + 55 + 3 * prepare.START_SECONDS)  # one at a time
    quick = 2 * (1200 / prepare.MLP_STEPS_PER_SECOND + prepare.START_SECONDS)
    assert lines == [f"training 3 models (mnist_mlp_authors, mnist_cnn_randlabels, mnist_mlp_randlabels), about "
                     f"{round(full / 60)} min on this machine; `--quick` trains early snapshots instead "
                     f"({round(quick / 60)} min)"]
    assert trained == ["mnist_mlp_authors", "mnist_cnn_randlabels", "mnist_mlp_randlabels"]
    lines.clear()
    _export("mnist_mlp_authors")
    _export("mnist_cnn_randlabels")
    _export("mnist_mlp_randlabels")
    prepare.train_all(["mnist_mlp", "mnist_cnn_randlabels", "mnist_mlp_randlabels"], log=lines.append)
    assert lines == []  # nothing to train, nothing said (and no warm-up)


def test_reproduce_trains_every_model_of_its_experiments_first(monkeypatch, tmp_path):
    import harness.report

    events = []
    monkeypatch.setattr(prepare, "train_all", lambda names, log, quick_names: events.append(
        ("train", sorted(set(names)), quick_names and sorted(set(quick_names())))))
    monkeypatch.setattr(reproduce, "run_experiment", lambda name, *a: events.append(name) or "done")
    monkeypatch.setattr(harness.report, "build_report", lambda out: out / "report.html")
    reproduce.main(["data_randomization", "segmentation", "--out", str(tmp_path)])
    assert events == [("train", ["mnist_cnn", "mnist_cnn_randlabels", "mnist_mlp", "mnist_mlp_randlabels", "mnist_seg"],
                       ["mnist_cnn_authors@1200", "mnist_cnn_randlabels", "mnist_mlp_authors@1200",
                        "mnist_mlp_randlabels", "mnist_seg@500"]),
                      "data_randomization", "segmentation"]
    events.clear()
    reproduce.main(["--quick", "cascading_cnn", "--out", str(tmp_path)])
    assert events == [("train", ["mnist_cnn_authors@1200"], None), "cascading_cnn"]


@pytest.mark.slow
def test_trainings_side_by_side_export_their_models(cache):
    """Two worker processes, one trajectory each (a few steps), both snapshots exported."""
    prepare._side_by_side([["mnist_cnn_authors@6"], ["mnist_mlp_authors@6"]], slots=2, threads=1)
    for name in ("mnist_cnn_authors@6", "mnist_mlp_authors@6"):
        assert (zoo.cached_path(name) / "saved_model.pb").is_file()
