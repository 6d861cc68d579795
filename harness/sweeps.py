"""Sweeps (Hydra multirun): one ordinary run per combination of the swept values, started by any
Hydra launcher (basic, joblib, submitit_local, submitit_slurm; docs/sweeps.md). Jobs and merge talk
through files only: `jobs.json` (written at the start), each job folder's `run_dir.txt` or
`failure.json` (a job killed from outside leaves neither), and at the end the finished jobs' tables
concatenated, each row led by its job's number and swept overrides, plus `failures.csv`.

A job never raises into the launcher (Hydra's sweeper would stop the whole sweep): its failure is
recorded in its job folder and the others go on.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from harness.errors import HarnessError
from harness.results import RECORD, SCORES, SUMMARY, VERDICTS, atomic_write, read_table, write_csv, write_json

POINTER = "run_dir.txt"
FAILURE = "failure.json"
JOBS = "jobs.json"
FAILURES = "failures.csv"
FAILURE_COLUMNS = ["job", "overrides", "error"]
NO_RESULT = ("no result: the job was killed (out of memory, a timeout, scancel) or never started; "
             "see its log (submitit: <sweep>/.submitit/)")
SHOWN_FAILURES = 3  # jobs named on the error line; failures.csv has them all

# Sweeps started in this process not merged yet: the CLI merges them on its way out when a launcher
# raised instead of returning (a killed joblib worker, a Slurm job that vanished).
_PENDING: list[Path] = []


def sweep_jobs(config: Any) -> list[list[str]]:
    """Every job's overrides, in job-number order, as Hydra's basic sweeper expands them."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class MergeSweep(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            # Another sweeper chooses its jobs as it goes: without jobs.json the merge takes the job folders.
            jobs = [{"job": num, "overrides": overrides} for num, overrides in enumerate(sweep_jobs(config))]
            write_json(sweep_dir / JOBS, {"jobs": jobs})
        _PENDING.append(sweep_dir)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        finish(Path(config.hydra.sweep.dir))


def finish_pending() -> None:
    """Merge the sweeps whose launcher raised, if any job had started (else Hydra's error said why)."""
    while _PENDING:
        sweep_dir = _PENDING.pop()
        if any(p.is_dir() and p.name.isdigit() for p in sweep_dir.iterdir()):
            finish(sweep_dir)


def finish(sweep_dir: Path) -> None:
    """Merge the sweep and report: the folder on stdout; failed jobs on stderr, then exit status 1."""
    if sweep_dir in _PENDING:
        _PENDING.remove(sweep_dir)
    outcome = merge(sweep_dir)
    if any(path.name == SCORES for path in outcome.written):
        print(f"sweep results: {sweep_dir}", flush=True)
    if len(outcome.failures):
        failed = outcome.failures
        named = "; ".join(f"job {r.job} ({r.overrides}): {r.error}" for r in failed.head(SHOWN_FAILURES).itertuples())
        more = f"; and {len(failed) - SHOWN_FAILURES} more" if len(failed) > SHOWN_FAILURES else ""
        print(f"harness: error: {len(failed)} of {outcome.jobs} jobs failed: {named}{more} "
              f"(all in {sweep_dir / FAILURES})", file=sys.stderr, flush=True)
        sys.exit(1)


@dataclass
class Outcome:
    jobs: int
    written: list[Path]
    failures: pd.DataFrame  # FAILURE_COLUMNS, one row per job that did not finish


def merge(sweep_dir: Path) -> Outcome:
    """Concatenate the finished jobs' tables (in job order) into `sweep_dir`, list the others in
    `failures.csv`. A run folder is read only once its job wrote the pointer, after the run's last file."""
    jobs = read_jobs(sweep_dir)
    finished, failures = [], []
    for job in jobs:
        folder = sweep_dir / str(job["job"])
        run_dir = finished_run(folder)
        if run_dir is not None:
            finished.append((job, run_dir))
        else:
            failures.append({"job": job["job"], "overrides": " ".join(job["overrides"]), "error": _failure(folder)})
    swept = swept_overrides(jobs)
    written = []
    for name in (SCORES, SUMMARY, VERDICTS):
        tables = [_with_job(read_table(d / name), job, swept) for job, d in finished
                  if (d / name).is_file()]  # runs before verdicts.csv: none
        if tables:
            written.append(write_csv(sweep_dir / name, pd.concat(tables, ignore_index=True)))
    failed = pd.DataFrame.from_records(failures, columns=FAILURE_COLUMNS)
    if len(failed):
        written.append(write_csv(sweep_dir / FAILURES, failed))
    else:
        (sweep_dir / FAILURES).unlink(missing_ok=True)
    return Outcome(len(jobs), written, failed)


JOB_COLUMN = "job"


def swept_overrides(jobs: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Per job number, its overrides whose key's value differs between jobs ("" where a job lacks it)."""
    given = {job["job"]: {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in job["overrides"])}
             for job in jobs}
    keys = list(dict.fromkeys(k for overrides in given.values() for k in overrides))
    differ = [k for k in keys if len({overrides.get(k) for overrides in given.values()}) > 1]
    return {num: {k: overrides.get(k, "") for k in differ} for num, overrides in given.items()}


def _with_job(table: pd.DataFrame, job: dict[str, Any], swept: dict[int, dict[str, str]]) -> pd.DataFrame:
    """The job's table led by `job` and its swept overrides (`override:<key>` for a key that is a column)."""
    columns = {JOB_COLUMN: job["job"]}
    for key, value in swept.get(job["job"], {}).items():
        columns[f"override:{key}" if key in table.columns or key == JOB_COLUMN else key] = value
    lead = pd.DataFrame({k: [v] * len(table) for k, v in columns.items()}, index=table.index)
    return pd.concat([lead, table], axis=1)


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """jobs.json; without it (another sweeper), the job folders there with the overrides Hydra recorded."""
    listed = sweep_dir / JOBS
    if listed.is_file():
        return json.loads(listed.read_text())["jobs"]
    nums = sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return [{"job": num, "overrides": _hydra_overrides(sweep_dir / str(num))} for num in nums]


def _hydra_overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in yaml.safe_load(path.read_text()) or []]
    except (OSError, yaml.YAMLError):
        return []


def finished_run(folder: Path) -> Path | None:
    pointer = folder / POINTER
    if not pointer.is_file():
        return None
    run_dir = Path(pointer.read_text().strip())
    return run_dir if (run_dir / RECORD).is_file() and (run_dir / SCORES).is_file() else None


def _failure(folder: Path) -> str:
    try:
        return str(json.loads((folder / FAILURE).read_text())["error"])
    except (OSError, ValueError, KeyError):
        return NO_RESULT


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(work: Callable[[], Path]) -> None:
    """Run one sweep job and leave its outcome in the job folder: the run folder or the error line."""
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (POINTER, FAILURE):  # a sweep folder given twice (hydra.sweep.dir=...): this try counts
        (folder / stale).unlink(missing_ok=True)
    try:
        run_dir = work()
    except Exception as error:  # noqa: BLE001 - every failure is recorded; the other jobs go on
        line = error_line(error)
        if not isinstance(error, HarnessError):
            traceback.print_exc()
        print(f"harness: error: job {hydra.job.num}: {line}", file=sys.stderr, flush=True)
        write_json(folder / FAILURE, {"job": hydra.job.num, "overrides": list(hydra.overrides.task), "error": line})
        return
    if run_dir is not None:  # `harness -m layers ...` writes no run folder
        atomic_write(folder / POINTER, lambda tmp: tmp.write_text(str(Path(run_dir).resolve())))


def error_line(error: BaseException) -> str:
    """One line: a user mistake's message as is, anything else with its type."""
    text = " ".join(str(error).split()) or repr(error)
    return text if isinstance(error, HarnessError) else f"{type(error).__name__}: {text[:500]}"


def tf_threads(setting: Any) -> int | None:
    """TensorFlow's intra-op threads: `threads` as a number; `auto` None (every core) in a single run,
    and in a sweep job the cores divided by the jobs running at once, so jobs do not oversubscribe them."""
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise HarnessError(f"threads must be auto or a whole number >= 1; got {setting!r}")
        return setting
    if not in_multirun():
        return None
    return max(1, job_cores() // jobs_at_once())


def job_cores() -> int:
    """The cores this process may use: its CPU affinity, in a Slurm job at most SLURM_CPUS_PER_TASK
    (a cluster that does not bind tasks to their CPUs leaves the affinity at the whole node)."""
    cores = len(os.sched_getaffinity(0))
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(given)) if given.isdigit() and int(given) > 0 else cores


def jobs_at_once() -> int:
    """How many jobs of this process's sweep run at once on this machine (1 outside a sweep)."""
    if not in_multirun():
        return 1
    hydra = HydraConfig.get()
    listed = Path(hydra.sweep.dir) / JOBS
    total = len(read_jobs(listed.parent)) if listed.is_file() else os.cpu_count() or 1
    return concurrent_jobs(hydra.launcher, total)


def concurrent_jobs(launcher: Any, total: int) -> int:
    """How many of a sweep's `total` jobs its launcher runs at once on one machine."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs", -1))
        workers = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs  # joblib: -1 all cores, -2 all but one
        return max(1, min(workers, total))
    if target.endswith("submitit_launcher.LocalLauncher"):
        return max(1, total)  # submitit's local executor starts every job at once
    return 1  # basic: one after another; submitit_slurm: each job alone in its own allocation
