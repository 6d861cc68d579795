"""The paper's claims (docs/protocol.md §7), each checked against this run's numbers.

A claim is judged as a verdict is (harness.verdicts.judge): its threshold on |Spearman| (or signed
Spearman), stated in the report's text, against the whole 95 % CI, with at least verdicts.MIN_N
images; otherwise it is inconclusive and says why.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.report import reference
from harness.report.labels import ORIGINAL, base_model, block_label, method_label, model_label
from harness.report.tables import mean_ci, number
from harness.verdicts import (ABOVE, BELOW, DEPENDS_BELOW, FAIL, INCONCLUSIVE, INPUT_DOMINATED_ABS,
                              INPUT_DOMINATED_SIGNED, MIN_N, STAYS_SIMILAR_FROM, UNDEFINED, judge)

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
    """(experiment, model, schedule, method, family) -> its rows sorted by step, for the given metric:
    every entry (`method`, a label where the run gave one) of the given method families, each
    (model, schedule, entry) once, from the first experiment that measured it."""
    family = summary["family"] if "family" in summary.columns else summary["method"]
    rows = summary.assign(family=family)
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
    """" (paper: 0.08)" where the paper reports this cell (for the entry's method family): the reader
    sees how the paper itself fares."""
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
    return _claim("Gradient and Grad-CAM depend on the weights (and on the training labels).",
                  f"confirmed when the 95 % CI of the mean |Spearman| at the last step (all blocks randomized, or "
                  f"random labels) lies wholly below {DEPENDS_BELOW}, over at least {MIN_N} images.",
                  [_depends_finding(keys, rows)
                   for keys, rows in _series(summary, ("gradient", "gradcam"), FINAL_SCHEDULES)],
                  needs="a cascading or data randomization run of Gradient or Grad-CAM")


def _depends_finding(keys, rows: pd.DataFrame) -> str:
    first, last = rows.iloc[0], rows.iloc[-1]
    return (f"{_where(keys)}: |Spearman| {number(first['mean'])} at {block_label(first['block'])} -> "
            f"{mean_ci(last)}{_paper(keys, last)} at {block_label(last['block'])}: depends on "
            f"{FINAL_SCHEDULES[keys[2]]}: {_verdict(judge(last, DEPENDS_BELOW, BELOW))}")


def _stays_similar(summary: pd.DataFrame) -> Claim:
    return _claim("Guided Backprop and Guided Grad-CAM stay similar until the lowest layers are randomized.",
                  f"confirmed when the 95 % CI of the mean |Spearman| after randomizing the top block alone lies "
                  f"wholly above {STAYS_SIMILAR_FROM}, over at least {MIN_N} images; how far down the mean "
                  f"stays there is shown too.",
                  [_stays_similar_finding(keys, rows)
                   for keys, rows in _series(summary, ("guided_backprop", "guided_gradcam"), ("cascading",))],
                  needs="a cascading run of Guided Backprop or Guided Grad-CAM")


def _stays_similar_finding(keys, rows: pd.DataFrame) -> str:
    randomized = rows[rows["block"] != ORIGINAL]
    top = randomized.iloc[0]
    similar = randomized["mean"].ge(STAYS_SIMILAR_FROM).cummin()  # True while every step so far stays similar
    reach = (f"stays >= {STAYS_SIMILAR_FROM} through {block_label(randomized[similar].iloc[-1]['block'])}"
             if similar.any() else f"below {STAYS_SIMILAR_FROM} from the start")
    return (f"{_where(keys)}: |Spearman| {mean_ci(top)}{_paper(keys, top)} after {block_label(top['block'])} is "
            f"randomized, {reach}, {number(randomized.iloc[-1]['mean'])} when all are: "
            f"{_verdict(judge(top, STAYS_SIMILAR_FROM, ABOVE))}")


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
            judged += [judge(signed[keys], INPUT_DOMINATED_SIGNED, BELOW), judge(signed[keys], -INPUT_DOMINATED_SIGNED, ABOVE)]
        else:
            text += " (signed Spearman not measured)"
        findings.append(f"{text}: {_verdict(*judged)}")
    return _claim("Gradient ⊙ Input and Integrated Gradients stay input-dominated (high |Spearman|, signed "
                  "Spearman near 0).",
                  f"confirmed when, at the last step, the 95 % CI of the mean |Spearman| lies wholly above "
                  f"{INPUT_DOMINATED_ABS} and that of the mean signed Spearman wholly within "
                  f"+-{INPUT_DOMINATED_SIGNED}, over at least {MIN_N} images.",
                  findings, needs="a cascading or data randomization run of Gradient ⊙ Input or IG")
