"""build_report(folder): read every experiment, write the merged summary, figures and the page.

Outputs, all written atomically and rebuilt from the result files alone (same files -> same bytes):
`summary.csv` (the runs' summaries with a first column `experiment`), `figures/*.png`, `report.md`
and `report.html`. They go into `folder`, or into `folder/report/` when `folder` is itself a run
folder, so the runner's own `summary.csv` is never overwritten.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.report import figures as score_figures
from harness.report import grids
from harness.report.labels import CONTROL_SCHEDULE, model_label
from harness.report.load import RUN_RECORD, Experiment, Run, load_folder
from harness.report.page import Image, Paragraph, Heading, to_html, to_markdown
from harness.report.sections import (TITLE, claims_section, paper_section, results_section, skipped_section,
                                     what_ran_section)
from harness.report.tables import merged_summary
from harness.results import atomic_write, write_csv

FIGURES = "figures"
CURVE_SCHEDULES = ("cascading", "bottom_up")
SCHEDULE_WORDS = {
    "cascading": "cascading randomization (top block first, then each next block down, accumulating)",
    "bottom_up": "bottom-up cascading randomization (from the input upward, accumulating)",
    "independent": "independent randomization (one block at a time, the others trained)",
    "data_randomization": "data randomization (model trained on true labels vs on random labels)",
}


def build_report(folder: Path) -> Path:
    """Build the report for a results folder; returns the path of `report.html`."""
    folder = Path(folder)
    experiments = load_folder(folder)
    out = folder / "report" if (folder / RUN_RECORD).is_file() else folder
    summary = merged_summary(experiments)
    write_csv(out / "summary.csv", summary)
    figures = {e.name: experiment_figures(e, out) for e in experiments if e.runs}
    _remove_stale(out / FIGURES, {out / image.path for images in figures.values() for image in images})
    blocks = [Heading(1, TITLE), Paragraph(_intro(experiments)), *skipped_section(experiments),
              *what_ran_section(experiments), *claims_section(summary), *paper_section(summary),
              *results_section(experiments, summary, figures)]
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(to_markdown(blocks), encoding="utf-8"))
    page = to_html(blocks, out, TITLE)
    return atomic_write(out / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


def _intro(experiments: list[Experiment]) -> str:
    ran = [f"`{e.name}`" for e in experiments if e.runs]
    skipped = [f"`{e.name}`" for e in experiments if e.skipped is not None]
    text = (f"Built from the result files of this folder: {len(ran)} experiment(s) with results "
            f"({', '.join(ran) or 'none'})")
    text += f", {len(skipped)} skipped ({', '.join(skipped)})." if skipped else "."
    return text + (" Every number below is recomputable from `summary.csv` (merged over experiments) and "
                   "each run folder's `scores.csv`.")


# -- figures of one experiment -------------------------------------------------------------------------
def experiment_figures(experiment: Experiment, out: Path) -> list[Image]:
    images: list[Image] = []
    for (model, schedule), runs in _run_groups(experiment.runs).items():
        images += _map_grids(experiment, model, schedule, runs, out)
    summary, scores = experiment.summary, experiment.scores
    for model in dict.fromkeys(summary["model"]):
        rows = summary[summary["model"] == model]
        for schedule in (s for s in dict.fromkeys(rows["schedule"]) if s in CURVE_SCHEDULES):
            path = _figure_path(out, experiment.name, model, schedule, "curves")
            score_figures.similarity_curves(rows, schedule, f"{model_label(model)}: {schedule} randomization "
                                            f"({experiment.name})", path)
            images.append(Image(_relative(path, out), _curves_caption(model, schedule, rows)))
        if "independent" in set(rows["schedule"]):
            path = _figure_path(out, experiment.name, model, "independent", "boxes")
            score_figures.independent_boxes(scores[scores["model"] == model], f"{model_label(model)}: independent "
                                            f"randomization ({experiment.name})", path)
            images.append(Image(_relative(path, out), _boxes_caption(model)))
    if "data_randomization" in set(summary["schedule"]):
        path = _figure_path(out, experiment.name, "all", "data_randomization", "bars")
        score_figures.data_randomization_bars(summary, f"Data randomization ({experiment.name})", path)
        images.append(Image(_relative(path, out), _bars_caption()))
    return images


def _run_groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs of one model and schedule share a grid (an experiment may split its methods over runs)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        schedules = [s for s in dict.fromkeys(run.summary["schedule"]) if s != CONTROL_SCHEDULE]
        if schedules:  # control-only runs (calibration) have no cascade to draw
            groups.setdefault((run.model, schedules[0]), []).append(run)
    return groups


def _map_grids(experiment: Experiment, model: str, schedule: str, runs: list[Run], out: Path) -> list[Image]:
    maps = grids.load_maps(runs, max_images=3 if schedule in CURVE_SCHEDULES else 1)
    if maps is None:
        return []
    images = []
    for i, image_id in enumerate(maps.image_ids):
        for kind in grids.KINDS:
            path = _figure_path(out, experiment.name, model, schedule, "maps", kind, str(i))
            grids.cascade_grid(maps, i, kind, f"{model_label(model)}, {schedule}: {kind} maps, image {image_id}", path)
            images.append(Image(_relative(path, out), _grid_caption(model, schedule, kind, image_id)))
    return images


def _figure_path(out: Path, *parts: str) -> Path:
    name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)
    return out / FIGURES / f"{name}.png"


def _relative(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _remove_stale(folder: Path, written: set[Path]) -> None:
    """The figures folder is the report's own: drop PNGs an earlier build wrote for data now gone."""
    for path in folder.glob("*.png"):
        if path not in written:
            path.unlink()


# -- captions: what a reader needs to read the figure without the code ------------------------------------------
def _grid_caption(model: str, schedule: str, kind: str, image_id: str) -> str:
    shading = ("grayscale, sum of |value| over channels, scaled to [0, 1] per map (3-channel maps clipped at "
               "the 99th percentile)" if kind == "absolute" else
               "diverging colours, blue negative, red positive, signed sum over channels scaled to [-1, 1] per map")
    after = ("the random-label model's map" if schedule == "data_randomization" else
             "the map after each step, left to right")
    return (f"{model_label(model)}, {SCHEDULE_WORDS.get(schedule, schedule)}: {kind} saliency maps of image "
            f"{image_id} ({shading}). Rows: methods. Columns: the input, the trained model's map (original), then "
            f"{after}.")


def _curves_caption(model: str, schedule: str, rows) -> str:
    n = int((rows["n"] + rows["n_degenerate"]).max())
    controls = (" Horizontal lines in a method's colour are its control levels (dashed: ceiling from a second "
                "noise draw; dotted: fully random model; dash-dot: random mask)."
                if (rows["schedule"] == CONTROL_SCHEDULE).any() else "")
    undefined = (" A cross on the axis marks a step where every image's score is undefined (constant maps)."
                 if rows["mean"].isna().any() else "")
    return (f"{model_label(model)}, {SCHEDULE_WORDS.get(schedule, schedule)}: similarity between each method's "
            f"map on the trained model and after each step, mean over up to {n} images with a 95% bootstrap "
            f"band; one panel per metric.{controls}{undefined}")


def _boxes_caption(model: str) -> str:
    return (f"{model_label(model)}, {SCHEDULE_WORDS['independent']}: distribution over images of the similarity "
            "between the trained model's map and the map when only the named block is re-initialized; one box "
            "per method (median line, box = quartiles, whiskers = 1.5 IQR).")


def _bars_caption() -> str:
    return (f"{SCHEDULE_WORDS['data_randomization'].capitalize()}: similarity between the maps of the two models "
            "on the same test images, absolute (|Spearman|) and signed; bars = mean over images, error bars = "
            "95% bootstrap CI.")
