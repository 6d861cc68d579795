"""Segmentation Grad-CAM figures as MATLAB's gradCAM segmentation example draws them, and the report's
"Segmentation Grad-CAM" section: per image, the image, its predicted segmentation in the class colours, and
a grid of classes x feature layers, each map over the image (jet, alpha 0.5). Drawn from `explained.npz`
(harness.segmentation_figures writes it), so the figures need no TensorFlow (docs/segmentation.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.errors import HarnessError
from harness.report.figures import save
from harness.report.gallery import as_image, figure_path
from harness.report.load import Experiment
from harness.report.page import Block, Heading, Image, Paragraph

EXPLAINED = "segmentation-figures/explained.npz"  # inside an experiment's folder
KEYS = ("images", "predicted", "maps", "classes", "layers", "class_names", "colors", "image_ids")


def read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        missing = [k for k in KEYS if k not in archive]
        if missing:
            raise HarnessError(f"{path} is no segmentation explanation file: it lacks {', '.join(missing)}")
        return {k: archive[k] for k in KEYS}


def figures(path: Path, out: Path) -> list[Path]:
    """One PNG per image of the explanation file `path`, into folder `out`."""
    data = read(path)
    return [save(image_figure(data, i), out / f"segmentation-gradcam-{data['image_ids'][i]}.png")
            for i in range(len(data["images"]))]


def image_figure(data: dict[str, np.ndarray], i: int) -> Figure:
    """Image, overlay, and the classes x layers grid of image `i`."""
    classes, layers = data["classes"][i], [str(name) for name in data["layers"]]
    names, colors = [str(n) for n in data["class_names"]], np.asarray(data["colors"], float)
    image = np.asarray(data["images"][i], float)
    image = image.mean(axis=-1) if image.ndim == 3 else image
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    columns = max(len(layers), 2)
    figure = Figure(figsize=(2.4 * columns, 2.4 * (1 + len(classes))), layout="constrained")
    axes = figure.subplots(1 + len(classes), columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("image", fontsize=9)
    predicted = data["predicted"][i]
    axes[0, 1].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].imshow(colors[predicted], alpha=0.6)
    axes[0, 1].set_title("predicted segmentation", fontsize=9)
    present = [int(c) for c in np.unique(predicted)]
    # The legend in the first row's free panel, else beside the overlay.
    holder, outside = (axes[0, 2], {}) if columns > 2 else (axes[0, 1], {"bbox_to_anchor": (1.02, 1.0)})
    holder.legend(handles=[Patch(color=colors[c], label=names[c]) for c in present], fontsize=7,
                  loc="upper left", frameon=False, **outside)
    for row, c in enumerate(classes, start=1):
        for col, layer in enumerate(layers):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.imshow(data["maps"][i, row - 1, col], cmap="jet", alpha=0.5)
            ax.set_title(f"{names[int(c)]} @ {layer}", fontsize=8)
    return figure


def segmentation_section(experiments: list[Experiment], out: Path) -> tuple[list[Block], list[Image]]:
    """The section's blocks and the figures it wrote; nothing when no experiment has explained images."""
    blocks, images = [], []
    for experiment in (e for e in experiments if (e.path / EXPLAINED).is_file()):
        data = read(experiment.path / EXPLAINED)
        caption = ("Top row: the image; its predicted segmentation in the class colours (legend: the classes "
                   "present). Below, one row per explained class and one column per feature layer "
                   f"({', '.join(str(n) for n in data['layers'])}): the Grad-CAM map of the class's reduced score at "
                   "that layer (weights = spatial mean of its gradients; weighted channel sum; ReLU; upsampled), jet "
                   "at alpha 0.5 over the image, each map on its own colour scale.")
        for i, image_id in enumerate(data["image_ids"]):
            title = f"{experiment.name}: segmentation Grad-CAM, image {image_id}"
            png = save(image_figure(data, i), figure_path(out, experiment.name, "segmentation_gradcam", str(image_id)))
            images.append(as_image(png, out, title, caption))
        metrics = (experiment.runs[0].record.model.get("metrics") or {}) if experiment.runs else {}
        iou = f" (model's held-out mean IoU {metrics['mean_iou']:.3f})" if "mean_iou" in metrics else ""
        blocks += [Paragraph(f"`{experiment.name}`{iou}: {len(data['image_ids'])} images."),
                   *images[-len(data["image_ids"]):]]
    if not blocks:
        return [], []
    intro = Paragraph("Segmentation Grad-CAM (Vinogradova et al. 2020) of the trained model, as MATLAB's gradCAM "
                      "segmentation example shows it: per image its largest predicted classes (other than "
                      "background), each at every feature layer the model config declares.")
    return [Heading(2, "Segmentation Grad-CAM"), intro, *blocks], images
