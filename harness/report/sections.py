"""The report's sections as page blocks: skipped experiments, the verdict matrices, the paper's claims (each
checked as a verdict is, harness.verdicts.judge), the headline figures, the training budget study and the
repaired sanity checks, per experiment its map figures and summary tables, and what ran; all read from run.json
and the summaries (the paper comparison: paper.py; segmentation Grad-CAM: segmentation.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.report import reference
from harness.report.gallery import as_image, figure_path
from harness.report.labels import ORIGINAL, base_model, block_label, method_label, model_label, order_methods
from harness.report.load import Experiment
from harness.report.page import Block, Bullets, Details, Heading, Image, Paragraph, Table
from harness.report.tables import MISSING, compact_tables, mean_ci, number, percent, span
from harness.results import CONTROL_SCHEDULE, RunRecord
from harness.verdicts import (ABOVE, BELOW, CONTROL_ROLES, DEPENDS_BELOW, FAIL, INCONCLUSIVE, INPUT_DOMINATED_ABS,
                              INPUT_DOMINATED_SIGNED, MIN_N, STAYS_SIMILAR_FROM, TESTS, UNDEFINED, UNINFORMATIVE,
                              judge)

TITLE = "Sanity checks for saliency maps: report"


def skipped_section(experiments: list[Experiment]) -> list[Block]:
    skipped = [e for e in experiments if e.skipped is not None]
    if not skipped:
        return []
    items = [f"**{e.name}**: {str(e.skipped.get('reason', 'no reason given')).rstrip('.')}. "
             f"How to provide: {e.skipped.get('how_to_provide', 'not stated')}" for e in skipped]
    return [Heading(2, "Skipped experiments"), Bullets(tuple(items))]


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
        title = " · ".join(f"`{k}`" if per_experiment and i == 0 else model_label(k) for i, k in enumerate(
            key if isinstance(key, tuple) else (key,)))
        frame, styles = _matrix(rows.drop_duplicates(["variant", "test"]))
        blocks.append(Table(title, frame, styles=styles))
    return [*blocks, Paragraph(VERDICTS_NOTE)]


def _matrix(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cell texts, CSS classes), methods before the model-free controls, tests in TESTS' order."""
    tests = [t.name for t in TESTS if t.name in set(rows["test"])]
    variants = list(dict.fromkeys(rows.sort_values("method", key=lambda m: m.isin(list(CONTROL_ROLES)),
                                                   kind="stable")["variant"]))
    cells = {(r["variant"], r["test"]): r for _, r in rows.iterrows()}
    names = []
    for variant in variants:
        method = next(str(cells[(variant, t)]["method"]) for t in tests if (variant, t) in cells)
        names.append(method_label(method) if variant == method else f"{method_label(method)} (`{variant}`)")
    text = pd.DataFrame([[_cell_text(cells.get((v, t))) for t in tests] for v in variants], columns=tests)
    style = pd.DataFrame([["", *("" if (v, t) not in cells else str(cells[(v, t)]["verdict"]) for t in tests)]
                          for v in variants], columns=["method", *tests])
    return text.assign(method=names)[["method", *tests]], style


def _cell_text(row) -> str:
    if row is None:
        return MISSING
    mark = "*" if str(row["calibration"]).startswith(UNINFORMATIVE) else ""
    if pd.isna(row["value"]):
        return f"{row['verdict']}{mark}"
    ci = "" if pd.isna(row["ci_low"]) else f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{row['verdict']}{mark} {row['value']:.2f}{ci}"


# -- the paper's claims ---------------------------------------------------------------------------------------
def claims_section(summary: pd.DataFrame) -> list[Block]:
    """The paper's claims, folded: the verdict matrices above carry the same numbers."""
    blocks: list[Block] = [Paragraph(
        "Each claim is judged as a verdict is, with the threshold stated below it; the thresholds are "
        "fixed in `harness/verdicts.py`, not fitted to any result. A finding measured by several "
        "experiments is listed once, from the first.")]
    claims = check_claims(summary)
    for claim in claims:
        blocks += [Paragraph(f"**{claim.statement}** Rule: {claim.rule}"), Bullets(tuple(claim.findings))]
    findings = sum(len(c.findings) for c in claims)
    return [Details(f"The paper's claims, checked on this folder ({len(claims)} claims, {findings} findings)",
                    tuple(blocks))]


# Schedules whose last step is "everything randomized" (weights or labels).
FINAL_SCHEDULES = {"cascading": "the weights", "bottom_up": "the weights", "data_randomization": "the training labels"}


@dataclass(frozen=True)
class Claim:
    statement: str
    rule: str
    findings: list[str]


def check_claims(summary: pd.DataFrame) -> list[Claim]:
    return [_depends(summary), _stays_similar(summary), _input_dominated(summary)]


def _series(summary: pd.DataFrame, families: tuple[str, ...], schedules, metric: str = "spearman_abs"):
    """(experiment, model, schedule, method, family) -> its rows by step, for every entry (`method`) of the
    families, each (model, schedule, entry) once, from the first experiment that measured it."""
    rows = summary.assign(family=summary["family"] if "family" in summary.columns else summary["method"])
    rows = rows[rows["family"].isin(families) & rows["schedule"].isin(schedules) & (rows["metric"] == metric)]
    seen = set()
    for keys, group in rows.groupby(["experiment", "model", "schedule", "method", "family"], sort=False):
        if (group["step"] > 0).any() and keys[1:4] not in seen:
            seen.add(keys[1:4])
            yield keys, group.sort_values("step")


def _where(keys) -> str:
    experiment, model, schedule, method, family = keys
    where = experiment if experiment == schedule else f"{experiment}, {schedule}"
    name = method_label(family) if method == family else f"{method_label(family)} (`{method}`)"
    return f"{name}, {model_label(model)} ({where})"


def _paper(keys, row: pd.Series) -> str:
    """" (paper: 0.08)" where the paper reports this cell (for the entry's family): how the paper itself fares."""
    _, model, schedule, _, family = keys
    ref = reference.lookup(base_model(model), schedule, str(row["metric"]), family, str(row["block"]))
    return f" (paper: {ref.text})" if ref else ""


def _verdict(*judged: tuple[str, str]) -> str:
    """One claim's verdict from its parts' (verdict, reason): confirmed when every part passes."""
    verdicts = [v for v, _ in judged]
    if UNDEFINED in verdicts:  # every image's score undefined (docs/protocol.md §5.1): no verdict
        return "**undetermined** (scores undefined)"
    if FAIL in verdicts:
        return "**not confirmed**"
    if INCONCLUSIVE in verdicts:
        return f"**inconclusive** ({'; '.join(r for v, r in judged if v == INCONCLUSIVE)})"
    return "**confirmed**"


def _claim(statement: str, rule: str, findings: list[str], needs: str) -> Claim:
    return Claim(statement, rule, findings or [f"not measured in this folder (needs {needs})"])


def _depends(summary: pd.DataFrame) -> Claim:
    findings = []
    for keys, rows in _series(summary, ("gradient", "gradcam"), FINAL_SCHEDULES):
        first, last = rows.iloc[0], rows.iloc[-1]
        findings.append(f"{_where(keys)}: |Spearman| {number(first['mean'])} at {block_label(first['block'])} -> "
                        f"{mean_ci(last)}{_paper(keys, last)} at {block_label(last['block'])}: depends on "
                        f"{FINAL_SCHEDULES[keys[2]]}: {_verdict(judge(last, DEPENDS_BELOW, BELOW))}")
    return _claim("Gradient and Grad-CAM depend on the weights (and on the training labels).",
                  f"confirmed when the 95 % CI of the mean |Spearman| at the last step (all blocks randomized, or "
                  f"random labels) lies wholly below {DEPENDS_BELOW}, over at least {MIN_N} images.",
                  findings, needs="a cascading or data randomization run of Gradient or Grad-CAM")


def _stays_similar(summary: pd.DataFrame) -> Claim:
    findings = []
    for keys, rows in _series(summary, ("guided_backprop", "guided_gradcam"), ("cascading",)):
        randomized = rows[rows["block"] != ORIGINAL]
        top = randomized.iloc[0]
        similar = randomized["mean"].ge(STAYS_SIMILAR_FROM).cummin()  # True while every step so far stays similar
        reach = (f"stays >= {STAYS_SIMILAR_FROM} through {block_label(randomized[similar].iloc[-1]['block'])}"
                 if similar.any() else f"below {STAYS_SIMILAR_FROM} from the start")
        findings.append(f"{_where(keys)}: |Spearman| {mean_ci(top)}{_paper(keys, top)} after "
                        f"{block_label(top['block'])} is randomized, {reach}, {number(randomized.iloc[-1]['mean'])} "
                        f"when all are: {_verdict(judge(top, STAYS_SIMILAR_FROM, ABOVE))}")
    return _claim("Guided Backprop and Guided Grad-CAM stay similar until the lowest layers are randomized.",
                  f"confirmed when the 95 % CI of the mean |Spearman| after randomizing the top block alone lies "
                  f"wholly above {STAYS_SIMILAR_FROM}, over at least {MIN_N} images; how far down the mean "
                  f"stays there is shown too.",
                  findings, needs="a cascading run of Guided Backprop or Guided Grad-CAM")


def _input_dominated(summary: pd.DataFrame) -> Claim:
    methods = ("gradient_x_input", "integrated_gradients")
    signed = {keys: rows.iloc[-1] for keys, rows in _series(summary, methods, FINAL_SCHEDULES, "spearman_signed")}
    findings = []
    for keys, rows in _series(summary, methods, FINAL_SCHEDULES):
        last = rows.iloc[-1]
        text = f"{_where(keys)}: at {block_label(last['block'])} |Spearman| {mean_ci(last)}{_paper(keys, last)}"
        judged = [judge(last, INPUT_DOMINATED_ABS, ABOVE)]
        if keys in signed:
            text += f", signed Spearman {mean_ci(signed[keys])}"
            judged += [judge(signed[keys], INPUT_DOMINATED_SIGNED, BELOW),
                       judge(signed[keys], -INPUT_DOMINATED_SIGNED, ABOVE)]
        else:
            text += " (signed Spearman not measured)"
        findings.append(f"{text}: {_verdict(*judged)}")
    return _claim("Gradient ⊙ Input and Integrated Gradients stay input-dominated (high |Spearman|, signed "
                  "Spearman near 0).",
                  f"confirmed when, at the last step, the 95 % CI of the mean |Spearman| lies wholly above "
                  f"{INPUT_DOMINATED_ABS} and that of the mean signed Spearman wholly within "
                  f"+-{INPUT_DOMINATED_SIGNED}, over at least {MIN_N} images.",
                  findings, needs="a cascading or data randomization run of Gradient ⊙ Input or IG")


# -- headline figures and results per experiment ----------------------------------------------------------
def headline_section(experiments: list[Experiment], figures: dict[str, list[Image]]) -> list[Block]:
    """Each experiment's score figures (curves, boxes, bars): what the claims above are read from."""
    shown = [e for e in experiments if figures.get(e.name)]
    blocks: list[Block] = [Heading(2, "Headline figures")] if shown else []
    for experiment in shown:
        blocks += [Heading(3, f"`{experiment.name}`"), *figures[experiment.name]]
    return blocks


def results_section(experiments: list[Experiment], summary: pd.DataFrame,
                    figures: dict[str, list[Image]]) -> list[Block]:
    """Per experiment: its map figures (example images) and its summary tables."""
    blocks: list[Block] = [Heading(2, "Results per experiment")]
    for experiment in (e for e in experiments if e.runs):
        blocks += [Heading(3, f"`{experiment.name}`"), *figures.get(experiment.name, []),
                   *compact_tables(summary[summary["experiment"] == experiment.name])]
    return blocks


# -- training budget (docs/training-budget.md) ------------------------------------------------------------
BUDGET_EXPERIMENT = "training_budget"


def budget_section(experiments: list[Experiment], out: Path) -> tuple[list[Block], list[Image]]:
    """The section's blocks and the figure it wrote (so the report keeps it); nothing without runs."""
    experiment = next((e for e in experiments if e.name == BUDGET_EXPERIMENT and e.runs), None)
    if experiment is None:
        return [], []
    from harness.zoo import study  # only when there is a study to show

    table = study.budget_table(experiment.path)
    heading = Heading(2, "Training budget")
    if table.empty:
        return [heading, Paragraph(f"`{BUDGET_EXPERIMENT}` has runs, but none with a first cascading step to "
                                   "compare.")], []
    title = "|Spearman| after the logits step vs training steps"
    figure = as_image(study.budget_figure(table, figure_path(out, BUDGET_EXPERIMENT, "budget")), out, title,
                      f"{title}, one line per method, with 95% bootstrap CIs; x: optimizer steps of the model's "
                      f"recipe (log scale). From the `{BUDGET_EXPERIMENT}` runs.")
    intro = Paragraph(
        "How similar each method's map stays when only the logits are randomized, for models trained for "
        "different numbers of optimizer steps (the model's name ends in `@STEPS`). A cell: mean |Spearman| "
        "[95% CI] over the images, and in parentheses the share of pixels near zero in both maps (shared flat "
        "regions raise a rank correlation whatever the rest of the map does), where the maps were kept.")
    note = f"mean [95% bootstrap CI] over n = {span(table['n'])} images per cell; harness.zoo.study.budget_table"
    frame = Table("Training budget: |Spearman| after the logits step", _budget_frame(table), note)
    return [heading, intro, figure, frame], [figure]


def _budget_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model (snapshot; its name says the recipe), methods across."""
    methods = list(dict.fromkeys(table["method"]))
    models = table.drop_duplicates("model").assign(base=lambda t: t["model"].str.split("@").str[0])
    records = []
    for _, first in models.sort_values(["base", "steps"], kind="stable").iterrows():
        rows = table[table["model"] == first["model"]]
        steps = MISSING if pd.isna(first["steps"]) else f"{int(first['steps']):,}"
        record = {"model": f"`{first['model']}`", "steps": steps,
                  "held-out accuracy": percent(first.get("held_out_accuracy"))}
        for method in methods:
            cell = rows[rows["method"] == method]
            record[method_label(method)] = _budget_cell(cell.iloc[0]) if len(cell) else MISSING
        records.append(record)
    return pd.DataFrame.from_records(records)


def _budget_cell(row: pd.Series) -> str:
    text = f"{row['spearman_abs']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    shared = row.get("shared_near_zero")
    return text + (f" ({100 * shared:.0f} %)" if shared is not None and pd.notna(shared) else "")


# -- repaired sanity checks (docs/protocol.md §6) ----------------------------------------------------------
# A two-way rule of their own, not harness.verdicts' (inconclusive below MIN_N images or when the CI holds the
# threshold; random logit on |Spearman|): which side of its bound the CI ends on, random logit on SSIM.
REPAIRS_EXPERIMENT = "repairs"
SIMILARITY_LIMIT = 0.5


@dataclass(frozen=True)
class RepairTest:
    name: str
    schedule: str  # the schedule whose last step is read; CONTROL_SCHEDULE: the control `block`
    metric: str
    bound: float
    above: bool = False  # pass when the whole CI lies above the bound; else below it
    block: str = ""

    def rule(self) -> str:
        where = f"control `{self.block}`" if self.schedule == CONTROL_SCHEDULE else f"last step of `{self.schedule}`"
        side = "above" if self.above else "below"
        return f"{self.name}: `{self.metric}` at the {where}; pass = 95% CI {side} {self.bound:g}"


REPAIR_TESTS = (
    RepairTest("MPRT top-down", "cascading", "spearman_abs", SIMILARITY_LIMIT),
    RepairTest("MPRT bottom-up", "bottom_up", "spearman_abs", SIMILARITY_LIMIT),
    RepairTest("sMPRT", "smprt", "spearman_abs", SIMILARITY_LIMIT),
    RepairTest("eMPRT", "bottom_up", "emprt", 0.0, above=True),
    RepairTest("random logit", CONTROL_SCHEDULE, "ssim", SIMILARITY_LIMIT, block="random_logit"),
)


def repairs_section(experiments: list[Experiment]) -> list[Block]:
    """The section's blocks; nothing without runs of the `repairs` experiment."""
    experiment = next((e for e in experiments if e.name == REPAIRS_EXPERIMENT and e.runs), None)
    if experiment is None:
        return []
    blocks: list[Block] = [Heading(2, "Repaired sanity checks"), Paragraph(
        "Each method under the original test and its repairs, side by side: MPRT randomizing top-down "
        "(logits first) and bottom-up (input first), sMPRT (bottom-up, each map the mean over noisy copies "
        "of its input), eMPRT (the rise in the map's histogram entropy on the fully randomized model, "
        "higher is better) and the random-logit test (lower is better). `random_attribution` and "
        "`edge_detector` use no model: where a method stands next to them says what its verdict is worth.")]
    summary = experiment.summary
    for model in dict.fromkeys(summary["model"]):
        blocks.append(Table(f"Repaired sanity checks, {model_label(model)}",
                            repairs_table(summary[summary["model"] == model]),
                            "; ".join(t.rule() for t in REPAIR_TESTS) + "; n = images per cell"))
    return blocks


def repairs_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One model's summary rows -> methods down, tests across, string cells "value [CI] verdict"."""
    records = []
    for method in order_methods(summary["method"]):
        rows = summary[summary["method"] == method]
        records.append({"method": method_label(method), **{t.name: _repair_cell(rows, t) for t in REPAIR_TESTS}})
    return pd.DataFrame.from_records(records, columns=["method", *(t.name for t in REPAIR_TESTS)])


def _repair_cell(rows: pd.DataFrame, test: RepairTest) -> str:
    rows = rows[(rows["schedule"] == test.schedule) & (rows["metric"] == test.metric)]
    if test.schedule == CONTROL_SCHEDULE:
        rows = rows[rows["block"] == test.block]
    else:
        rows = rows[rows["step"] == rows["step"].max()]
    if rows.empty:
        return MISSING
    row = rows.iloc[0]
    if pd.isna(row["ci_low"]):
        return mean_ci(row)
    passed = row["ci_low"] > test.bound if test.above else row["ci_high"] < test.bound
    return f"{mean_ci(row)} **{'pass' if passed else 'fail'}** (n={int(row['n'])})"


# -- what ran -------------------------------------------------------------------------------------------
def what_ran_section(experiments: list[Experiment]) -> list[Block]:
    ran = [e for e in experiments if e.runs]
    runs = [run for e in ran for run in e.runs]
    if not runs:
        return [Heading(2, "What ran"), Paragraph("No experiment in this folder produced results.")]
    # A data randomization run's model record holds the random-label model it took its weights from;
    # runs without a model (calibration) have none to list.
    models = [_model_row(record) for run in runs for record in (run.record.model, run.record.model.get("donor"))
              if record and record.get("identity")]
    # run.json's `methods` holds each method resolved ({name, label, params}); the config may name a method
    # by its config file only (`methods: [gradient, ...]`).
    methods = [{"method": method_label(label), "key": f"`{label}`", "settings": _settings(method.get("params")),
                "target": str(run.record.config.get("target", MISSING))}
               for run in runs for label, method in zip(run.record.method_labels(), run.record.methods)]
    settings = [{"schedule": run.record.schedule_name or MISSING,
                 "re-initialization": _settings(run.record.schedule.get("reinit")),
                 "metric settings": _settings(run.record.metrics)} for run in runs if run.record.schedule]
    versions: dict[str, dict[str, None]] = {}  # package -> its versions over the runs, in order, once each
    for run in runs:
        for package, version in run.record.versions.items():
            versions.setdefault(package, {})[str(version)] = None
    return [Heading(2, "What ran"),
            Table("Experiments", pd.DataFrame.from_records([_experiment_row(e) for e in ran])),
            Table("Models", _unique(models)),
            Table("Methods and their settings", _unique(methods)),
            Table("Randomization and metrics", _unique(settings)),
            Table("Package versions", pd.DataFrame({"package": list(versions),
                                                    "version": [", ".join(v) for v in versions.values()]}))]


def _experiment_row(experiment: Experiment) -> dict[str, str]:
    records = [run.record for run in experiment.runs]
    seconds = sum(float(r.timings.get("total_seconds") or 0.0) for r in records)
    minutes, rest = divmod(round(seconds), 60)
    return {"experiment": experiment.name,
            "models": ", ".join(dict.fromkeys(run.model for run in experiment.runs)),
            "schedules": ", ".join(dict.fromkeys(experiment.summary["schedule"].astype(str))),
            "methods": ", ".join(method_label(m) for m in dict.fromkeys(experiment.summary["method"])),
            "data": "; ".join(dict.fromkeys(_data(r) for r in records)),
            "seeds": ", ".join(dict.fromkeys(str(r.seed) for r in records)),
            "runs": str(len(records)), "duration": f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"}


def _data(record: RunRecord) -> str:
    data = record.config.get("data") or {}
    described = ", ".join(f"{k}={v}" for k, v in data.items() if v is not None)
    count = record.images.get("count")
    return f"{described} ({count} images)" if count is not None else described or MISSING


def _model_row(model: dict) -> dict[str, str]:
    metrics, spec, name = model.get("metrics") or {}, model.get("input") or {}, model.get("name", MISSING)
    return {"model": f"{model_label(name)} (`{name}`)",
            "source": f"{model.get('identity', MISSING)} ({model.get('source_kind', MISSING)})",
            "input": f"{spec.get('size', MISSING)} x {spec.get('channels', MISSING)}, "
                     f"range {spec.get('value_range', MISSING)}",
            "classes": str(model.get("num_classes", MISSING)),
            "train accuracy": percent(metrics.get("train_accuracy")),
            "test accuracy": percent(metrics.get("test_accuracy"))}


def _settings(values: dict | None) -> str:
    def text(value) -> str:
        return "/".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return ", ".join(f"{k}={text(v)}" for k, v in (values or {}).items()) or MISSING


def _unique(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list({json.dumps(row, sort_keys=True): row for row in rows}.values()))
