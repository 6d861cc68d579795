"""Scenario `sweep`: one sweep of 8 jobs (the built-in MNIST CNN, SmoothGrad, schedules cascading and
independent x seeds 0-3) through Hydra's basic launcher (one job after another) and its joblib
launcher (a worker process per core), each into a fresh results folder without the map cache.
`make bench-sweep` runs it alone; docs/sweeps.md says what to expect on N nodes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from harness.bench.common import Options, markdown
from harness.sweeps import POINTER, merge

SWEEP = ["schedule=cascading,independent", "seed=0,1,2,3"]
# The default CNN's early snapshot: timing does not depend on how long it was trained.
JOB = ["model=mnist_cnn", "model.source=builtin:mnist_cnn@1200", "method=smoothgrad", "method.samples=10",
       "data.count=20", "controls=[]", "map_cache=false", "progress=false"]
QUICK_SWEEP, QUICK_JOB = ["schedule=cascading,independent"], ["data.count=2", "method.samples=2"]  # 2 small jobs
LAUNCHERS = ("basic", "joblib")
COLUMNS = ["launcher", "jobs", "at_once", "wall_s", "speedup", "job_mean_s", "job_sum_s", "merge_s", "cores",
           "load_before", "date"]


def measure_all(options: Options, log: Callable[[str], None] = print) -> list[dict]:
    """One row per launcher, the same sweep (QUICK's when quick) into a fresh folder each."""
    sweep, job = SWEEP, JOB
    if options.quick:
        replaced = tuple(o.split("=")[0] + "=" for o in QUICK_JOB)
        sweep, job = QUICK_SWEEP, [o for o in JOB if not o.startswith(replaced)] + QUICK_JOB
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        rows = []
        for launcher in LAUNCHERS:
            rows.append(time_sweep(launcher, Path(scratch), sweep, job) | {"sweep": " ".join([*sweep, *job])})
            rows[-1]["speedup"] = round(rows[0]["wall_s"] / rows[-1]["wall_s"], 2)
            log(f"{launcher}: {rows[-1]['wall_s']} s for {rows[-1]['jobs']} jobs, {rows[-1]['speedup']}x basic")
    return rows


def time_sweep(launcher: str, folder: Path, sweep: list[str], job: list[str]) -> dict:
    command = [sys.executable, "-c", "from harness.cli import main; main()", "-m", *sweep, *job,
               f"hydra/launcher={launcher}", f"results_dir={folder / launcher}"]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"bench-sweep: the {launcher} sweep failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    sweep_dir = Path([line for line in done.stdout.splitlines() if line.startswith("sweep results: ")][-1]
                     .removeprefix("sweep results: "))
    jobs = [json.loads((Path(p.read_text()) / "run.json").read_text())["timings"]["total_seconds"]
            for p in sweep_dir.glob(f"*/{POINTER}")]
    began = time.perf_counter()
    merge(sweep_dir)
    merge_s = time.perf_counter() - began
    at_once = 1 if launcher == "basic" else min(len(jobs), os.cpu_count() or 1)
    return {"launcher": launcher, "jobs": len(jobs), "at_once": at_once, "wall_s": round(wall, 1),
            "job_mean_s": round(sum(jobs) / len(jobs), 1), "job_sum_s": round(sum(jobs), 1),
            "merge_s": round(merge_s, 3), "cores": os.cpu_count(), "load_before": round(load, 2),
            "date": datetime.now(timezone.utc).date().isoformat()}


def section(frame) -> list[str]:
    return markdown("## Sweep scaling",
                    f"One sweep of {frame['jobs'].iloc[0]} jobs ({frame['sweep'].iloc[0]}), "
                    "each launcher into a fresh results folder. `wall_s`: the whole sweep command (TensorFlow's "
                    "start in every process, the jobs, the merge); `job_mean_s` / `job_sum_s`: the jobs' own "
                    "seconds from their run.json; `merge_s`: the sweep-end merge alone; `load_before`: the "
                    "machine's 1-minute load average when the sweep started (other work slows both launchers).",
                    " | ".join(COLUMNS), frame[COLUMNS].itertuples(index=False))
