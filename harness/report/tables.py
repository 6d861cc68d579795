"""The report's tables: the merged summary, compact mean [CI] grids, and paper vs this run.

All of them are derived from the runs' summaries (harness.tables.SUMMARY_COLUMNS); cells are
formatted strings, ready for the page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.report.labels import (CONTROL_LABELS, CONTROL_SCHEDULE, base_model, block_label, method_label,
                                   metric_short, model_label, order_methods, order_metrics)
from harness.report.load import Experiment
from harness.report.reference import TABLES, ReferenceTable
from harness.tables import SUMMARY_COLUMNS

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


def mean_ci(row: pd.Series, digits: int = 2) -> str:
    """"0.60 [0.55, 0.66]"; undefined scores are counted in the cell, never hidden (pitfall 1)."""
    if math.isnan(row["mean"]):
        return f"undefined ({int(row['n_degenerate'])} of {int(row['n'] + row['n_degenerate'])})"
    text = number(row["mean"], digits)
    if not math.isnan(row["ci_low"]):
        text += f" [{number(row['ci_low'], digits)}, {number(row['ci_high'], digits)}]"
    if row["n_degenerate"]:
        text += f" ({int(row['n_degenerate'])} undefined)"
    return text


def ci(row: pd.Series, digits: int = 3) -> str:
    return MISSING if math.isnan(row["ci_low"]) else f"[{number(row['ci_low'], digits)}, {number(row['ci_high'], digits)}]"


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
    ordered += [controls[b] for b in list(CONTROL_LABELS) + sorted(set(controls) - set(CONTROL_LABELS)) if b in controls]
    return ordered


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
    counts = (rows["n"] + rows["n_degenerate"]).astype(int)
    n = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    return f"mean [95% bootstrap CI] over n = {n} images per cell"


# -- paper vs this run -----------------------------------------------------------------------------------
def paper_comparison(summary: pd.DataFrame) -> list[TextTable]:
    return [_comparison(table, summary) for table in TABLES]


def _comparison(table: ReferenceTable, summary: pd.DataFrame) -> TextTable:
    ours = summary[(summary["model"].map(base_model) == table.model) & (summary["schedule"] == table.schedule)
                   & (summary["metric"] == table.metric)]
    records = []
    for ref in table.references():
        match = ours[(ours["method"] == ref.method) & (ours["block"] == ref.block)]
        row = match.iloc[0] if len(match) else None  # the first experiment in the report's order
        mean = float("nan") if row is None else float(row["mean"])
        records.append({"method": method_label(ref.method), "block": block_label(ref.block), "paper": ref.text,
                        "this run (mean)": number(mean, 3), "95% CI": MISSING if row is None else ci(row),
                        "difference": signed(ref.difference(mean) if not math.isnan(mean) else mean),
                        "experiment": MISSING if row is None else str(row["experiment"])})
    return TextTable(table.title, pd.DataFrame.from_records(records), f"paper: {table.source}")
