"""The report's content, as page blocks: skipped experiments, the verdict matrices, claims, headline figures, per experiment
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
from harness.report.page import Block, Bullets, Details, Heading, Image, Paragraph, Table
from harness.report.tables import MISSING, compact_tables, percent
from harness.results import RunRecord
from harness.verdicts import CONTROL_ROLES, MIN_N, TESTS, UNINFORMATIVE

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


# -- verdicts -------------------------------------------------------------------------------------------------
VERDICTS_NOTE = (f"Each cell: the verdict, then the mean [95 % CI] over images of |Spearman| (eMPRT: q). Pass or "
                 f"fail only when the whole CI lies on one side of the test's threshold, with at least {MIN_N} "
                 f"images; else inconclusive. * uninformative on this model: a model-free control did not play "
                 f"its role. A test measured by several experiments shows the first; every row, with its rule "
                 f"and reason, is in `verdicts.csv`.")


def verdicts_section(table: pd.DataFrame, per_experiment: bool = False) -> list[Block]:
    """Per model (per experiment too, for a sweep's jobs), one matrix: methods x tests, each cell
    coloured by its verdict; a (method, test) measured by several experiments appears once."""
    table = table[table["metric"].isin([t.metrics[0] for t in TESTS])]
    if not len(table):
        return []
    keys = ["experiment", "model"] if per_experiment else ["model"]
    blocks: list[Block] = [Heading(2, "Verdicts")]
    for key, rows in table.groupby(keys, sort=False):
        rows = rows.drop_duplicates(["variant", "test"])
        title = " · ".join(f"`{k}`" if per_experiment and i == 0 else model_label(k) for i, k in enumerate(
            key if isinstance(key, tuple) else (key,)))
        frame, styles = _matrix(rows)
        blocks.append(Table(title, frame, styles=styles))
    return [*blocks, Paragraph(VERDICTS_NOTE)]


def _matrix(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cell texts, CSS classes), methods before the model-free controls, tests in TESTS' order."""
    tests = [t.name for t in TESTS if t.name in set(rows["test"])]
    variants = list(dict.fromkeys(rows.sort_values("method", key=lambda m: m.isin(list(CONTROL_ROLES)),
                                                   kind="stable")["variant"]))
    cells = {(r["variant"], r["test"]): r for _, r in rows.iterrows()}
    names = [_row_name(cells, v, tests) for v in variants]
    text = pd.DataFrame([[_cell_text(cells.get((v, t))) for t in tests] for v in variants], columns=tests)
    style = pd.DataFrame([["", *(_cell_class(cells.get((v, t))) for t in tests)] for v in variants],
                         columns=["method", *tests])
    return text.assign(method=names)[["method", *tests]], style


def _row_name(cells: dict, variant: str, tests: list[str]) -> str:
    method = next(str(cells[(variant, t)]["method"]) for t in tests if (variant, t) in cells)
    return method_label(method) if variant == method else f"{method_label(method)} (`{variant}`)"


def _cell_text(row) -> str:
    if row is None:
        return MISSING
    mark = "*" if str(row["calibration"]).startswith(UNINFORMATIVE) else ""
    if pd.isna(row["value"]):
        return f"{row['verdict']}{mark}"
    ci = "" if pd.isna(row["ci_low"]) else f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{row['verdict']}{mark} {row['value']:.2f}{ci}"


def _cell_class(row) -> str:
    return "" if row is None else str(row["verdict"])


# -- claims --------------------------------------------------------------------------------------------------
def claims_section(summary: pd.DataFrame) -> list[Block]:
    """The paper's claims, folded: the verdict matrices above carry the same numbers."""
    blocks: list[Block] = [Paragraph(
        "Each claim is judged as a verdict is, with the threshold stated below it; the thresholds are "
        "fixed in `harness/verdicts.py`, not fitted to any result. A finding measured by several "
        "experiments is listed once, from the first.")]
    claims = claim_checks.check_claims(summary)
    for claim in claims:
        blocks += [Paragraph(f"**{claim.statement}** Rule: {claim.rule}"), Bullets(tuple(claim.findings))]
    findings = sum(len(c.findings) for c in claims)
    return [Details(f"The paper's claims, checked on this folder ({len(claims)} claims, {findings} findings)",
                    tuple(blocks))]


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
