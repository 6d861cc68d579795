"""Multirun support: each job leaves a pointer to its run folder; at the end of the sweep a Hydra
callback merges the jobs' `scores.csv` and `summary.csv` into one table in the sweep folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback

from harness.results import SCORES, SUMMARY, read_table, write_csv

POINTER = "run_dir.txt"


def record_job(run_dir: Path) -> None:
    """Inside a multirun job: note which run folder this job wrote (for the merge)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        output = Path(hydra.runtime.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / POINTER).write_text(str(Path(run_dir).resolve()))


def merge(sweep_dir: Path) -> list[Path]:
    """Concatenate every job's tables into `sweep_dir`; returns the files written."""
    run_dirs = [Path(p.read_text().strip()) for p in sorted(sweep_dir.glob(f"*/{POINTER}"),
                                                           key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)]
    written = []
    for name in (SCORES, SUMMARY):
        tables = [read_table(d / name) for d in run_dirs if (d / name).is_file()]
        if tables:
            written.append(write_csv(sweep_dir / name, pd.concat(tables, ignore_index=True)))
    return written


class MergeSweep(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if merge(sweep_dir):
            print(f"sweep results: {sweep_dir}")
