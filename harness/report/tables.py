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
from harness.report.reference import FIGURE_TOLERANCE, SD_LIMIT, TABLES, Reference, ReferenceTable
from harness.results import SUMMARY_COLUMNS

MERGED_COLUMNS = ["experiment"] + SUMMARY_COLUMNS
MISSING = "—"
RANDOM_LABEL_MODEL = "random-label model"  # the data randomization tables' column: the donor of each cell


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


def percent(value) -> str:
    """"98.1 %"; MISSING for None or NaN."""
    return MISSING if value is None or math.isnan(float(value)) else f"{100 * float(value):.1f} %"


def _total(row: pd.Series) -> int:
    """Images in the cell: those in the mean (n) plus the undefined ones left out (summarize)."""
    return int(row["n"] + row["n_degenerate"])


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


def _degenerate(row: pd.Series) -> str:
    undefined = f" ({int(row['n_degenerate'])} of {_total(row)} degenerate)" if row["n_degenerate"] else ""
    flagged = row.get("n_flagged", 0)  # summaries written before the column have none
    flagged = 0 if pd.isna(flagged) else int(flagged)
    return undefined + (f" ({flagged} of {_total(row)} from a constant map)" if flagged else "")


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
    note = f"mean [95% bootstrap CI] over n = {span(rows['n'])} images per cell"
    if rows["n_degenerate"].any():
        note += (f" (of {span(rows['n'] + rows['n_degenerate'])}: undefined scores, from constant or "
                 f"non-finite maps, are left out of mean and CI and counted in their cell as 'k of N degenerate')")
    if "n_flagged" in rows and rows["n_flagged"].fillna(0).any():
        note += ("; finite scores a constant map gives (eMPRT's -1, SSIM) are the test's outcome: in the mean, "
                 "counted in their cell as 'k of N from a constant map'")
    return note


def span(counts: pd.Series) -> str:
    counts = counts.astype(int)
    return f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"


# -- paper vs this run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperTable:
    """One reference table next to this run: the page table, the cells that remain apart, our rows."""
    table: TextTable
    gaps: list[str]       # "Guided Backprop at logits (-5.5 SD)", for each cell outside
    ours: pd.DataFrame    # this run's summary rows matched to the table's cells
    has_sd: bool          # the authors give an SD for (some of) its cells


def paper_comparison(summary: pd.DataFrame, donors: dict[tuple[str, str], str] | None = None) -> list[PaperTable]:
    """`donors`: (experiment, model) -> the random-label model the run took its weights from; the data
    randomization tables then say per cell which one (and so which recipe) made it."""
    return [_comparison(table, summary, donors) for table in TABLES]


def _comparison(table: ReferenceTable, summary: pd.DataFrame,
                donors: dict[tuple[str, str], str] | None = None) -> PaperTable:
    ours = summary[(summary["model"].map(base_model) == table.model) & (summary["schedule"] == table.schedule)
                   & (summary["metric"] == table.metric)]
    records, gaps, matched = [], [], []
    for ref in table.references():
        family = ours["family"] if "family" in ours.columns else ours["method"]
        match = ours[(family == ref.method) & (ours["block"] == ref.block)]
        # The family's unlabelled entry where there is one, else its first variant; first experiment in order.
        match = match.sort_values("method", key=lambda m: m != ref.method, kind="stable")
        row = match.iloc[0] if len(match) else None
        records.append(_comparison_row(ref, row))
        if donors is not None and table.schedule == "data_randomization":
            records[-1][RANDOM_LABEL_MODEL] = MISSING if row is None else donors.get(
                (str(row["experiment"]), str(row["model"])), "not recorded")
        if row is not None:
            matched.append(row)
            if outside(ref, row["mean"]):
                gaps.append(f"{method_label(ref.method)} at {block_label(ref.block)} ({_difference(ref, row['mean'])})")
    has_sd = any(ref.sd is not None for ref in table.references())
    note = f"authors: {table.source}. {_comparison_note(has_sd)}"
    return PaperTable(TextTable(table.title, pd.DataFrame.from_records(records), note), gaps,
                      pd.DataFrame(matched) if matched else summary.iloc[:0], has_sd)


def outside(ref: Reference, mean: float) -> bool:
    """More than SD_LIMIT of the authors' SDs away; without an SD, further than the figure's reading
    tolerance (from the value, or outside the range). An undefined mean is never a gap."""
    if math.isnan(mean):
        return False
    units = ref.sd_units(mean)
    if units is not None:
        return abs(round(units, 9)) > SD_LIMIT
    return abs(round(ref.difference(mean), 9)) > FIGURE_TOLERANCE


def _authors(ref: Reference) -> str:
    if ref.sd is not None:
        return f"{ref.text} ± {ref.sd_text}"
    return f"{ref.text} ({'range' if ref.high > ref.low else 'value'}, no SD)"


def _difference(ref: Reference, mean: float) -> str:
    """In the authors' SDs where they give one; else in absolute units, said so."""
    units = ref.sd_units(mean)
    return f"{units:+.2f} SD" if units is not None else f"{signed(ref.difference(mean))} absolute"


def _flag(ref: Reference, mean: float) -> str:
    if ref.sd is not None:
        return f"**> {SD_LIMIT:g} SD**" if outside(ref, mean) else f"within {SD_LIMIT:g} SD"
    return (f"**beyond ±{FIGURE_TOLERANCE:g}** (no SD)" if outside(ref, mean)
            else f"within ±{FIGURE_TOLERANCE:g} (no SD)")


def _comparison_row(ref: Reference, row: pd.Series | None) -> dict[str, str]:
    paper = {"method": method_label(ref.method), "block": block_label(ref.block),
             "authors (mean ± SD)": _authors(ref)}
    if row is None or math.isnan(row["mean"]):  # not run here, or undefined: ours is not invented
        ours = MISSING if row is None else mean(row, 3)
        n = MISSING if row is None else str(int(row["n"]))
        return paper | {"this run: mean [95% CI]": ours, "n": n, "difference": MISSING, "flag": MISSING,
                        "experiment": MISSING if row is None else str(row["experiment"])}
    difference = _difference(ref, row["mean"])
    return paper | {"this run: mean [95% CI]": mean_ci(row, 3), "n": str(int(row["n"])),
                    "difference": f"**{difference}**" if outside(ref, row["mean"]) else difference,
                    "flag": _flag(ref, row["mean"]), "experiment": str(row["experiment"])}


def _comparison_note(has_sd: bool) -> str:
    if has_sd:
        return (f"difference = (our mean - the authors' mean) / the authors' SD over their images; cells more "
                f"than {SD_LIMIT:g} SD away are in bold")
    return (f"no SD is known for these values: difference = our mean minus the authors' value (for a range: "
            f"the distance outside it, 0 inside), in absolute units; the ±{FIGURE_TOLERANCE:g} is how precisely "
            f"a value can be read off the figure, not a spread; cells further than that are in bold")
