"""The report's content, as page blocks: skipped experiments, claims, headline figures, per experiment
its map figures and summary tables, and what ran (the paper comparison: paper.py; the training-budget
study: budget.py). Everything is read from run.json / summaries.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd

from harness.report import claims as claim_checks
from harness.report.labels import method_label, model_label
from harness.report.load import Experiment, Run
from harness.report.page import Block, Bullets, Heading, Image, Paragraph, Table
from harness.report.tables import MISSING, compact_tables, percent
from harness.results import RunRecord

TITLE = "Sanity checks for saliency maps: report"


def skipped_section(experiments: list[Experiment]) -> list[Block]:
    skipped = [e for e in experiments if e.skipped is not None]
    if not skipped:
        return []
    items = [f"**{e.name}**: {str(e.skipped.get('reason', 'no reason given')).rstrip('.')}. "
             f"How to provide: {e.skipped.get('how_to_provide', 'not stated')}" for e in skipped]
    return [Heading(2, "Skipped experiments"), Bullets(tuple(items))]


# -- what ran -------------------------------------------------------------------------------------------
def what_ran_section(experiments: list[Experiment]) -> list[Block]:
    ran = [e for e in experiments if e.runs]
    runs = [run for e in ran for run in e.runs]
    if not runs:
        return [Heading(2, "What ran"), Paragraph("No experiment in this folder produced results.")]
    return [Heading(2, "What ran"),
            Table("Experiments", pd.DataFrame.from_records([_experiment_row(e) for e in ran])),
            Table("Models", pd.DataFrame.from_records(_unique(_model_rows(runs)))),
            Table("Methods and their settings", pd.DataFrame.from_records(_unique(_method_rows(runs)))),
            Table("Randomization and metrics", pd.DataFrame.from_records(
                _unique(_setting_row(r) for r in runs if r.record.schedule))),
            Table("Package versions", _versions(runs))]


def _experiment_row(experiment: Experiment) -> dict[str, str]:
    records = [run.record for run in experiment.runs]
    seconds = sum(float(r.timings.get("total_seconds") or 0.0) for r in records)
    return {"experiment": experiment.name,
            "models": ", ".join(dict.fromkeys(run.model for run in experiment.runs)),
            "schedules": ", ".join(experiment.schedules),
            "methods": ", ".join(method_label(m) for m in dict.fromkeys(experiment.summary["method"])),
            "data": "; ".join(dict.fromkeys(_data(r) for r in records)),
            "seeds": ", ".join(dict.fromkeys(str(r.seed) for r in records)),
            "runs": str(len(records)), "duration": _duration(seconds)}


def _data(record: RunRecord) -> str:
    data = record.config.get("data") or {}
    described = ", ".join(f"{k}={v}" for k, v in data.items() if v is not None)
    count = record.images.get("count")
    return f"{described} ({count} images)" if count is not None else described or MISSING


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _model_rows(runs: list[Run]) -> Iterable[dict[str, str]]:
    """Each run's model, and the random-label model a data randomization run took its weights from.
    Runs without a model (calibration) have none to list."""
    for run in runs:
        model = run.record.model
        for record in (model, model.get("donor")):
            if record and record.get("identity"):
                yield _model_row(record)


def _model_row(model: dict) -> dict[str, str]:
    metrics = model.get("metrics") or {}
    spec = model.get("input") or {}
    name = model.get("name", MISSING)
    return {"model": f"{model_label(name)} (`{name}`)",
            "source": f"{model.get('identity', MISSING)} ({model.get('source_kind', MISSING)})",
            "input": f"{spec.get('size', MISSING)} x {spec.get('channels', MISSING)}, "
                     f"range {spec.get('value_range', MISSING)}",
            "classes": str(model.get("num_classes", MISSING)),
            "train accuracy": percent(metrics.get("train_accuracy")),
            "test accuracy": percent(metrics.get("test_accuracy"))}


def _method_rows(runs: list[Run]) -> Iterable[dict[str, str]]:
    for run in runs:
        # run.json's `methods` holds each method resolved ({name, label, params}); the config may
        # name a method by its config file only (`methods: [gradient, ...]`).
        for label, method in zip(run.record.method_labels(), run.record.methods):
            yield {"method": method_label(label), "key": f"`{label}`", "settings": _settings(method.get("params")),
                   "target": str(run.record.config.get("target", MISSING))}


def _setting_row(run: Run) -> dict[str, str]:
    return {"schedule": run.record.schedule_name or MISSING, "re-initialization": _settings(run.record.schedule.get("reinit")),
            "metric settings": _settings(run.record.metrics)}


def _settings(values: dict | None) -> str:
    def text(value) -> str:
        return "/".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return ", ".join(f"{k}={text(v)}" for k, v in (values or {}).items()) or MISSING


def _versions(runs: list[Run]) -> pd.DataFrame:
    versions: dict[str, dict[str, None]] = {}  # package -> its versions over the runs, in order, once each
    for run in runs:
        for package, version in run.record.versions.items():
            versions.setdefault(package, {})[str(version)] = None
    return pd.DataFrame({"package": list(versions), "version": [", ".join(v) for v in versions.values()]})


def _unique(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    return list({json.dumps(row, sort_keys=True): row for row in rows}.values())


# -- claims --------------------------------------------------------------------------------------------------
def claims_section(summary: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [Heading(2, "The paper's claims, checked on this run"), Paragraph(
        "Each claim is judged from this run's means with the simple threshold stated below it; the "
        "thresholds are fixed in `harness/report/claims.py`, not fitted to any result.")]
    for claim in claim_checks.check_claims(summary):
        blocks += [Paragraph(f"**{claim.statement}** Rule: {claim.rule}"), Bullets(tuple(claim.findings))]
    return blocks


# -- headline figures and results per experiment ----------------------------------------------------------
def headline_section(experiments: list[Experiment], figures: dict[str, list[Image]]) -> list[Block]:
    """Each experiment's score figures (curves, boxes, bars): what the claims above are read from."""
    shown = [e for e in experiments if figures.get(e.name)]
    if not shown:
        return []
    blocks: list[Block] = [Heading(2, "Headline figures")]
    for experiment in shown:
        blocks += [Heading(3, f"`{experiment.name}`"), *figures[experiment.name]]
    return blocks


def results_section(experiments: list[Experiment], summary: pd.DataFrame,
                    figures: dict[str, list[Image]]) -> list[Block]:
    """Per experiment: its map figures (example images) and its summary tables."""
    blocks: list[Block] = [Heading(2, "Results per experiment")]
    tables = compact_tables(summary)
    for experiment in (e for e in experiments if e.runs):
        blocks += [Heading(3, f"`{experiment.name}`"), *figures.get(experiment.name, [])]
        blocks += [Table(t.title, t.frame, t.note) for t in tables if t.experiment == experiment.name]
    return blocks
