"""The report's tables: the merged summary, compact mean [CI] grids, and paper vs this run.

All of them are derived from the runs' summaries (harness.results.SUMMARY_COLUMNS); cells are
formatted strings, ready for the page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.report.labels import (CONTROL_LABELS, CONTROL_SCHEDULE, base_model, block_label, method_label,
                                   metric_short, model_label, order_methods, order_metrics)
from harness.report.load import Experiment
from harness.report.reference import TABLES, Reference, ReferenceTable
from harness.results import SUMMARY_COLUMNS

MERGED_COLUMNS = ["experiment"] + SUMMARY_COLUMNS
MISSING = "—"


@dataclass(frozen=True)
class TextTable:
    title: str
    frame: pd.DataFrame  # string cells; the first column names the rows
    note: str = ""
    experiment: str = ""


def merged_summary(experiments: list[Experiment]) -> pd.DataFrame:
    frames = [e.summary.assign(experiment=e.name)[MERGED_COLUMNS] for e in experiments if e.runs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MERGED_COLUMNS)


# -- formatting ---------------------------------------------------------------------------------------
def number(value: float, digits: int = 2) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _total(row: pd.Series) -> int:
    """Images in the cell: those in the mean (n) plus the degenerate ones left out (summarize)."""
    return int(row["n"] + row["n_degenerate"])


def mean(row: pd.Series, digits: int = 2) -> str:
    """"0.60"; degenerate scores, left out of the mean, are counted in the cell, never hidden (docs/protocol.md §5.1)."""
    if math.isnan(row["mean"]):
        return f"undefined ({int(row['n_degenerate'])} of {_total(row)} degenerate)"
    return number(row["mean"], digits) + _degenerate(row)


def mean_ci(row: pd.Series, digits: int = 2) -> str:
    """"0.60 [0.55, 0.66]", counting degenerate scores as `mean` does."""
    if math.isnan(row["mean"]) or math.isnan(row["ci_low"]):
        return mean(row, digits)
    return (f"{number(row['mean'], digits)} [{number(row['ci_low'], digits)}, {number(row['ci_high'], digits)}]"
            + _degenerate(row))


def _degenerate(row: pd.Series) -> str:
    return f" ({int(row['n_degenerate'])} of {_total(row)} degenerate)" if row["n_degenerate"] else ""


def ci(row: pd.Series, digits: int = 3) -> str:
    if math.isnan(row["ci_low"]):
        return MISSING
    return f"[{number(row['ci_low'], digits)}, {number(row['ci_high'], digits)}]"


def signed(value: float, digits: int = 3) -> str:
    return MISSING if math.isnan(value) else f"{value:+.{digits}f}"


# -- compact grids: method x block per (experiment, model, metric) ------------------------------------------
def compact_tables(summary: pd.DataFrame) -> list[TextTable]:
    tables = []
    for experiment, by_experiment in summary.groupby("experiment", sort=False):
        for model, by_model in by_experiment.groupby("model", sort=False):
            for metric in order_metrics(by_model["metric"]):
                rows = by_model[by_model["metric"] == metric]
                tables.append(TextTable(f"{experiment}: {model_label(model)}, {metric_short(metric)}",
                                        _grid(rows), _sample_note(rows), experiment))
    return tables


def _columns(rows: pd.DataFrame) -> list[tuple[str, int, str]]:
    """(schedule, step, block) in cascade order, then the control rows (reference levels)."""
    keys = rows[["schedule", "step", "block"]].drop_duplicates()
    control = keys["schedule"] == CONTROL_SCHEDULE
    steps = keys[~control].sort_values(["schedule", "step"], kind="stable")
    ordered = list(steps.itertuples(index=False, name=None))
    controls = {k[2]: k for k in keys[control].itertuples(index=False, name=None)}
    known = [b for b in CONTROL_LABELS if b in controls]
    return ordered + [controls[b] for b in known + sorted(set(controls) - set(known))]


def _column_label(key: tuple[str, int, str], several_schedules: bool) -> str:
    schedule, _, block = key
    if schedule == CONTROL_SCHEDULE:
        return f"control: {CONTROL_LABELS.get(block, block)}"
    return f"{schedule}: {block_label(block)}" if several_schedules else block_label(block)


def _grid(rows: pd.DataFrame) -> pd.DataFrame:
    columns = _columns(rows)
    several = rows.loc[rows["schedule"] != CONTROL_SCHEDULE, "schedule"].nunique() > 1
    cells = {(r["schedule"], r["step"], r["block"], r["method"]): mean_ci(r) for _, r in rows.iterrows()}
    records = []
    for method in order_methods(rows["method"]):
        record = {"method": method_label(method)}
        for key in columns:
            record[_column_label(key, several)] = cells.get((*key, method), MISSING)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _sample_note(rows: pd.DataFrame) -> str:
    """n = the images whose score entered the mean (summary column n); degenerate ones are left out."""
    note = f"mean [95% bootstrap CI] over n = {_span(rows['n'])} images per cell"
    if rows["n_degenerate"].any():
        note += (f" (of {_span(rows['n'] + rows['n_degenerate'])}: degenerate scores, from constant or "
                 f"non-finite maps, are left out of mean and CI and counted in their cell as 'k of N degenerate')")
    return note


def _span(counts: pd.Series) -> str:
    counts = counts.astype(int)
    return f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"


# -- paper vs this run -----------------------------------------------------------------------------------
def paper_comparison(summary: pd.DataFrame) -> list[TextTable]:
    return [_comparison(table, summary) for table in TABLES]


def _comparison(table: ReferenceTable, summary: pd.DataFrame) -> TextTable:
    ours = summary[(summary["model"].map(base_model) == table.model) & (summary["schedule"] == table.schedule)
                   & (summary["metric"] == table.metric)]
    records = []
    for ref in table.references():
        match = ours[(ours["method"] == ref.method) & (ours["block"] == ref.block)]
        records.append(_comparison_row(ref, match.iloc[0] if len(match) else None))  # first experiment in order
    return TextTable(table.title, pd.DataFrame.from_records(records), f"paper: {table.source}")


def _comparison_row(ref: Reference, row: pd.Series | None) -> dict[str, str]:
    paper = {"method": method_label(ref.method), "block": block_label(ref.block), "paper": ref.text}
    if row is None:  # not run here: the paper's value is shown, ours is not invented
        return paper | {"this run (mean)": MISSING, "95% CI": MISSING, "difference": MISSING, "experiment": MISSING}
    return paper | {"this run (mean)": mean(row, 3), "95% CI": ci(row),
                    "difference": signed(ref.difference(row["mean"])), "experiment": str(row["experiment"])}
