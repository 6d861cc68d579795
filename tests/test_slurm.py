"""Opt-in (`make test-slurm`): a 4-job sweep through Hydra's submitit_slurm launcher on a single-node
Slurm cluster (tests/slurm/cluster.sh), merged as the basic launcher merges the same sweep. Skipped
unless HARNESS_TEST_SLURM=1 (which `make test-slurm` sets after starting the cluster), so a suite run
on a machine that happens to reach a real cluster never submits to it."""
import json
import os
import subprocess
from pathlib import Path

import pytest

import test_runner
from test_sweeps import computations, sorted_bytes, sweep
from test_runner import tiny_overrides

image_folder = test_runner.image_folder  # the runner tests' fixture: six random 8x8 images
PARTITION = os.environ.get("HARNESS_TEST_SLURM_PARTITION", "debug")

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(os.environ.get("HARNESS_TEST_SLURM") != "1",
                                                    reason="opt-in: make test-slurm")]


def test_submitit_slurm_sweep_merges_as_the_basic_launcher(tmp_path, tiny_saved_model, image_folder):
    assert subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0, "no Slurm cluster answers"
    path, _ = tiny_saved_model
    jobs = ["schedule=cascading,independent", "seed=0,1", "controls=[]", "map_cache=false"]
    done, basic = sweep(*jobs, *tiny_overrides(path, image_folder, tmp_path / "basic"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done, slurm = sweep(*jobs, *tiny_overrides(path, image_folder, tmp_path / "slurm"),
                        "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}",
                        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted_bytes(slurm / "scores.csv") == sorted_bytes(basic / "scores.csv")
    assert len(sorted_bytes(slurm / "scores.csv")) == 1 + 4 * 5 * 6 * 4  # jobs x steps x images x metrics
    # Each job ran as a task of one Slurm array job: submitit's logs, one process per job.
    logs = list((slurm / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 4, logs
    sessions = computations(slurm)
    assert len({c["session"].split("-")[1] for c in sessions}) == 4
    assert {c["intra_op_threads"] for c in sessions} == {1}  # cpus_per_task=1, whatever the node has
    assert json.loads((slurm / "jobs.json").read_text())["jobs"][3]["overrides"][:2] == ["schedule=independent", "seed=1"]
    assert not (Path(slurm) / "failures.csv").exists()
