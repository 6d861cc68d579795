"""The cascade grid (paper Figure 2): rows = methods, columns = the input, the trained model's map,
then each randomized block left to right as the schedule proceeds.

Maps come from the runs' `maps.npz` (keys `images`, `image_ids`, `steps`, `blocks` and
`"{method}/{step:03d}"` -> raw maps [k, H, W, C]) and are post-processed exactly as the metrics see
them (harness.similarity.absolute_map / signed_map), so the picture matches the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from harness.report.figures import save
from harness.report.labels import block_label, method_label, order_methods
from harness.report.load import Run
from harness.similarity import absolute_map, signed_map

KINDS = {  # kind -> (post-processing, colormap, value range, colour bar label)
    "absolute": (absolute_map, "gray", (0.0, 1.0), "|map| summed over channels, scaled to [0, 1]"),
    "signed": (signed_map, "bwr", (-1.0, 1.0), "signed map, scaled to [-1, 1]"),
}
CELL_INCHES = 1.15
MAX_STEPS_FOR_SEVERAL_IMAGES = 8  # beyond this (Inception's 17 blocks) one image keeps memory and size sane


@dataclass
class MapSet:
    """Post-processed maps of a few example images, merged over the runs of one model and schedule."""
    images: np.ndarray
    image_ids: list[str]
    steps: list[int]
    blocks: list[str]
    maps: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)  # kind -> method -> step -> [n,H,W]

    @property
    def methods(self) -> list[str]:
        return order_methods(self.maps["absolute"])


def load_maps(runs: list[Run], max_images: int = 3) -> MapSet | None:
    """Example maps of the runs that share the first run's images (runs may each hold some methods)."""
    runs = [run for run in runs if run.maps_path.is_file()]
    if not runs:
        return None
    with np.load(runs[0].maps_path) as first:
        steps = [int(s) for s in first["steps"]]
        n = min(max_images if len(steps) <= MAX_STEPS_FOR_SEVERAL_IMAGES else 1, len(first["image_ids"]))
        maps = MapSet(first["images"][:n], [str(i) for i in first["image_ids"][:n]], steps,
                      [str(b) for b in first["blocks"]], {kind: {} for kind in KINDS})
    for run in runs:
        _add_run(maps, run.maps_path)
    return maps if maps.maps["absolute"] else None


def _add_run(maps: MapSet, path: Path) -> None:
    n = len(maps.image_ids)
    with np.load(path) as archive:
        if [str(i) for i in archive["image_ids"][:n]] != maps.image_ids:
            return  # other images: not comparable in one grid
        for key in archive.files:
            method, _, step = key.partition("/")
            if not step.isdigit():
                continue
            raw = archive[key][:n]  # one key at a time: only n images' 2-D maps stay in memory
            for kind, (post, *_rest) in KINDS.items():
                maps.maps[kind].setdefault(method, {})[int(step)] = np.stack([post(m) for m in raw]).astype(np.float32)


def cascade_grid(maps: MapSet, image: int, kind: str, title: str, path: Path) -> Path:
    """One image: rows = methods, columns = input, original, each randomized block."""
    _, cmap, (vmin, vmax), bar_label = KINDS[kind]
    methods, columns = maps.methods, len(maps.steps) + 1
    figure = Figure(figsize=(CELL_INCHES * columns + 2.6, CELL_INCHES * len(methods) + 1.0), layout="constrained")
    axes = figure.subplots(len(methods), columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    _input_cell(axes[0, 0], maps.images[image])
    shown = None
    for r, method in enumerate(methods):
        axes[r, 0].set_ylabel(method_label(method), rotation=0, ha="right", va="center", fontsize=10)
        for c, step in enumerate(maps.steps, start=1):
            m = maps.maps[kind][method].get(step)
            if m is not None:
                shown = axes[r, c].imshow(m[image], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for c, block in enumerate(maps.blocks, start=1):
        axes[0, c].set_title(block_label(block), fontsize=10)
    if shown is not None:
        figure.colorbar(shown, ax=axes[:, 1:], shrink=min(0.8, 3.0 / len(methods) + 0.3), label=bar_label)
    figure.suptitle(title)
    return save(figure, path)


def _input_cell(ax, image: np.ndarray) -> None:
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image)
    ax.set_title("input", fontsize=10)
