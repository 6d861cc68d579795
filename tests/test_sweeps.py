"""Sweeps with Hydra's launchers (basic, joblib, submitit_local), the sweep-end merge, failed jobs,
resuming a sweep, TensorFlow threads per job, and the on-disk cache of original maps."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness import cache, runner, sweeps
from harness.errors import HarnessError

import test_runner
from test_runner import HARNESS, config, tiny_overrides

image_folder = test_runner.image_folder  # the runner tests' fixture: six random 8x8 images


def sweep(*args, cwd):
    """`harness -m ...`: (the completed process, the sweep folder or None)."""
    done = subprocess.run([*HARNESS, "-m", *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    named = [line.removeprefix("sweep results: ") for line in done.stdout.splitlines() if line.startswith("sweep results: ")]
    return done, Path(named[-1]) if named else None


def sorted_bytes(path: Path) -> list[bytes]:
    return sorted(path.read_bytes().splitlines())


def computations(sweep_dir: Path) -> list[dict]:
    """The sessions that computed the sweep's runs (run.json's `computations`)."""
    return [c for pointer in sorted(sweep_dir.glob(f"*/{sweeps.POINTER}"))
            for c in json.loads((Path(pointer.read_text()) / "run.json").read_text())["computations"]]


def test_joblib_and_submitit_local_merge_as_the_basic_launcher(tmp_path, tiny_saved_model, image_folder):
    """The same 2-job sweep through three launchers: the merged scores.csv are the same bytes once
    sorted; joblib / submitit ran the jobs outside the launching process, with TensorFlow's threads
    cut to the cores each job has when both run at once."""
    import os

    path, _ = tiny_saved_model
    merged, pids, threads = {}, {}, {}
    for launcher in ("basic", "joblib", "submitit_local"):
        done, sweep_dir = sweep("schedule=cascading,independent", "controls=[]", "map_cache=false",
                                f"hydra/launcher={launcher}", *tiny_overrides(path, image_folder, tmp_path / launcher),
                                cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not (sweep_dir / sweeps.FAILURES).exists()
        merged[launcher] = sorted_bytes(sweep_dir / "scores.csv")
        sessions = computations(sweep_dir)  # a session's id carries its process id
        pids[launcher] = (int(sweep_dir.name.rsplit("-", 1)[1]), {int(c["session"].split("-")[1]) for c in sessions})
        threads[launcher] = {c["intra_op_threads"] for c in sessions}
    assert len(merged["basic"]) == 1 + 2 * 5 * 6 * 4  # header + schedules x steps x images x metrics
    assert merged["joblib"] == merged["basic"]
    assert merged["submitit_local"] == merged["basic"]
    launching, computed = pids["basic"]
    assert computed == {launching}  # the basic launcher runs its jobs in its own process
    for launcher in ("joblib", "submitit_local"):
        launching, computed = pids[launcher]
        assert computed and launching not in computed, launcher
    assert len(pids["submitit_local"][1]) == 2  # one process per job
    cores = len(os.sched_getaffinity(0))
    assert threads["basic"] == {cores}
    assert threads["joblib"] == {max(1, cores // min(2, os.cpu_count()))}  # n_jobs=-1: a worker per core
    assert threads["submitit_local"] == {max(1, cores // 2)}  # both jobs at once


def test_failed_job_keeps_the_others_and_a_rerun_resumes(tmp_path, tiny_saved_model, image_folder):
    """A job whose model file is broken fails alone: the merge has the other job's rows, failures.csv
    names it, the command exits 1 naming it. Run again once the file is fixed, the finished job is
    skipped (no new computation in its run folder) and the fixed one runs."""
    path, _ = tiny_saved_model
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a model")
    args = [f"model.source={path},{broken}", "controls=[]",
            *[o for o in tiny_overrides(path, image_folder, tmp_path / "r") if not o.startswith("model.source=")]]
    done, sweep_dir = sweep(*args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness: error: 1 of 2 jobs failed")]
    assert len(errors) == 1 and f"job 1 (model.source={broken}" in errors[0] and "not a loadable SavedModel" in errors[0]
    failures = pd.read_csv(sweep_dir / sweeps.FAILURES)
    assert list(failures["job"]) == [1] and f"model.source={broken}" in failures["overrides"][0]
    assert "not a loadable SavedModel" in failures["error"][0]
    good_run = Path((sweep_dir / "0" / sweeps.POINTER).read_text())
    merged = pd.read_csv(sweep_dir / "scores.csv")
    assert list(merged.columns[:2]) == ["job", "model.source"] and set(merged["model.source"]) == {str(path)}
    pd.testing.assert_frame_equal(merged.drop(columns=["job", "model.source"]), pd.read_csv(good_run / "scores.csv"))

    shutil.rmtree(broken)
    shutil.copytree(path, broken)
    done, again = sweep(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert again != sweep_dir and not (again / sweeps.FAILURES).exists()
    assert Path((again / "0" / sweeps.POINTER).read_text()) == good_run
    assert len(list((good_run / "parts").glob("session-*.json"))) == 1  # skipped, not recomputed
    assert len(pd.read_csv(again / "scores.csv")) == 2 * len(pd.read_csv(good_run / "scores.csv"))


def test_merge_lists_a_job_that_left_nothing(tmp_path):
    """A job killed from outside writes neither its run folder's pointer nor a failure record: the
    merge still lists it, with what it was asked to do."""
    sweep_dir = tmp_path / "sweep"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for table in ("scores.csv", "summary.csv"):
        pd.DataFrame({"value": [1.0]}).to_csv(run_dir / table, index=False)
    (run_dir / "run.json").write_text("{}")
    (sweep_dir / "0").mkdir(parents=True)
    (sweep_dir / "0" / sweeps.POINTER).write_text(str(run_dir))
    (sweep_dir / sweeps.JOBS).write_text(json.dumps({"jobs": [{"job": 0, "overrides": ["seed=0"]},
                                                             {"job": 1, "overrides": ["seed=1"]}]}))
    outcome = sweeps.merge(sweep_dir)
    assert outcome.jobs == 2 and list(outcome.failures["job"]) == [1]
    assert outcome.failures["overrides"][0] == "seed=1" and outcome.failures["error"][0] == sweeps.NO_RESULT
    assert (sweep_dir / "scores.csv").read_text() == "job,seed,value\n0,0,1.0\n"  # job 0's row, named


def test_a_seed_sweep_names_each_row_by_its_job(tmp_path):
    """`seed=0,1`: the merged summary.csv and verdicts.csv lead with `job` and `seed` (what differs
    between the jobs; data.count, the same in both, is no column), so no two rows are the same on
    what names them; without `seed` they would be. `harness verdicts` and the sweep's report keep
    the jobs apart."""
    from conftest import CHEAP_CNN

    from harness import verdicts
    from harness.report.build import build_report
    from harness.results import GROUP_COLUMNS

    done, sweep_dir = sweep(f"model.source={CHEAP_CNN}", "seed=0,1", "data.count=2", "method=gradient",
                            "schedule=cascading", f"results_dir={tmp_path / 'r'}", "progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary, table = pd.read_csv(sweep_dir / "summary.csv"), pd.read_csv(sweep_dir / "verdicts.csv")
    for merged, names in ((summary, GROUP_COLUMNS), (table, ["model", "experiment", "variant", "test", "metric"])):
        assert list(merged.columns[:2]) == ["job", "seed"] and "data.count" not in merged.columns
        assert set(merged["seed"]) == {0, 1} and (merged["job"] == merged["seed"]).all()
        assert not merged.duplicated(["seed", *names]).any()
        assert merged.duplicated(names).any()  # the rows the column tells apart
    shown = verdicts.matrix(verdicts.folder_verdicts(sweep_dir))
    assert "seed 0" in shown and "seed 1" in shown
    page = build_report(sweep_dir)
    assert page.parent == sweep_dir / "report"
    assert set(pd.read_csv(page.parent / "summary.csv")["experiment"]) == {"seed=0", "seed=1"}


def test_unknown_launcher_is_one_line(tmp_path):
    done = subprocess.run([*HARNESS, "-m", "seed=0,1", "hydra/launcher=jobib"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "harness: error: unknown hydra/launcher 'jobib'; valid: basic, joblib, submitit_local, submitit_slurm"]
    assert not list(tmp_path.iterdir())


def test_merge_after_a_launcher_raised_only_once_a_job_started(tmp_path, capsys):
    """The CLI's way out when the launcher raised: a sweep with a started job is merged and reported,
    one stopped before its first job (Hydra's own error said why) is left alone."""
    jobs = json.dumps({"jobs": [{"job": 0, "overrides": ["seed=0"]}]})
    unstarted, started = tmp_path / "unstarted", tmp_path / "started"
    for folder in (unstarted, started):
        folder.mkdir()
        (folder / sweeps.JOBS).write_text(jobs)
    (started / "0").mkdir()
    sweeps._PENDING.append(unstarted)
    sweeps.finish_pending()
    assert not (unstarted / sweeps.FAILURES).exists() and not sweeps._PENDING
    sweeps._PENDING.append(started)
    with pytest.raises(SystemExit) as exited:
        sweeps.finish_pending()
    assert exited.value.code == 1 and (started / sweeps.FAILURES).is_file() and not sweeps._PENDING
    assert "harness: error: 1 of 1 jobs failed: job 0 (seed=0): no result" in capsys.readouterr().err


@pytest.mark.parametrize("launcher, total, expected", [
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 8, 3),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 2, 2),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}, 5, 5),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}, 50, 1),
])
def test_jobs_running_at_once_by_launcher(launcher, total, expected):
    assert sweeps.concurrent_jobs(OmegaConf.create(launcher), total) == expected


def test_joblib_all_cores_means_one_worker_per_core(monkeypatch):
    monkeypatch.setattr(sweeps.os, "cpu_count", lambda: 6)
    joblib = OmegaConf.create({"_target_": "x.JoblibLauncher", "n_jobs": -1})
    assert sweeps.concurrent_jobs(joblib, 8) == 6
    assert sweeps.concurrent_jobs(OmegaConf.create({"_target_": "x.JoblibLauncher", "n_jobs": -2}), 8) == 5


def test_a_slurm_job_uses_the_cpus_it_was_given(monkeypatch):
    import os

    monkeypatch.setattr(sweeps.os, "sched_getaffinity", lambda pid: set(range(16)))  # an unbound task
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert sweeps.job_cores() == 4
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert sweeps.job_cores() == 16 and os.sched_getaffinity(0) == set(range(16))


@pytest.mark.parametrize("setting", [0, -2, "many", 1.5, True])
def test_bad_threads_setting(setting):
    with pytest.raises(HarnessError, match=f"threads must be auto or a whole number >= 1; got {setting!r}"):
        sweeps.tf_threads(setting)


# -- the map cache ------------------------------------------------------------------------------------
class KernelCalls:
    """Counts calls of the method kernels the runner makes."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = runner.method_registry.get

        def counting(name):
            kernel = real(name)

            def counted(*args, **kwargs):
                self.count += 1
                return kernel(*args, **kwargs)
            return counted
        monkeypatch.setattr(runner.method_registry, "get", counting)

    def during(self, work):
        before = self.count
        result = work()
        return result, self.count - before


def test_original_maps_are_shared_across_experiments(tmp_path, tiny_saved_model, image_folder, monkeypatch):
    """A cascading run computes the trained model's maps; an independent run (another experiment) on
    the same model, images and method reads them: one kernel call fewer than without the cache, and
    the same scores.csv bytes. The same image names with other pixels are another key, and so is
    another number of TensorFlow threads (the maps' last bits depend on it)."""
    path, _ = tiny_saved_model
    calls = KernelCalls(monkeypatch)

    def run(results, *extra, images=image_folder):
        cfg = config(*tiny_overrides(path, images, tmp_path / results), "controls=[]", *extra)
        return calls.during(lambda: runner.run(cfg, log=lambda _: None))

    _, first = run("a", "schedule=cascading")
    assert first == 5  # the trained model and four randomization steps
    cached, with_cache = run("b", "schedule=independent")
    fresh, without_cache = run("c", "schedule=independent", "map_cache=false")
    assert (with_cache, without_cache) == (4, 5)
    assert (cached / "scores.csv").read_bytes() == (fresh / "scores.csv").read_bytes()
    assert cached.name == fresh.name  # map_cache is no setting of the run: same key, same run.json config
    record = json.loads((cached / "run.json").read_text())
    assert record["computations"][0]["cached_original_maps"] == ["gradient"] and "map_cache" not in record["config"]
    from skimage import io

    inverted = tmp_path / "inverted"
    inverted.mkdir()
    for image in image_folder.iterdir():
        io.imsave(inverted / image.name, 255 - io.imread(image), check_contrast=False)
    labels = "data.labels=[0,1,2,0,1,2]"  # target=label: the same classes explained, whatever the pixels
    _, by_label = run("d", "schedule=independent", "target=label", labels)
    _, other_pixels = run("e", "schedule=independent", "target=label", labels, images=inverted)
    assert (by_label, other_pixels) == (5, 5)
    real_hardware = cache.hardware()
    monkeypatch.setattr(cache, "hardware", lambda: real_hardware | {"intra_op_threads": 99})
    _, other_threads = run("f", "schedule=independent")  # the same run but for TensorFlow's threads
    assert other_threads == 5


def test_cache_writes_whole_files_and_rereads_them(own_map_cache):
    maps = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    key = cache.map_key({"method": "gradient", "seed": 0})
    assert cache.load_maps(key) is None
    cache.store_maps(key, maps)
    np.testing.assert_array_equal(cache.load_maps(key), maps)
    assert [p.name for p in own_map_cache.rglob("*") if p.is_file()] == [f"{key}.npy"]  # no temporary left
    (own_map_cache / key[:2] / f"{key}.npy").write_bytes(b"\x93NUMPY trunc")  # damaged: a miss, recomputed
    assert cache.load_maps(key) is None
    assert cache.map_key({"method": "gradient", "seed": 1}) != key


def test_cache_command_says_where_and_clears(own_map_cache, tmp_path):
    cache.store_maps(cache.map_key({"x": 1}), np.zeros((1, 2, 2, 1), np.float32))
    shown = subprocess.run([*HARNESS, "cache"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shown.returncode == 0 and f"map cache {own_map_cache}: 1 files" in shown.stdout
    cleared = subprocess.run([*HARNESS, "cache", "clear"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert cleared.returncode == 0 and "removed 1 files" in cleared.stdout
    assert not own_map_cache.exists() or not any(own_map_cache.rglob("*.npy"))
    wrong = subprocess.run([*HARNESS, "cache", "purge"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        "harness: error: unknown cache command 'purge'; valid: `harness cache` (where and how big), `harness cache clear`"]
