"""Reading result folders (docs/results-format.md): a run folder, a reproduce folder (one subfolder per
experiment: run folders at any depth, found by their `run.json`, or a `skipped.json`) or a sweep folder
(each finished job an experiment, named by its swept overrides).

The runs of one experiment must share their settings: a quick run next to a full one, or the same run
twice, would mix their numbers in one table, so `load_folder` refuses such a folder in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.report.labels import order_experiments
from harness.results import (GROUP_COLUMNS, PARTS, RECORD, SCORE_COLUMNS, SCORES, SKIPPED, SUMMARY, SUMMARY_COLUMNS,
                             RunRecord, read_table)
from harness.summary import summarize

RUN_RECORD = RECORD
# Config keys that are no setting to compare: where or how a run was started; its methods (compared as resolved).
NOT_SETTINGS = ("results_dir", "progress", "command", "experiment_name", "experiment", "method", "methods")
# What may differ between the runs of one experiment (data randomization: one run per model, each with
# its donor; the repairs: a control in one run of several).
PER_RUN = ("model.", "schedule.", "controls")
QUICK_HINT = ("keep one of them: move the other out of this folder (`python -m harness.reproduce --quick` "
              "writes to results/reproduce-quick; give a full run its own --out)")


@dataclass
class Run:
    """One run folder, read lazily (maps only when a figure needs them)."""
    path: Path

    @cached_property
    def record(self) -> RunRecord:
        return RunRecord.read(self.path)

    @cached_property
    def scores(self) -> pd.DataFrame:
        path = self.path / SCORES
        return _variants_as_methods(read_table(path)) if path.is_file() else pd.DataFrame(columns=SCORE_COLUMNS)

    @cached_property
    def summary(self) -> pd.DataFrame:
        """The runner's summary.csv when it covers every group of scores.csv (control rows may be appended
        to scores.csv after the run), else recomputed from it."""
        path = self.path / SUMMARY
        if path.is_file():
            summary = _variants_as_methods(read_table(path))
            if set(SUMMARY_COLUMNS) <= set(summary.columns) and _groups(summary) == _groups(self.scores):
                return summary[SUMMARY_COLUMNS]
        return summarize(self.scores, int(self.record.seed))

    @property
    def model(self) -> str:
        return self.record.model_name or self.path.name


@dataclass
class Experiment:
    """A named experiment: its run folders, or why it did not run."""
    name: str
    path: Path
    runs: list[Run] = field(default_factory=list)
    skipped: dict[str, Any] | None = None

    @cached_property
    def scores(self) -> pd.DataFrame:
        return _concat([run.scores for run in self.runs], SCORE_COLUMNS)

    @cached_property
    def summary(self) -> pd.DataFrame:
        return _concat([run.summary for run in self.runs], SUMMARY_COLUMNS)


def load_folder(folder: Path) -> list[Experiment]:
    """Every experiment under `folder`, in the paper's order; a one-line error when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"results folder {str(folder)!r} does not exist or is not a folder")
    if (folder / RUN_RECORD).is_file():
        return [Experiment(RunRecord.read(folder).experiment or folder.name, folder, [Run(folder)])]
    if is_sweep(folder):
        return _sweep_experiments(folder)
    experiments = [e for e in (_experiment(child) for child in sorted(folder.iterdir())) if e is not None]
    if not experiments:
        raise HarnessError(f"no run folders (with {RUN_RECORD}) and no {SKIPPED} found under {str(folder)!r}")
    for experiment in experiments:
        check_settings(experiment)
    by_name = {e.name: e for e in experiments}
    return [by_name[name] for name in order_experiments(by_name)]


def check_settings(experiment: Experiment) -> None:
    """One line of error when two runs of the experiment disagree on a setting (methods by their resolved
    settings where both runs have one), or overlap (the same model, schedule and method twice)."""
    described = [(run, run.model, run.record.schedule_name, set(run.record.method_labels()), _settings(run))
                 for run in experiment.runs]
    for i, (first, model, schedule, methods, settings) in enumerate(described):
        for second, other_model, other_schedule, other_methods, other_settings in described[i + 1:]:
            shared = methods & other_methods
            overlap = (model, schedule) == (other_model, other_schedule) and (
                bool(shared) or not (methods or other_methods))
            if overlap:  # everything they record, methods where both have them
                keys = {k for k in set(settings) | set(other_settings)
                        if not k.startswith("methods.") or k.split(".")[1] in shared}
            else:  # what the runs of one experiment share
                keys = {k for k in set(settings) & set(other_settings) if not k.startswith(PER_RUN)}
            differ = sorted(k for k in keys if settings.get(k) != other_settings.get(k))
            if not (differ or overlap):
                continue
            where = (f"experiment {experiment.name!r} in {str(experiment.path)!r} mixes runs "
                     f"{_relative(first, experiment)!r} and {_relative(second, experiment)!r}")
            if differ:
                shown = ", ".join(f"{k} ({settings.get(k, 'unset')} vs {other_settings.get(k, 'unset')})"
                                  for k in differ[:4])
                more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
                raise HarnessError(f"{where} with different settings: {shown}{more}; {QUICK_HINT}")
            raise HarnessError(f"{where}: the same run twice (model {model}, schedule {schedule}, methods "
                               f"{', '.join(sorted(shared)) or 'none'}, same settings), its groups would be "
                               f"counted twice; {QUICK_HINT}")


def _settings(run: Run) -> dict[str, str]:
    """The run's settings as flat `a.b.c` -> value text: its config, with methods as resolved."""
    flat = _flatten({k: v for k, v in run.record.config.items() if k not in NOT_SETTINGS})
    for label, method in zip(run.record.method_labels(), run.record.methods):
        flat |= _flatten(method.get("params") or {}, f"methods.{label}.")
    return flat


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True, default=str)}


def _relative(run: Run, experiment: Experiment) -> str:
    relative = run.path.relative_to(experiment.path).as_posix()
    return str(run.path) if relative == "." else relative


def _experiment(path: Path) -> Experiment | None:
    if not path.is_dir() or path.name.startswith(".") or path.name in ("figures", "report"):  # the report's own
        return None
    runs = [Run(record.parent) for record in sorted(path.rglob(RUN_RECORD))]
    if runs:
        return Experiment(path.name, path, runs)
    if (path / SKIPPED).is_file():
        return Experiment(path.name, path, skipped=json.loads((path / SKIPPED).read_text()))
    if any(path.rglob(SCORES)) or any(path.rglob(PARTS)):
        # Started but never finished (the runner writes run.json last): say so rather than vanish.
        return Experiment(path.name, path, skipped={
            "experiment": path.name, "reason": f"incomplete: no {RUN_RECORD} under {path}",
            "how_to_provide": "run the experiment again; a resumed run skips the finished parts"})
    return None


def is_sweep(folder: Path) -> bool:
    from harness.sweeps import JOBS, POINTER

    return (folder / JOBS).is_file() or any(folder.glob(f"[0-9]*/{POINTER}"))


def _sweep_experiments(folder: Path) -> list[Experiment]:
    from harness.sweeps import finished_run, read_jobs, swept_overrides

    jobs = read_jobs(folder)
    swept = swept_overrides(jobs)
    experiments = []
    for job in jobs:
        run_dir = finished_run(folder / str(job["job"]))
        if run_dir is not None:
            name = " ".join(f"{k}={v}" for k, v in swept[job["job"]].items()) or f"job {job['job']}"
            experiments.append(Experiment(name, run_dir, [Run(run_dir)]))
    if not experiments:
        raise HarnessError(f"no finished job in the sweep folder {str(folder)!r} (see its failures.csv)")
    return experiments


def _groups(frame: pd.DataFrame) -> set[tuple]:
    return set(frame[GROUP_COLUMNS].astype(str).itertuples(index=False, name=None))


def _variants_as_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Each entry of a run's method list under its label (`variant`, as in maps.npz) where it has one."""
    if "variant" not in frame.columns:  # tables from before the column
        return frame.assign(variant=frame["method"])
    labelled = frame["variant"].notna() & (frame["variant"].astype(str) != "")
    return frame.assign(method=frame["variant"].where(labelled, frame["method"]).astype(str),
                        variant=frame["variant"].where(labelled, frame["method"]))


def with_family(frame: pd.DataFrame, experiments: list[Experiment]) -> pd.DataFrame:
    """`frame` with a `family` column: the method each entry (`method`, a label) runs, from the run records; a
    label no record names (a model-free control) is its own family."""
    family = {label: str(method["name"]) for e in experiments for run in e.runs
              for label, method in zip(run.record.method_labels(), run.record.methods) if method.get("name")}
    return frame.assign(family=frame["method"].map(lambda m: family.get(m, m)))


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
