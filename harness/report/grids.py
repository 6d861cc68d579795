"""The cascade grid (paper Figure 2): rows = methods, columns = the input, the trained model's map, then each
randomized block as the schedule proceeds. Maps come from the runs' `maps.npz` (docs/results-format.md),
post-processed as the metrics see them (harness.metrics.absolute_map / signed_map).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from harness.metrics import absolute_map, signed_map
from harness.report.labels import block_label, method_label, order_methods
from harness.report.load import Run
from harness.results import MAPS, split_maps_key

KINDS = {  # kind -> (post-processing, colormap, value range, colour bar label)
    # Short colour bar labels: a one-method grid has a bar one cell high; the caption says the rest.
    "absolute": (absolute_map, "gray", (0.0, 1.0), "|map|"),
    "signed": (signed_map, "bwr", (-1.0, 1.0), "signed map"),
}
CELL_INCHES = 1.1
LEFT, RIGHT, TOP, BOTTOM = 1.9, 1.2, 0.75, 0.15  # margins in inches: row labels, colour bar, titles
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
    paths = [run.path / MAPS for run in runs if (run.path / MAPS).is_file()]
    if not paths:
        return None
    with np.load(paths[0]) as first:
        steps = [int(s) for s in first["steps"]]
        n = min(max_images if len(steps) <= MAX_STEPS_FOR_SEVERAL_IMAGES else 1, len(first["image_ids"]))
        maps = MapSet(first["images"][:n], [str(i) for i in first["image_ids"][:n]], steps,
                      [str(b) for b in first["blocks"]], {kind: {} for kind in KINDS})
    for path in paths:
        with np.load(path) as archive:
            if [str(i) for i in archive["image_ids"][:n]] != maps.image_ids:
                continue  # other images: not comparable in one grid
            for key in archive.files:
                if (parsed := split_maps_key(key)) is None:
                    continue
                method, step = parsed
                raw = archive[key][:n]  # one key at a time: only n images' 2-D maps stay in memory
                for kind, (post, *_rest) in KINDS.items():
                    maps.maps[kind].setdefault(method, {})[step] = np.stack([post(m) for m in raw]).astype(np.float32)
    return maps if maps.maps["absolute"] else None


def grid_figure(maps: MapSet, image: int, kind: str, title: str) -> Figure:
    """One image's grid, also `harness.Result.plot_maps` (docs/api.md): the cells are one RGB mosaic on a single
    axes (9 x 18 separate axes take seconds to lay out, and look the same)."""
    _, cmap, (vmin, vmax), bar_label = KINDS[kind]
    colour = ScalarMappable(Normalize(vmin, vmax), colormaps[cmap])
    methods, height, width = maps.methods, *maps.images.shape[1:3]
    rows, columns = len(methods), len(maps.steps) + 1
    gap = max(1, height // 14)
    mosaic = np.ones(((height + gap) * rows, (width + gap) * columns, 3), np.float32)

    def place(row: int, column: int, rgb: np.ndarray) -> None:
        top, left = row * (height + gap), column * (width + gap)
        mosaic[top:top + height, left:left + width] = rgb

    image01 = np.clip(np.asarray(maps.images[image], dtype=np.float32), 0.0, 1.0)
    place(0, 0, np.repeat(image01, 3, axis=-1) if image01.shape[-1] == 1 else image01[..., :3])
    for r, method in enumerate(methods):
        for c, step in enumerate(maps.steps, start=1):
            m = maps.maps[kind][method].get(step)
            if m is not None:
                place(r, c, colour.to_rgba(m[image])[..., :3])
    # Sized in inches around the mosaic: labels on the left, titles on top, colour bar right.
    fig_width, fig_height = LEFT + CELL_INCHES * columns + RIGHT, TOP + CELL_INCHES * rows + BOTTOM
    figure = Figure(figsize=(fig_width, fig_height))
    ax = figure.add_axes((LEFT / fig_width, BOTTOM / fig_height, CELL_INCHES * columns / fig_width,
                          CELL_INCHES * rows / fig_height))
    ax.imshow(mosaic[:-gap, :-gap], interpolation="nearest" if height < 100 else "antialiased")
    ax.set_axis_off()
    for c, label in enumerate(["input", *map(block_label, maps.blocks)]):
        ax.text(c * (width + gap) + width / 2, -gap, label, ha="center", va="bottom", fontsize=9)
    for r, method in enumerate(methods):
        ax.text(-2 * gap, r * (height + gap) + height / 2, method_label(method), ha="right", va="center", fontsize=10)
    bar = min(CELL_INCHES * rows, 3.0)
    bottom = BOTTOM + (CELL_INCHES * rows - bar) / 2
    box = ((fig_width - RIGHT + 0.25) / fig_width, bottom / fig_height, 0.15 / fig_width, bar / fig_height)
    figure.colorbar(colour, cax=figure.add_axes(box), label=bar_label)
    # Wrapped to the figure's width (about 9 characters per inch): a grid of two columns is narrower than its title.
    figure.suptitle(textwrap.fill(title, int(9 * fig_width)), y=1 - 0.12 / fig_height, va="top")
    return figure
