"""The training-budget study's table, figure and recipe comparison (docs/training-budget.md).

Per snapshot of a step-budget CNN recipe (`mnist_cnn_authors@STEPS`, ...) and method: |Spearman|
between the trained model's map and the map after the logits' randomization [95 % CI], the held-out
accuracy, and the share of pixels near zero in both maps (shared flat regions add tied ranks and raise
a rank correlation whatever the rest of the map does; over the kept maps, `maps_to_keep` in
conf/experiment/training_budget.yaml). `recipe_agreement` judges a cheaper recipe over whole
cascading curves against the authors' recipe's seed-to-seed spread.

    python -m harness.zoo.study results/reproduce/training_budget   # table, figure, recipe comparison
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness import zoo
from harness.results import MAPS, SUMMARY, maps_key, read_table
from harness.zoo import budget

METRIC = "spearman_abs"
NEAR_ZERO = 0.02      # a pixel is near zero below this fraction of its map's 99th-percentile magnitude


def near_zero(maps: np.ndarray, threshold: float = NEAR_ZERO) -> np.ndarray:
    """[N, H, W] booleans: |map| (summed over channels) below `threshold` x its 99th percentile."""
    magnitude = np.abs(maps).sum(axis=-1) if maps.ndim == 4 else np.abs(maps)
    scale = np.percentile(magnitude.reshape(len(magnitude), -1), 99, axis=1).reshape(-1, 1, 1)
    return magnitude < threshold * np.where(scale > 0, scale, np.inf)


def shared_near_zero(reference: np.ndarray, other: np.ndarray, threshold: float = NEAR_ZERO) -> np.ndarray:
    """Per image, the fraction of pixels near zero in both maps."""
    both = near_zero(reference, threshold) & near_zero(other, threshold)
    return both.reshape(len(both), -1).mean(axis=1)


def _recipe_and_steps(model: str) -> tuple[str, int | None]:
    """`mnist_cnn_authors@5000` -> ("mnist_cnn_authors", 5000); a name without `@` -> (name, None)."""
    match = re.fullmatch(r"(.+)@(\d+)", model)
    return (match.group(1), int(match.group(2))) if match else (model, None)


def budget_table(folder: Path, step: int = 1, threshold: float = NEAR_ZERO) -> pd.DataFrame:
    """One row per (snapshot, method): training steps, |Spearman| mean and CI after cascading step
    `step` (1: logits), the shared-near-zero fraction there and of the trained map alone, accuracy."""
    rows = []
    for run in sorted(Path(folder).glob("runs/*/run.json")):
        record = json.loads(run.read_text())
        summary = read_table(run.parent / SUMMARY)
        picked = summary[(summary["schedule"] == "cascading") & (summary["step"] == step)
                         & (summary["metric"] == METRIC)]
        maps = np.load(run.parent / MAPS) if (run.parent / MAPS).is_file() else None
        accuracy = _held_out_accuracy(record)
        for _, row in picked.iterrows():
            model = str(row["model"])
            recipe, steps = _recipe_and_steps(model)
            entry = {"model": model, "recipe": recipe, "steps": steps, "method": row["variant"], "block": row["block"],
                     "spearman_abs": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                     "n": row["n"], "held_out_accuracy": accuracy}
            keys = maps_key(row["variant"], 0), maps_key(row["variant"], step)
            if maps is not None and set(keys) <= set(maps.files):
                reference, other = maps[keys[0]], maps[keys[1]]
                entry |= {"shared_near_zero": float(shared_near_zero(reference, other, threshold).mean()),
                          "trained_near_zero": float(near_zero(reference, threshold).mean()),
                          "n_maps": int(len(reference))}
            rows.append(entry)
    if not rows:
        return pd.DataFrame()
    # Recipes and methods in the order the experiment lists them, steps ascending.
    table = pd.DataFrame(rows)
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(table[c]))} for c in ("recipe", "method")}
    return table.sort_values(["recipe", "method", "steps"], ignore_index=True,
                             key=lambda c: c.map(order[c.name]) if c.name in order else c)


def _held_out_accuracy(record: dict) -> float | None:
    """The built-in model's held-out accuracy, from its harness.json (found through the zoo's cache)."""
    name = (record.get("config") or {}).get("model", {}).get("source", "")
    if not str(name).startswith("builtin:"):
        return None
    try:
        base, recipe, steps = budget.parse_name(zoo.canonical(name.split(":", 1)[1]), zoo.RECIPES)
    except Exception:  # noqa: BLE001 - not a step-budget model: no accuracy column
        return None
    meta = budget.snapshot_path(base, recipe, steps) / "harness.json"
    return json.loads(meta.read_text())["metrics"]["test_accuracy"] if meta.is_file() else None


def budget_markdown(table: pd.DataFrame) -> str:
    """Recipe and steps down, methods across: |Spearman| after the logits step [95 % CI] (shared near-zero)."""
    if table.empty:
        return "_no training-budget runs_"
    methods = list(dict.fromkeys(table["method"]))
    lines = ["| recipe | steps | held-out acc. | " + " | ".join(methods) + " |", "|---" * (len(methods) + 3) + "|"]
    for (recipe, steps), group in table.groupby(["recipe", "steps"], sort=False):
        cells = [_cell(group[group["method"] == method]) for method in methods]
        accuracy = group["held_out_accuracy"].iloc[0]
        acc = f"{accuracy:.1%}" if pd.notna(accuracy) else ""
        lines.append(f"| {recipe} | {steps:,} | {acc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    r = rows.iloc[0]
    shared = f" ({r['shared_near_zero']:.0%})" if pd.notna(r.get("shared_near_zero")) else ""
    return f"{r['spearman_abs']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]{shared}"


def budget_figure(table: pd.DataFrame, path: Path) -> Path:
    """|Spearman| after the logits step vs training steps (log scale), with 95 % CIs: one colour per
    method, one line style and marker per recipe (a recipe with one snapshot is a lone marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(table["method"]))}
    styles = dict(zip(dict.fromkeys(table["recipe"]), (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")) * 4))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (recipe, method), group in table.groupby(["recipe", "method"], sort=False):
        group = group.sort_values("steps")
        line, marker = styles[recipe]
        ax.errorbar(group["steps"], group["spearman_abs"],
                    yerr=[group["spearman_abs"] - group["ci_low"], group["ci_high"] - group["spearman_abs"]],
                    marker=marker, capsize=3, color=colours[method], linestyle=line)
    # One legend entry per method and per recipe, not per pair: the pairs are read off colour x style.
    handles = [Line2D([], [], color=c, marker="o", label=m) for m, c in colours.items()]
    handles += [Line2D([], [], color="black", linestyle=line, marker=marker, label=r)
                for r, (line, marker) in styles.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set(xscale="log", xlabel="training steps", ylabel="|Spearman| after randomizing the logits", ylim=(0, 1))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- choosing a cheaper recipe -------------------------------------------------------------------------
def cascade_curves(folder: Path) -> pd.DataFrame:
    """Every snapshot's whole cascading curve: one row per (model, method, step) with |Spearman|'s
    mean and CI, the randomized block and the recipe/steps the model name encodes."""
    frames = []
    for summary_path in sorted(Path(folder).glob(f"runs/*/{SUMMARY}")):
        summary = read_table(summary_path)
        frames.append(summary[(summary["schedule"] == "cascading") & (summary["metric"] == METRIC)
                              & (summary["step"] > 0)])
    if not frames:
        return pd.DataFrame()
    curves = pd.concat(frames, ignore_index=True)
    parsed = curves["model"].map(_recipe_and_steps)
    return curves.assign(recipe=parsed.str[0], steps=parsed.str[1], method=curves["variant"])[
        ["model", "recipe", "steps", "method", "step", "block", "mean", "ci_low", "ci_high", "n"]]


def recipe_agreement(curves: pd.DataFrame, reference: str, replicate: str, candidates: list[str]) -> pd.DataFrame:
    """How far each candidate model's cascading curves are from the reference model's, against the
    run-to-run spread: the same recipe trained from another seed (`replicate`).

    Per method: `spread` = the largest |replicate - reference| over the cascade's steps; `distance`
    = the largest |candidate - reference|; `within` = distance <= spread. One row per (candidate,
    method), plus the replicate itself (distance = spread) for reference.
    """
    def curve(model: str) -> pd.DataFrame:
        picked = curves[curves["model"] == model].set_index(["method", "step"])["mean"]
        if picked.empty:
            raise ValueError(f"no cascading runs of {model!r}; models with runs: {sorted(set(curves['model']))}")
        return picked

    base = curve(reference)
    spread = (curve(replicate) - base).abs().groupby("method").max()
    rows = []
    for candidate in [replicate, *candidates]:
        distance = (curve(candidate) - base).abs().groupby("method").max()
        for method in base.index.get_level_values("method").unique():
            rows.append({"candidate": candidate, "method": method, "distance": distance.get(method, np.nan),
                         "spread": spread.get(method, np.nan),
                         "within": bool(distance.get(method, np.inf) <= spread.get(method, -np.inf))})
    return pd.DataFrame(rows)


# The study's reference: the authors' recipe at its full budget, and the same from a second seed.
REFERENCE, REPLICATE = "mnist_cnn_authors@55000", "mnist_cnn_authors_seed1@55000"


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.zoo.study", description=(
        "Print the training-budget table and each candidate recipe's distance to the authors' recipe "
        "(whole cascading curves, against the seed-to-seed spread); write the figure."))
    parser.add_argument("folder", type=Path, help="the experiment's folder, e.g. results/reproduce/training_budget")
    parser.add_argument("--figure", type=Path, help="where to write the figure (default: FOLDER/budget.png)")
    parser.add_argument("--candidates", nargs="*", default=None,
                        help=f"models to compare with {REFERENCE} (default: every other model in FOLDER)")
    args = parser.parse_args(argv)
    table = budget_table(args.folder)
    print(budget_markdown(table))
    if table.empty:
        return
    print(f"figure: {budget_figure(table, args.figure or args.folder / 'budget.png')}")
    curves = cascade_curves(args.folder)
    models = set(curves["model"])
    if not {REFERENCE, REPLICATE} <= models:
        print(f"(no comparison: needs runs of {REFERENCE} and {REPLICATE})")
        return
    candidates = args.candidates if args.candidates is not None else sorted(models - {REFERENCE, REPLICATE})
    agreement = recipe_agreement(curves, REFERENCE, REPLICATE, candidates)
    print(agreement.pivot(index="candidate", columns="method", values="distance").round(3).to_string())
    print("spread (seed 0 vs seed 1, largest gap over the cascade):",
          agreement.groupby("method", sort=False)["spread"].first().round(3).to_dict())
    within = agreement.groupby("candidate")["within"].all()
    print("within the spread for every method:", within.to_dict())


if __name__ == "__main__":
    main()
