"""Sweep scaling on this machine: `python -m harness.bench_sweep` (`make bench-sweep`).

One sweep of 8 jobs (the built-in MNIST CNN, SmoothGrad, schedules cascading and independent x seeds
0-3) through Hydra's basic launcher (one job after another in one process) and its joblib launcher
(one worker process per core), each into a fresh results folder with the map cache off, so both do
the same work. Records the wall time of each sweep command, the speedup, each job's own seconds (from
its run.json) and the seconds of the sweep-end merge alone, in results/bench/sweep.csv and sweep.md.
docs/sweeps.md says what to expect on N nodes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.results import atomic_write, write_csv
from harness.sweeps import POINTER, merge

OUT = Path("results/bench")
SWEEP = ["schedule=cascading,independent", "seed=0,1,2,3"]
# The default CNN's early snapshot: timing does not depend on how long it was trained.
JOB = ["model=mnist_cnn", "model.source=builtin:mnist_cnn@1200", "method=smoothgrad", "method.samples=10",
       "data.count=20", "controls=[]", "map_cache=false", "progress=false"]
LAUNCHERS = ("basic", "joblib")
COLUMNS = ["launcher", "jobs", "at_once", "wall_s", "speedup", "job_mean_s", "job_sum_s", "merge_s", "cores",
           "load_before", "date"]


def time_sweep(launcher: str, folder: Path, job: list[str]) -> dict:
    command = [sys.executable, "-c", "from harness.cli import main; main()", "-m", *SWEEP, *job,
               f"hydra/launcher={launcher}", f"results_dir={folder / launcher}"]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"bench-sweep: the {launcher} sweep failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
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


def markdown(table: pd.DataFrame) -> str:
    lines = ["# Sweep scaling (`make bench-sweep`)", "",
             f"One sweep of {table['jobs'].iloc[0]} jobs ({' '.join(SWEEP)}; {' '.join(JOB)}), "
             "each launcher into a fresh results folder. `wall_s`: the whole sweep command (TensorFlow's "
             "start in every process, the jobs, the merge); `job_mean_s` / `job_sum_s`: the jobs' own "
             "seconds from their run.json; `merge_s`: the sweep-end merge alone; `load_before`: the "
             "machine's 1-minute load average when the sweep started (other work slows both launchers).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table[COLUMNS].itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        rows = []
        for launcher in LAUNCHERS:
            rows.append(time_sweep(launcher, Path(scratch), JOB))
            print(f"{launcher}: {rows[-1]['wall_s']} s for {rows[-1]['jobs']} jobs", flush=True)
    table = pd.DataFrame(rows)
    table["speedup"] = (table["wall_s"].iloc[0] / table["wall_s"]).round(2)
    write_csv(args.out / "sweep.csv", table[COLUMNS])
    atomic_write(args.out / "sweep.md", lambda tmp: tmp.write_text(markdown(table)))
    print(f"speedup of joblib over basic: {table['speedup'].iloc[-1]}x; {args.out / 'sweep.csv'}, {args.out / 'sweep.md'}")


if __name__ == "__main__":
    main()
