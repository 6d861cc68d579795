"""The report's tables, from the runs' summaries (harness.results.SUMMARY_COLUMNS): the merged summary and compact
mean [CI] grids; cells are formatted strings, ready for the page (paper vs this run: paper.py)."""
from __future__ import annotations

import math

import pandas as pd

from harness.report.labels import (CONTROL_LABELS, CONTROL_SCHEDULE, block_label, method_label, metric_short,
                                   model_label, order_methods, order_metrics)
from harness.report.load import Experiment
from harness.report.page import Table
from harness.results import SUMMARY_COLUMNS

MERGED_COLUMNS = ["experiment"] + SUMMARY_COLUMNS
MISSING = "—"


def merged_summary(experiments: list[Experiment]) -> pd.DataFrame:
    frames = [e.summary.assign(experiment=e.name)[MERGED_COLUMNS] for e in experiments if e.runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MERGED_COLUMNS)


# -- formatting ---------------------------------------------------------------------------------------
def number(value: float, digits: int = 2) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def percent(value) -> str:
    """"98.1 %"; MISSING for None or NaN."""
    return MISSING if value is None or math.isnan(float(value)) else f"{100 * float(value):.1f} %"


def mean(row: pd.Series, digits: int = 2) -> str:
    """"0.60"; undefined scores, left out of the mean, and flagged ones, in it, are counted in the
    cell, never hidden (docs/protocol.md §5.1)."""
    if math.isnan(row["mean"]):
        return f"undefined ({int(row['n_degenerate'])} of {_total(row)} degenerate)"
    return number(row["mean"], digits) + _degenerate(row)


def mean_ci(row: pd.Series, digits: int = 2) -> str:
    """"0.60 [0.55, 0.66]", counting degenerate scores as `mean` does."""
    if math.isnan(row["mean"]) or math.isnan(row["ci_low"]):
        return mean(row, digits)
    return (f"{number(row['mean'], digits)} [{number(row['ci_low'], digits)}, {number(row['ci_high'], digits)}]"
            + _degenerate(row))


def _total(row: pd.Series) -> int:
    return int(row["n"] + row["n_degenerate"])


def _degenerate(row: pd.Series) -> str:
    undefined = f" ({int(row['n_degenerate'])} of {_total(row)} degenerate)" if row["n_degenerate"] else ""
    flagged = row.get("n_flagged", 0)  # summaries written before the column have none
    flagged = 0 if pd.isna(flagged) else int(flagged)
    return undefined + (f" ({flagged} of {_total(row)} from a constant map)" if flagged else "")


def span(counts: pd.Series) -> str:
    counts = counts.astype(int)
    return f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"


# -- compact grids: method x block per (experiment, model, metric) ------------------------------------------
def compact_tables(summary: pd.DataFrame) -> list[Table]:
    tables = []
    for experiment, by_experiment in summary.groupby("experiment", sort=False):
        for model, by_model in by_experiment.groupby("model", sort=False):
            for metric in order_metrics(by_model["metric"]):
                rows = by_model[by_model["metric"] == metric]
                tables.append(Table(f"{experiment}: {model_label(model)}, {metric_short(metric)}", _grid(rows),
                                    _sample_note(rows)))
    return tables


def _grid(rows: pd.DataFrame) -> pd.DataFrame:
    """Methods down; (schedule, step, block) across in cascade order, then the control rows."""
    keys = rows[["schedule", "step", "block"]].drop_duplicates()
    control = keys["schedule"] == CONTROL_SCHEDULE
    columns = list(keys[~control].sort_values(["schedule", "step"], kind="stable").itertuples(index=False, name=None))
    controls = {k[2]: k for k in keys[control].itertuples(index=False, name=None)}
    known = [b for b in CONTROL_LABELS if b in controls]
    columns += [controls[b] for b in known + sorted(set(controls) - set(known))]
    several = rows.loc[rows["schedule"] != CONTROL_SCHEDULE, "schedule"].nunique() > 1

    def label(schedule: str, block: str) -> str:
        if schedule == CONTROL_SCHEDULE:
            return f"control: {CONTROL_LABELS.get(block, block)}"
        return f"{schedule}: {block_label(block)}" if several else block_label(block)

    cells = {(r["schedule"], r["step"], r["block"], r["method"]): mean_ci(r) for _, r in rows.iterrows()}
    return pd.DataFrame.from_records([{"method": method_label(method)} | {
        label(key[0], key[2]): cells.get((*key, method), MISSING) for key in columns}
        for method in order_methods(rows["method"])])


def _sample_note(rows: pd.DataFrame) -> str:
    """n = the images whose score entered the mean (summary column n); degenerate ones are left out."""
    note = f"mean [95% bootstrap CI] over n = {span(rows['n'])} images per cell"
    if rows["n_degenerate"].any():
        note += (f" (of {span(rows['n'] + rows['n_degenerate'])}: undefined scores, from constant or "
                 f"non-finite maps, are left out of mean and CI and counted in their cell as 'k of N degenerate')")
    if "n_flagged" in rows and rows["n_flagged"].fillna(0).any():
        note += ("; finite scores a constant map gives (eMPRT's -1, SSIM) are the test's outcome: in the mean, "
                 "counted in their cell as 'k of N from a constant map'")
    return note
