"""Which figures an experiment gets (`score_figures`: curves, boxes or bars; `map_figures`: map grids of a few
example images), their files (`figures/<experiment>-<model>-<schedule>-<kind>.png`) and their captions.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.report import figures as plots
from harness.report import grids
from harness.report.figures import save
from harness.report.labels import CONTROL_SCHEDULE, model_label
from harness.report.load import Experiment, Run
from harness.report.page import Image

FIGURES = "figures"
CURVE_SCHEDULES = ("cascading", "bottom_up")
SCHEDULE_WORDS = {
    "cascading": "cascading randomization (top block first, then each next block down, accumulating)",
    "bottom_up": "bottom-up cascading randomization (from the input upward, accumulating)",
    "independent": "independent randomization (one block at a time, the others trained)",
    "data_randomization": "data randomization (model trained on true labels vs on random labels)",
}


def map_figures(experiment: Experiment, out: Path) -> list[Image]:
    """The saliency maps of a few example images, per model and schedule."""
    groups: dict[tuple[str, str], list[Run]] = {}  # an experiment may split its methods over runs: one grid
    for run in experiment.runs:
        schedules = [s for s in dict.fromkeys(run.summary["schedule"]) if s != CONTROL_SCHEDULE]
        if schedules:  # control-only runs (calibration) have no cascade to draw
            groups.setdefault((run.model, schedules[0]), []).append(run)
    images = []
    for (model, schedule), runs in groups.items():
        maps = grids.load_maps(runs, max_images=3 if schedule in CURVE_SCHEDULES else 1)
        for i, image_id in enumerate(maps.image_ids if maps else []):
            for kind in grids.KINDS:
                title = f"{model_label(model)}, {schedule}: {kind} maps, image {image_id}"
                path = figure_path(out, experiment.name, model, schedule, "maps", kind, str(i))
                save(grids.grid_figure(maps, i, kind, title), path)
                images.append(as_image(path, out, title, _grid_caption(model, schedule, kind, image_id)))
    return images


def score_figures(experiment: Experiment, out: Path) -> list[Image]:
    """The experiment's main figures: similarity curves, box plots or bars of the scores."""
    name, summary, scores = experiment.name, experiment.summary, experiment.scores
    images = []
    for model in dict.fromkeys(summary["model"]):
        rows = summary[summary["model"] == model]
        for schedule in (s for s in dict.fromkeys(rows["schedule"]) if s in CURVE_SCHEDULES):
            title = f"{model_label(model)}: {schedule} randomization ({name})"
            path = plots.similarity_curves(rows, schedule, title, figure_path(out, name, model, schedule, "curves"))
            images.append(as_image(path, out, title, _curves_caption(model, schedule, rows)))
        if "independent" in set(rows["schedule"]):
            title = f"{model_label(model)}: independent randomization ({name})"
            path = plots.independent_boxes(scores[scores["model"] == model], title,
                                          figure_path(out, name, model, "independent", "boxes"))
            images.append(as_image(path, out, title, _boxes_caption(model)))
    if "data_randomization" in set(summary["schedule"]):
        title = f"Data randomization: true-label vs random-label model ({name})"
        path = figure_path(out, name, "all", "data_randomization", "bars")
        plots.data_randomization_bars(summary, title, path)
        images.append(as_image(path, out, title, _bars_caption()))
    return images


def figure_path(out: Path, *parts: str) -> Path:
    """`out/figures/<parts joined by '-'>.png`, with characters outside [A-Za-z0-9_.] replaced."""
    name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)
    return out / FIGURES / f"{name}.png"


def as_image(path: Path, out: Path, title: str, caption: str) -> Image:
    return Image(path.relative_to(out).as_posix(), title, caption)


# -- captions: what a reader needs to read the figure without the code -----------------------------------
def _grid_caption(model: str, schedule: str, kind: str, image_id: str) -> str:
    shading = ("Grayscale: the sum of |value| over channels, scaled to [0, 1] per map; 3-channel maps are "
               "clipped at their 99th percentile first." if kind == "absolute" else
               "Diverging colours, blue negative and red positive: the signed sum over channels, scaled to "
               "[-1, 1] per map.")
    after = ("the random-label model's map" if schedule == "data_randomization" else
             "the map after each step, left to right")
    return (f"{model_label(model)}, {SCHEDULE_WORDS.get(schedule, schedule)}: {kind} saliency maps of image "
            f"{image_id}. Rows: methods. Columns: the input, the trained model's map (original), then {after}. "
            f"{shading}")


def _curves_caption(model: str, schedule: str, rows: pd.DataFrame) -> str:
    n = int((rows["n"] + rows["n_degenerate"]).max())
    text = (f"{model_label(model)}, {SCHEDULE_WORDS.get(schedule, schedule)}: similarity between each method's "
            f"map on the trained model and its map after each step; mean over up to {n} images with a 95% "
            f"bootstrap band, one panel per metric.")
    if (rows["schedule"] == CONTROL_SCHEDULE).any():
        text += (" Horizontal lines in a method's colour are its control levels (dashed: ceiling from a second "
                 "noise draw; dotted: fully random model; dash-dot: random mask).")
    if rows["mean"].isna().any():
        text += " A cross on the axis marks a step where every image's score is undefined (constant maps)."
    return text


def _boxes_caption(model: str) -> str:
    return (f"{model_label(model)}, {SCHEDULE_WORDS['independent']}: distribution over images of the similarity "
            "between the trained model's map and the map when only the named block is re-initialized; one box "
            "per method (median line, box = quartiles, whiskers = 1.5 IQR).")


def _bars_caption() -> str:
    return (f"{SCHEDULE_WORDS['data_randomization'].capitalize()}: similarity between the maps of the two models "
            "on the same test images, absolute (|Spearman|) and signed; bars = mean over images, error bars = "
            "95% bootstrap CI.")
