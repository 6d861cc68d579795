"""The random-label shortcut judged against the authors' random-label recipe (docs/random-labels.md).

Input: result folders of the data randomization experiment run once per donor model (the authors'
recipe from seeds 0 and 1, and the shortcut); each run's donor is read from its run.json
(`model.donor`). Per true-label model, method and metric (|Spearman|, signed) after the random-label
step: the donors' means beside the paper's value, the seeds' spread `|seed 1 - seed 0|`, the image
noise (the larger 95 % CI half-width of the seed-0 and shortcut means) and the shortcut's distance
`|shortcut - seed 0|`; the shortcut is *within* where distance <= max(spread, noise) for both
metrics. `harness.zoo.study.recipe_agreement` takes the spread alone, as the largest gap over a whole
cascade; on this test's one step two seeds can agree by chance to the third decimal (Gradient x
Input's |Spearman|: 0.988 and 0.988), so the spread alone would call a shortcut that matches them
to the image noise "not within".

    python -m harness.zoo.randlabel_study results/dr-authors results/dr-authors-seed1 results/dr-shortcut
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.results import RANDOM_LABELS, SUMMARY, read_table

SCHEDULE = "data_randomization"
METRICS = ("spearman_abs", "spearman_signed")
AUTHORS, REPLICATE, SHORTCUT = "{model}_randlabels_authors", "{model}_randlabels_authors_seed1", "{model}_randlabels"


def donor_cells(folders: list[Path]) -> pd.DataFrame:
    """One row per (model, donor, method, metric) of the random-label step, with the donor's
    recorded steps and accuracies. Runs are found under each folder at any depth (`**/run.json`)."""
    rows = []
    for folder in folders:
        for run in sorted(Path(folder).glob("**/run.json")):
            if not (run.parent / SUMMARY).is_file():
                continue
            donor = (json.loads(run.read_text()).get("model") or {}).get("donor") or {}
            summary = read_table(run.parent / SUMMARY)
            picked = summary[(summary["schedule"] == SCHEDULE) & (summary["block"] == RANDOM_LABELS)
                             & summary["metric"].isin(METRICS)]
            metrics = donor.get("metrics") or {}
            for _, row in picked.iterrows():
                rows.append({"model": row["model"], "donor": donor.get("name", "?"), "steps": metrics.get("steps"),
                             "train_accuracy": metrics.get("train_accuracy"),
                             "test_accuracy": metrics.get("test_accuracy"),
                             "method": row["variant"], "family": row["method"], "metric": row["metric"],
                             "mean": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"], "n": row["n"]})
    return pd.DataFrame(rows)


def compare(cells: pd.DataFrame, model: str, reference: str, replicate: str, candidate: str) -> pd.DataFrame:
    """Per (method, metric): the three donors' means, the paper's value, spread, noise, distance, within.
    A ValueError names a donor that has no runs for `model`."""
    from harness.report.reference import lookup

    ours = cells[cells["model"] == model]
    chosen = {donor: _runs_of(ours, donor) for donor in (reference, replicate, candidate)}
    missing = [donor for donor, runs in chosen.items() if runs.empty]
    if missing:
        with_runs = sorted({_label(d, s) for d, s in zip(ours["donor"], ours["steps"])})
        raise ValueError(f"no data randomization runs of {model} with donor {', '.join(missing)}; donors with runs: "
                         f"{with_runs}")

    def column(donor: str, value: str) -> pd.Series:
        runs = chosen[donor].drop_duplicates(["method", "metric"]).set_index(["method", "metric"])
        return runs["mean"] if value == "mean" else (runs["ci_high"] - runs["ci_low"]) / 2

    families = ours.drop_duplicates("method").set_index("method")["family"]
    table = pd.DataFrame({"seed0": column(reference, "mean"), "seed1": column(replicate, "mean"),
                          "shortcut": column(candidate, "mean")})
    table["spread"] = (table["seed1"] - table["seed0"]).abs()
    table["noise"] = np.maximum(column(reference, "half_width"), column(candidate, "half_width"))
    table["distance"] = (table["shortcut"] - table["seed0"]).abs()
    table["within"] = table["distance"] <= np.maximum(table["spread"], table["noise"])
    references = [lookup(model, SCHEDULE, metric, families[method], RANDOM_LABELS) for method, metric in table.index]
    table["paper"] = ["" if ref is None else ref.text for ref in references]
    order = {m: i for i, m in enumerate(dict.fromkeys(ours["method"]))}
    return table.reset_index().sort_values(["method", "metric"], key=lambda c: c.map(order) if c.name == "method"
                                           else c, ignore_index=True)


def _runs_of(cells: pd.DataFrame, donor: str) -> pd.DataFrame:
    """The cells of `donor`: a model name (`mnist_cnn_randlabels_authors`), or one of its snapshots
    (`mnist_cnn_randlabels_authors@8000`, as `schedule.donor_model=` names it; run.json records the
    name and the steps apart)."""
    name, _, steps = donor.partition("@")
    picked = cells[cells["donor"] == name]
    return picked[picked["steps"] == int(steps)] if steps.isdigit() else picked


def _label(name: str, steps) -> str:
    """A donor as `schedule.donor_model=` names it: NAME@STEPS for a step-budget snapshot."""
    return f"{name}@{int(steps)}" if pd.notna(steps) else name


def verdict(table: pd.DataFrame) -> pd.Series:
    """Per method: the shortcut is within for every metric (NaN counts as not within)."""
    return table.groupby("method", sort=False)["within"].all()


def donors_line(cells: pd.DataFrame, model: str, donors: list[str]) -> str:
    """The donors' steps, training accuracy (on their permuted labels) and held-out accuracy."""
    parts = []
    for donor in donors:
        row = _runs_of(cells[cells["model"] == model], donor).iloc[0]
        parts.append(f"{_label(row['donor'], row['steps'])}: train {_percent(row['train_accuracy'])}, "
                     f"held-out {_percent(row['test_accuracy'])}")
    return "; ".join(parts)


def _percent(value) -> str:
    return "?" if value is None or pd.isna(value) else f"{100 * float(value):.1f} %"


def markdown(table: pd.DataFrame) -> str:
    """Methods down; per metric seed 0, seed 1, shortcut, paper, spread, noise, distance; the verdict."""
    lines = ["| method | metric | authors seed 0 | authors seed 1 | shortcut | paper | spread | noise | distance "
             "| within |", "|---" * 10 + "|"]
    for _, r in table.iterrows():
        cells = [_number(r[c]) for c in ("seed0", "seed1", "shortcut")]
        lines.append(f"| {r['method']} | {r['metric']} | " + " | ".join(cells) + f" | {r['paper'] or '—'} | "
                     + " | ".join(_number(r[c]) for c in ("spread", "noise", "distance"))
                     + f" | {'yes' if r['within'] else '**no**'} |")
    return "\n".join(lines)


def _number(value) -> str:
    return "—" if pd.isna(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.zoo.randlabel_study", description=(
        "Data randomization cells per method with donor = the authors' random-label recipe (seeds 0 "
        "and 1) and the shortcut, side by side with the paper's values; whether the shortcut is within "
        "the seeds' spread (or the image noise, where that is larger)."))
    parser.add_argument("folders", nargs="+", type=Path, help="result folders of the data randomization runs")
    parser.add_argument("--reference", default=AUTHORS, help=f"donor of seed 0 (default {AUTHORS})")
    parser.add_argument("--replicate", default=REPLICATE, help=f"donor of seed 1 (default {REPLICATE})")
    parser.add_argument("--candidate", default=SHORTCUT, help=f"the donor judged (default {SHORTCUT})")
    args = parser.parse_args(argv)
    cells = donor_cells(args.folders)
    if cells.empty:
        folders = ", ".join(map(str, args.folders))
        raise SystemExit(f"randlabel_study: error: no data randomization runs under {folders}")
    for model in dict.fromkeys(cells["model"]):
        donors = [name.format(model=model) for name in (args.reference, args.replicate, args.candidate)]
        print(f"\n## {model}")
        try:
            table = compare(cells, model, *donors)
        except ValueError as error:
            print(f"(no comparison: {error})")
            continue
        print(donors_line(cells, model, donors))
        print(markdown(table))
        within = verdict(table)
        answers = ", ".join(f"{method} {'yes' if ok else 'no'}" for method, ok in within.items())
        print(f"shortcut {donors[2]} within the seeds' spread or the image noise for every metric: {answers}; "
              f"all methods: {'yes' if np.all(within) else 'no'}")


if __name__ == "__main__":
    main()
