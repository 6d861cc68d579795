"""The report's "Repaired sanity checks" section: one table per model, methods down, tests across, from
the `repairs` experiment's runs. A cell: the test's value, mean [95% bootstrap CI] over the images, and
a verdict by the rule stated under the table (in the spirit of Saliency Cards' per-test verdicts).
Absent when that experiment has no runs.

The tests, each read off the summary (docs/protocol.md §6):
- MPRT top-down (`cascading`, logits first) and bottom-up (`bottom_up`, input first), and sMPRT
  (`smprt`, bottom-up, denoised maps): |Spearman| between the original map and the map of the fully
  randomized model (the schedule's last step); passes when the CI lies below `SIMILARITY_LIMIT`.
- eMPRT (Hedström et al. 2024): the metric `emprt` at the last bottom-up step; passes when the CI lies
  above 0 (the map's entropy rises on the random model).
- Random logit (Sixt et al.): SSIM between the maps of the explained class and of a random other
  class (the control `random_logit`); passes when the CI lies below `SIMILARITY_LIMIT`.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.report.labels import method_label, model_label, order_methods
from harness.report.load import Experiment
from harness.report.page import Block, Heading, Paragraph, Table
from harness.report.tables import MISSING, mean_ci
from harness.results import CONTROL_SCHEDULE

EXPERIMENT = "repairs"
SIMILARITY_LIMIT = 0.5


@dataclass(frozen=True)
class Test:
    name: str
    schedule: str          # the schedule whose last step is read; CONTROL_SCHEDULE: the control `block`
    metric: str
    passes_above: float | None = None   # pass when ci_low > this
    passes_below: float | None = None   # pass when ci_high < this
    block: str = ""

    def rule(self) -> str:
        bound = (f"95% CI above {self.passes_above:g}" if self.passes_above is not None
                 else f"95% CI below {self.passes_below:g}")
        where = f"control `{self.block}`" if self.schedule == CONTROL_SCHEDULE else f"last step of `{self.schedule}`"
        return f"{self.name}: `{self.metric}` at the {where}; pass = {bound}"


TESTS = (
    Test("MPRT top-down", "cascading", "spearman_abs", passes_below=SIMILARITY_LIMIT),
    Test("MPRT bottom-up", "bottom_up", "spearman_abs", passes_below=SIMILARITY_LIMIT),
    Test("sMPRT", "smprt", "spearman_abs", passes_below=SIMILARITY_LIMIT),
    Test("eMPRT", "bottom_up", "emprt", passes_above=0.0),
    Test("random logit", CONTROL_SCHEDULE, "ssim", passes_below=SIMILARITY_LIMIT, block="random_logit"),
)


def repairs_section(experiments: list[Experiment]) -> list[Block]:
    """The section's blocks; nothing without runs of the `repairs` experiment."""
    experiment = next((e for e in experiments if e.name == EXPERIMENT and e.runs), None)
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
        frame = verdict_table(summary[summary["model"] == model])
        blocks.append(Table(f"Repaired sanity checks, {model_label(model)}", frame,
                            "; ".join(t.rule() for t in TESTS) + "; n = images per cell"))
    return blocks


def verdict_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One model's summary rows -> methods down, tests across, string cells "value [CI] verdict"."""
    records = []
    for method in order_methods(summary["method"]):
        rows = summary[summary["method"] == method]
        records.append({"method": method_label(method), **{t.name: _cell(rows, t) for t in TESTS}})
    return pd.DataFrame.from_records(records, columns=["method", *(t.name for t in TESTS)])


def _cell(rows: pd.DataFrame, test: Test) -> str:
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
    passed = row["ci_low"] > test.passes_above if test.passes_above is not None else row["ci_high"] < test.passes_below
    return f"{mean_ci(row)} **{'pass' if passed else 'fail'}** (n={int(row['n'])})"
