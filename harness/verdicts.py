"""verdicts.csv: pass / fail / inconclusive / undefined per model, method and test, from summary rows
(pure pandas; docs/results-format.md, `verdicts.csv`).

Pass or fail only when the whole 95 % CI lies on one side of the threshold and n is at least the
minimum; inconclusive otherwise; undefined when no image has a defined score. The model-free controls
calibrate each test on each model (Adebayo et al. 2018, Figure 1): the random attribution must pass and
the edge detector fail, else the test's verdicts on that model are marked uninformative.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.results import CONTROL_SCHEDULE, RECORD, SUMMARY, SUMMARY_COLUMNS, RunRecord, read_table

#: Fewest images with a defined score for a pass or a fail.
MIN_N = 10

# Thresholds on the mean over images (the report's claims read the same numbers):
DEPENDS_BELOW = 0.5           # |Spearman| at the last step below this: the map depends on what was randomized
STAYS_SIMILAR_FROM = 0.5      # |Spearman| after the top block alone is randomized at least this: insensitive to it
INPUT_DOMINATED_ABS = 0.9     # |Spearman| at the last step at least this ...
INPUT_DOMINATED_SIGNED = 0.2  # ... and |signed Spearman| at most this: the map is dominated by the input
EMPRT_ABOVE = 0.0             # eMPRT's q at the fully randomized step above this: entropy rose

PASS, FAIL, INCONCLUSIVE, UNDEFINED = "pass", "fail", "inconclusive", "undefined"
BELOW, ABOVE = "below", "above"

#: The model-free controls (pseudo-methods) and the verdict each must get for a test to discriminate.
CONTROL_ROLES = {"random_attribution": PASS, "edge_detector": FAIL}
UNINFORMATIVE = "uninformative on this model"

VERDICT_COLUMNS = ["model", "experiment", "method", "variant", "test", "metric", "schedule", "step", "block",
                   "value", "ci_low", "ci_high", "n", "n_degenerate", "threshold", "direction", "rule",
                   "verdict", "reason", "calibration", "floor", "ceiling"]

SIMILARITIES = ("spearman_abs", "spearman_abs_fg")


@dataclass(frozen=True)
class Test:
    """A sanity test: which summary row it reads and how it is judged."""
    name: str
    schedule: str
    metrics: tuple[str, ...]
    threshold: float
    direction: str        # BELOW: passes when the whole CI is below the threshold; ABOVE: above
    block: str | None = None  # a control's block (schedule CONTROL_SCHEDULE); None: the last step
    what: str = "at the last step"
    roles: tuple[str, ...] = tuple(CONTROL_ROLES)  # the model-free controls that calibrate it


TESTS = (
    Test("MPRT cascading", "cascading", SIMILARITIES, DEPENDS_BELOW, BELOW),
    Test("MPRT bottom-up", "bottom_up", SIMILARITIES, DEPENDS_BELOW, BELOW),
    Test("MPRT independent", "independent", SIMILARITIES, DEPENDS_BELOW, BELOW),
    Test("sMPRT", "smprt", SIMILARITIES, DEPENDS_BELOW, BELOW),
    # Random attribution has the highest entropy on every model state, so its q is ~0 whatever the
    # model: it cannot pass eMPRT and says nothing about it; the edge detector still must fail.
    Test("eMPRT", "bottom_up", ("emprt",), EMPRT_ABOVE, ABOVE, roles=("edge_detector",)),
    Test("data randomization", "data_randomization", SIMILARITIES, DEPENDS_BELOW, BELOW),
    Test("random logit", CONTROL_SCHEDULE, SIMILARITIES, DEPENDS_BELOW, BELOW, block="random_logit",
         what="against another class's map"),
    # The paper's input-dominance finding (Gradient x Input, IG): a map that keeps |Spearman| of 0.9
    # or more with every weight randomized is the input's, whatever the model learned. A weaker
    # test than MPRT's 0.5: a map can fail MPRT and still not be dominated by the input.
    Test("input dominance", "cascading", ("spearman_abs",), INPUT_DOMINATED_ABS, BELOW,
         what="at the last cascading step"),
)


def judge(row: Any, threshold: float, direction: str, min_n: int = MIN_N) -> tuple[str, str]:
    """(verdict, reason) of one summary row (mean, ci_low, ci_high, n, n_degenerate) against a threshold."""
    n, mean, low, high = int(row["n"]), float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
    if n == 0 or math.isnan(mean):
        return UNDEFINED, f"no defined score ({int(row['n_degenerate'])} undefined)"
    if n < min_n:
        return INCONCLUSIVE, f"n = {n} images with a defined score, below the minimum {min_n}"
    # Pass strictly beyond the threshold; a CI that ends on it from the other side fails (the edge
    # detector's eMPRT: q = 0 on every image, no rise at all).
    passed = high < threshold if direction == BELOW else low > threshold
    failed = low >= threshold if direction == BELOW else high <= threshold
    ci = f"95 % CI [{low:.3g}, {high:.3g}]"
    if passed:
        return PASS, f"{ci} wholly {direction} {threshold:g}"
    if failed:
        return FAIL, f"{ci} not {direction} {threshold:g}"
    return INCONCLUSIVE, f"{ci} contains the threshold {threshold:g}"


def rule(test: Test, metric: str, min_n: int = MIN_N) -> str:
    return (f"pass when the 95 % CI of the mean {metric} {test.what} lies wholly {test.direction} "
            f"{test.threshold:g}, fail when wholly on the other side, with at least {min_n} images; "
            f"else inconclusive")


def verdict_table(summary: pd.DataFrame, experiment: str | None = None, min_n: int = MIN_N) -> pd.DataFrame:
    """The verdict table of a summary (a run's, or merged with an `experiment` column)."""
    if "experiment" not in summary.columns:
        summary = summary.assign(experiment=experiment or "")
    # A sweep's merged summary leads with its job and swept overrides: every row is judged within its job.
    jobs = [c for c in summary.columns if c not in SUMMARY_COLUMNS and c != "experiment"]
    records = [{**{c: row[c] for c in jobs}, **_record(test, row, min_n)}
               for test in TESTS for row in _rows(summary, test, jobs)]
    table = pd.DataFrame.from_records(records, columns=jobs + VERDICT_COLUMNS)
    return calibrate(_bounds(table, summary, jobs), jobs)


def _rows(summary: pd.DataFrame, test: Test, jobs: list[str]):
    """The summary rows a test reads: per (job, experiment, model, variant, metric), its block or last step."""
    rows = summary[(summary["schedule"] == test.schedule) & summary["metric"].isin(test.metrics)]
    if test.block is not None:
        yield from (row for _, row in rows[rows["block"] == test.block].iterrows())
        return
    rows = rows[rows["step"] > 0]
    for _, group in rows.groupby([*jobs, "experiment", "model", "variant", "metric"], sort=False, dropna=False):
        yield group.loc[group["step"].idxmax()]


def _record(test: Test, row: pd.Series, min_n: int) -> dict:
    verdict, reason = judge(row, test.threshold, test.direction, min_n)
    return {"model": row["model"], "experiment": row["experiment"], "method": row["method"],
            "variant": row["variant"], "test": test.name, "metric": row["metric"], "schedule": row["schedule"],
            "step": int(row["step"]), "block": row["block"], "value": row["mean"], "ci_low": row["ci_low"],
            "ci_high": row["ci_high"], "n": int(row["n"]), "n_degenerate": int(row["n_degenerate"]),
            "threshold": test.threshold, "direction": test.direction, "rule": rule(test, row["metric"], min_n),
            "verdict": verdict, "reason": reason, "calibration": "", "floor": math.nan, "ceiling": math.nan}


def _bounds(table: pd.DataFrame, summary: pd.DataFrame, jobs: list[str]) -> pd.DataFrame:
    """floor / ceiling: the mean of the variant's random_model / ceiling control on the same metric."""
    controls = summary[summary["schedule"] == CONTROL_SCHEDULE]
    keys = [*jobs, "experiment", "model", "variant", "metric"]
    for column, block in (("floor", "random_model"), ("ceiling", "ceiling")):
        means = controls[controls["block"] == block].drop_duplicates(keys).set_index(keys)["mean"]
        if len(table) and len(means):
            table[column] = [means.get(tuple(k), math.nan) for k in table[keys].itertuples(index=False)]
    return table


def calibrate(table: pd.DataFrame, jobs: list[str] = ()) -> pd.DataFrame:
    """Mark each (job, experiment, model, test, metric) whose model-free controls do not play their role
    uninformative, naming the control's numbers."""
    table = table.copy()
    roles = {test.name: test.roles for test in TESTS}
    for keys, group in table.groupby([*jobs, "experiment", "model", "test", "metric"], sort=False, dropna=False):
        name = keys[-2]
        failed = [f"{method} {_value(row)} is {row['verdict']}, not {CONTROL_ROLES[method]}"
                  for method in roles.get(name, CONTROL_ROLES)
                  for _, row in group[group["method"] == method].iterrows() if row["verdict"] != CONTROL_ROLES[method]]
        present = group["method"].isin(list(CONTROL_ROLES))
        if failed:
            table.loc[group.index[~present], "calibration"] = f"{UNINFORMATIVE}: {'; '.join(failed)}"
        elif present.any():
            table.loc[group.index[~present], "calibration"] = "controls hold"
        table.loc[group.index[present], "calibration"] = "control"
    return table


def _value(row) -> str:
    if math.isnan(row["value"]):
        return "undefined"
    ci = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{row['value']:.2f}{ci} (n = {row['n']})"


def experiment_name(config: dict) -> str:
    """The experiment a run's config names (its preset's experiment_name), or ""."""
    return RunRecord(config=dict(config)).experiment_name


def folder_verdicts(path, min_n: int = MIN_N) -> pd.DataFrame:
    """The verdicts of a run, sweep or reproduction folder, or of every run folder below `path`."""
    path = Path(path)
    if (path / SUMMARY).is_file():
        folders = [path]
    else:
        folders = sorted(p.parent for p in path.rglob(SUMMARY) if (p.parent / RECORD).is_file())
    if not folders:
        raise HarnessError(f"no summary.csv in or below {str(path)!r}: give a run, sweep or reproduction folder")
    tables = []
    for folder in folders:
        experiment = RunRecord.read(folder).experiment_name if (folder / RECORD).is_file() else ""
        tables.append(verdict_table(read_table(folder / SUMMARY), experiment, min_n))
    return pd.concat(tables, ignore_index=True)


def matrix(table: pd.DataFrame) -> str:
    """Per model (and experiment): methods x tests, each cell the verdict, value and CI of the test's
    first metric; `*` marks a verdict the controls call uninformative."""
    if not len(table):
        return "no test in this folder has a verdict (no randomization step read)"
    table = table[table["metric"].isin([t.metrics[0] for t in TESTS])]
    tests = [t.name for t in TESTS if t.name in set(table["test"])]
    jobs = [c for c in table.columns if c not in VERDICT_COLUMNS]
    blocks = []
    for keys, rows in table.groupby([*jobs, "model", "experiment"], sort=False, dropna=False):
        *job, model, experiment = keys
        cells = rows.assign(cell=[_cell(r) for _, r in rows.iterrows()])
        grid = cells.pivot_table(index="variant", columns="test", values="cell", aggfunc="first", sort=False)
        grid = grid.reindex(columns=[t for t in tests if t in grid.columns]).fillna("-")
        title = f"{model}" + (f" ({experiment})" if isinstance(experiment, str) and experiment else "")
        title += "".join(f", {c} {v}" for c, v in zip(jobs, job))
        blocks.append(f"{title}\n{grid.to_string()}")
    notes = "* uninformative on this model: a model-free control did not play its role (see verdicts.csv)"
    return "\n\n".join(blocks) + (f"\n\n{notes}" if (table["calibration"].str.startswith(UNINFORMATIVE)).any() else "")


def _cell(row) -> str:
    mark = "*" if str(row["calibration"]).startswith(UNINFORMATIVE) else ""
    return f"{row['verdict']}{mark} {_value(row).split(' (n =')[0]}"


def main(argv: list[str]) -> int:
    """`harness verdicts PATH [--csv] [--min-n N]`."""
    parser = argparse.ArgumentParser(prog="harness verdicts",
                                     description="pass / fail / inconclusive per method and test of a results folder")
    parser.add_argument("path", help="a run folder, a sweep folder or a reproduction folder")
    parser.add_argument("--csv", action="store_true", help="print verdicts.csv instead of the matrix")
    parser.add_argument("--min-n", type=int, default=MIN_N,
                        help=f"fewest images for a pass or a fail (default {MIN_N})")
    args = parser.parse_args(argv)
    try:
        if args.min_n < 1:
            raise HarnessError(f"--min-n must be an integer >= 1, got {args.min_n}")
        table = folder_verdicts(args.path, args.min_n)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(matrix(table))
    return 0
