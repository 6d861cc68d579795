"""Segmentation Grad-CAM figures, as MATLAB's gradCAM segmentation example draws them.

Per image: the image; its predicted segmentation overlaid in the class colour map with a legend of
the classes present; then a grid of classes x feature layers, each Grad-CAM map overlaid on the image
(jet, alpha 0.5). Drawn from a file (`explained.npz`, written by `harness.segmentation_figures`), so
the figures can be rebuilt without TensorFlow, as every report figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.report.figures import save

# What `explained.npz` holds (harness.segmentation_figures writes it).
KEYS = ("images", "predicted", "maps", "classes", "layers", "class_names", "colors", "image_ids")


def read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        missing = [k for k in KEYS if k not in archive]
        if missing:
            from harness.errors import HarnessError

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
    image = _gray(data["images"][i])
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


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, float)
    image = image.mean(axis=-1) if image.ndim == 3 else image
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)
