"""Score figures: similarity curves (paper Figures 4/20), box plots of independent randomization (Figure 21)
and data randomization bars (Figure 6); drawn on `matplotlib.figure.Figure`, never pyplot (no global state).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report.labels import (CONTROL_LABELS, CONTROL_SCHEDULE, base_model, block_label, method_color,
                                   method_label, metric_label, metric_short, model_label, order_methods,
                                   order_metrics)
from harness.results import atomic_write

DPI = 110
# The page's column (page.py: `main` at most 1200 px wide, 2rem padding each side): a figure is saved
# no wider than the page shows it, so the self-contained HTML carries no pixels the reader never sees.
PAGE_PX = 1136
COLOURS = 256  # the PNG's palette: line plots and colour-mapped maps need no more
CONTROL_STYLES = {"ceiling": "--", "random_model": ":", "random_mask": "-.", "random_logit": (0, (5, 2, 1, 2, 1, 2))}
SCHEDULE_AXIS = {
    "cascading": "randomized down to block (cumulative, from the top)",
    "bottom_up": "randomized up to block (cumulative, from the input)",
    "independent": "randomized block (one at a time)",
}


def save(figure: Figure, path: Path) -> Path:
    """The figure as a palette PNG at most PAGE_PX wide; no "Software" stamp: same data, same bytes."""
    import io

    from PIL import Image

    dpi = min(DPI, PAGE_PX / figure.get_figwidth())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    image = Image.open(buffer).convert("RGB").quantize(COLOURS)
    return atomic_write(path, lambda tmp: image.save(tmp, format="png", optimize=True))


def _panel_grid(count: int, width: float, height: float, columns: int = 2):
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns + 2.2, height * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, axes[:count]


def _y_axis(ax, values: pd.Series) -> None:
    """From 0 (or the lowest value, with a line at 0) to 1; a grid across."""
    low = min(0.0, float(np.nanmin(values)) if values.notna().any() else 0.0)
    ax.set_ylim(low - 0.05, 1.05)
    if low < 0:
        ax.axhline(0, color="0.75", linewidth=0.8, zorder=0)
    ax.grid(axis="y", alpha=0.3)


# -- similarity curves ---------------------------------------------------------------------------------
def similarity_curves(summary: pd.DataFrame, schedule: str, title: str, path: Path) -> Path:
    """The curves figure below, saved as the report's PNG."""
    return save(curves_figure(summary, schedule, title), path)


def curves_figure(summary: pd.DataFrame, schedule: str, title: str) -> Figure:
    """One panel per metric: mean and 95% CI band per method along the schedule; controls dashed.
    Also `harness.Result.plot_curves` (docs/api.md)."""
    steps = summary[summary["schedule"] == schedule]
    controls = summary[summary["schedule"] == CONTROL_SCHEDULE]
    metrics = order_metrics(steps["metric"])
    methods = order_methods(steps["method"])
    figure, axes = _panel_grid(len(metrics), max(4.6, 0.3 * steps["step"].nunique() + 1.0), 3.3)
    for ax, metric in zip(axes, metrics):
        rows, levels = steps[steps["metric"] == metric], controls[controls["metric"] == metric]
        for method in methods:
            line = rows[rows["method"] == method].sort_values("step")
            if line.empty:
                continue
            color = method_color(method)
            ax.plot(line["step"], line["mean"], marker="o", markersize=4, color=color, label=method_label(method))
            ax.fill_between(line["step"], line["ci_low"], line["ci_high"], color=color, alpha=0.15, linewidth=0)
            undefined = line[line["mean"].isna()]
            # Every image's score undefined (constant maps): a cross on the axis, never a value. Only when
            # there is one: an empty unclipped line has an infinite extent and collapses constrained layout.
            if len(undefined):
                ax.plot(undefined["step"], np.zeros(len(undefined)), linestyle="none", marker="x", markersize=8,
                        color=color, clip_on=False, transform=ax.get_xaxis_transform())  # y = the axis line
            for _, control in levels[levels["method"] == method].iterrows():
                ax.axhline(control["mean"], color=color, linewidth=1, alpha=0.8,
                           linestyle=CONTROL_STYLES.get(control["block"], "--"))  # unknown controls: dashed
        ticks = rows[["step", "block"]].drop_duplicates().sort_values("step")
        crowded = len(ticks) > 6  # Inception's 17 blocks: slanted labels, anchored at their tick
        ax.set_xticks(ticks["step"], [block_label(b) for b in ticks["block"]], rotation=45 if crowded else 0,
                      ha="right" if crowded else "center", rotation_mode="anchor")
        _y_axis(ax, pd.concat([rows["ci_low"], rows["mean"], levels["mean"]]))
        ax.set_xlabel(SCHEDULE_AXIS.get(schedule, "step"))
        ax.set_ylabel(metric_short(metric))
        ax.set_title(metric_label(metric))
    handles = [Line2D([], [], color=method_color(m), marker="o", label=method_label(m)) for m in methods]
    handles += [Line2D([], [], color="black", linestyle=CONTROL_STYLES.get(b, "--"), label=label)
                for b, label in CONTROL_LABELS.items() if b in set(controls["block"])]
    if steps["mean"].isna().any():
        handles.append(Line2D([], [], color="black", linestyle="none", marker="x", label="undefined (constant maps)"))
    figure.legend(handles=handles, loc="outside right upper", title="method / control", fontsize=9)
    figure.suptitle(title)
    return figure


# -- independent randomization: box plots -------------------------------------------------------------
def independent_boxes(scores: pd.DataFrame, title: str, path: Path) -> Path:
    """One panel per metric; per block a group of boxes, one per method, over images."""
    rows = scores[(scores["schedule"] == "independent") & (scores["step"] > 0)]
    metrics = order_metrics(rows["metric"])
    methods = order_methods(rows["method"])
    blocks = rows[["step", "block"]].drop_duplicates().sort_values("step")["block"].tolist()
    panel_width = 0.35 * len(blocks) * (len(methods) + 1) + 1.0
    figure, axes = _panel_grid(len(metrics), panel_width, 3.2, columns=2 if panel_width <= 7 else 1)
    width = len(methods) + 1  # one empty slot between block groups
    for ax, metric in zip(axes, metrics):
        panel = rows[rows["metric"] == metric]
        for j, method in enumerate(methods):
            data, positions = [], []
            for g, block in enumerate(blocks):
                values = panel.loc[(panel["method"] == method) & (panel["block"] == block), "value"].dropna()
                if len(values):
                    data.append(values.to_numpy())
                    positions.append(g * width + j)
            if data:
                color = method_color(method)
                ax.boxplot(data, positions=positions, widths=0.7, patch_artist=True, manage_ticks=False,
                           boxprops={"facecolor": color, "alpha": 0.6}, medianprops={"color": "black"},
                           flierprops={"markersize": 3, "markeredgecolor": color})
        ax.set_xticks([g * width + (len(methods) - 1) / 2 for g in range(len(blocks))],
                      [block_label(b) for b in blocks])
        ax.set_xlim(-1, len(blocks) * width - 1)
        _y_axis(ax, panel["value"])
        ax.set_ylabel(metric_short(metric))
        ax.set_title(metric_label(metric))
        ax.set_xlabel(SCHEDULE_AXIS["independent"])
    figure.legend(handles=[Patch(facecolor=method_color(m), alpha=0.6, label=method_label(m)) for m in methods],
                  loc="outside right upper", title="method", fontsize=9)
    figure.suptitle(title)
    return save(figure, path)


# -- data randomization: grouped bars -------------------------------------------------------------------
def data_randomization_bars(summary: pd.DataFrame, title: str, path: Path) -> Path:
    """Per model (rows) and metric (columns): one bar per method, mean with 95% CI error bars."""
    rows = summary[(summary["schedule"] == "data_randomization") & (summary["step"] > 0)]
    rows = rows.assign(base=rows["model"].map(base_model))
    models = sorted(rows["base"].unique())
    metrics = [m for m in ("spearman_abs", "spearman_signed") if m in set(rows["metric"])]
    metrics = metrics or order_metrics(rows["metric"])
    panels = [(model, metric) for model in models for metric in metrics]
    methods = order_methods(rows["method"])
    figure, axes = _panel_grid(len(panels), 0.55 * len(methods) + 1.5, 3.2, columns=len(metrics))
    for ax, (model, metric) in zip(axes, panels):
        panel = rows[(rows["base"] == model) & (rows["metric"] == metric)]
        shown = [m for m in methods if m in set(panel["method"])]
        data = panel.set_index("method").loc[shown]
        errors = np.nan_to_num(np.vstack([data["mean"] - data["ci_low"], data["ci_high"] - data["mean"]]).clip(0))
        x = np.arange(len(shown))
        ax.bar(x, data["mean"].fillna(0), yerr=errors, capsize=3, color=[method_color(m) for m in shown], alpha=0.8)
        for xi, mean, high in zip(x, data["mean"], data["ci_high"]):
            # Above the error bar, where the number does not cross it.
            top = 0.0 if np.isnan(mean) else max(mean, 0.0 if np.isnan(high) else high, 0.0)
            ax.annotate("undefined" if np.isnan(mean) else f"{mean:.2f}", (xi, top), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(x, [method_label(m) for m in shown], rotation=30, ha="right")
        _y_axis(ax, pd.concat([data["ci_low"], data["mean"]]))
        ax.set_title(f"{model_label(model)}: {metric_short(metric)}")
        ax.set_ylabel(metric_short(metric))
    figure.suptitle(title)
    return save(figure, path)
