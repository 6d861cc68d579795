"""The report's "Training budget" section: how the cascading test's first step depends on how long the
CNN was trained, from the `training_budget` experiment's snapshot runs (table and figure by
harness.zoo.study). Absent when that experiment has no runs.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.gallery import as_image, figure_path
from harness.report.labels import method_label
from harness.report.load import Experiment
from harness.report.page import Block, Heading, Image, Paragraph, Table
from harness.report.tables import MISSING, percent, span

EXPERIMENT = "training_budget"


def budget_section(experiments: list[Experiment], out: Path) -> tuple[list[Block], list[Image]]:
    """The section's blocks and the figure it wrote (so the report keeps it); nothing without runs."""
    experiment = next((e for e in experiments if e.name == EXPERIMENT and e.runs), None)
    if experiment is None:
        return [], []
    from harness.zoo import study  # only when there is a study to show

    table = study.budget_table(experiment.path)
    heading = Heading(2, "Training budget")
    if table.empty:
        return [heading, Paragraph(f"`{EXPERIMENT}` has runs, but none with a first cascading step to compare.")], []
    title = "|Spearman| after the logits step vs training steps"
    figure = as_image(study.budget_figure(table, figure_path(out, EXPERIMENT, "budget")), out, title,
                      f"{title}, one line per method, with 95% bootstrap CIs; x: optimizer steps of the model's "
                      f"recipe (log scale). From the `{EXPERIMENT}` runs.")
    intro = Paragraph(
        "How similar each method's map stays when only the logits are randomized, for models trained for "
        "different numbers of optimizer steps (the model's name ends in `@STEPS`). A cell: mean |Spearman| "
        "[95% CI] over the images, and in parentheses the share of pixels near zero in both maps (shared flat "
        "regions raise a rank correlation whatever the rest of the map does), where the maps were kept.")
    note = f"mean [95% bootstrap CI] over n = {span(table['n'])} images per cell; harness.zoo.study.budget_table"
    return [heading, intro, figure, Table("Training budget: |Spearman| after the logits step", _frame(table), note)], [figure]


def _frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model (snapshot; its name says the recipe), methods across, as strings for the page."""
    methods = list(dict.fromkeys(table["method"]))
    models = table.drop_duplicates("model").assign(base=lambda t: t["model"].str.split("@").str[0])
    records = []
    for _, first in models.sort_values(["base", "steps"], kind="stable").iterrows():
        rows = table[table["model"] == first["model"]]
        record = {"model": f"`{first['model']}`", "steps": _steps(first["steps"]),
                  "held-out accuracy": percent(first.get("held_out_accuracy"))}
        for method in methods:
            cell = rows[rows["method"] == method]
            record[method_label(method)] = _cell(cell.iloc[0]) if len(cell) else MISSING
        records.append(record)
    return pd.DataFrame.from_records(records)


def _cell(row: pd.Series) -> str:
    text = f"{row['spearman_abs']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    shared = row.get("shared_near_zero")
    return text + (f" ({100 * shared:.0f} %)" if shared is not None and pd.notna(shared) else "")


def _steps(value) -> str:
    return MISSING if value is None or pd.isna(value) else f"{int(value):,}"
