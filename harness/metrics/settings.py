"""MetricSettings: which metrics to compute and how (one preset file in conf/metrics/ each)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.errors import HarnessError
from harness.metrics.entropy import BIN_RULES
from harness.metrics.metrics import metric_names

#: Correlations usable on the two HOG feature vectors (paper: Pearson, notebook: Spearman).
HOG_CORRELATIONS: tuple[str, ...] = ("pearson", "spearman")
#: Map forms SSIM and HOG can see: `raw01` the raw, signed map (all channels) min-max scaled to
#: [0, 1] (docs/protocol.md §4.3, the notebook's normalize_image); `abs01` the absolute map, min-max scaled.
SSIM_HOG_MAPS: tuple[str, ...] = ("raw01", "abs01")


@dataclass(frozen=True)
class MetricSettings:
    """Which metrics to compute and how. Defaults are the paper's preset (``conf/metrics/paper.yaml``)."""

    # Which metrics to compute, in this order; valid names: the registered metrics (METRIC_NAMES).
    metrics: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog")
    ssim_window: int = 5  # paper text: skimage SSIM, window 5 (uniform filter)
    ssim_gaussian: bool = False  # notebook: Gaussian weights, sigma 1.5, window 11
    ssim_sigma: float = 1.5
    ssim_data_range: float = 1.0  # always passed explicitly to skimage (maps are min-max [0, 1])
    # skimage's default, both presets: NP / (NP - 1) with NP = ssim_window ** 2 (also with Gaussian
    # weights, as skimage does); False: population covariance (Wang et al. 2004).
    ssim_sample_covariance: bool = True
    # Gaussian weights only: filter radius int(truncate * sigma + 0.5). skimage >= 0.15 (the notebook
    # pinned 0.15.0) uses 3.5, an 11-tap filter; skimage 0.14 took scipy's default 4.0 (13 taps).
    ssim_truncate: float = 3.5
    # The map SSIM and HOG see (SSIM_HOG_MAPS): raw01 (protocol, paper text "without abs", notebook)
    # or abs01 (the absolute map, min-max scaled; what this harness used before).
    ssim_hog_map: str = "raw01"
    hog_cell_px: int | None = None  # None -> round(16 * size / 299), at least 2 (see hog_geometry)
    hog_orientations: int = 9
    # Reduced automatically (see hog_geometry) when the image has fewer cells than this per side,
    # e.g. a tiny image with large cells; 28 px MNIST with the scaled 2 px cells keeps 3x3.
    hog_cells_per_block: int = 3
    hog_correlation: str = "pearson"  # paper: Pearson; notebook: Spearman
    # eMPRT (harness.metrics.entropy): the histogram's bins, a count over the map's own range
    # (Hedström et al.: 100) or one of numpy's bin rules by name (BIN_RULES).
    emprt_bins: int | str = 100
    preset: str = "paper"  # recorded in outputs

    def __post_init__(self) -> None:
        # Validate on construction so that both from_config and direct use fail early and clearly.
        metrics = self.metrics
        if isinstance(metrics, str):  # a single name, e.g. from a command-line override
            metrics = (metrics,)
        metrics = tuple(str(m) for m in metrics)
        object.__setattr__(self, "metrics", metrics)
        valid = ", ".join(metric_names())
        if not metrics:
            raise HarnessError(f"metrics: at least one metric is needed; valid names: {valid}")
        for name in metrics:
            if name not in metric_names():
                raise HarnessError(f"unknown metric {name!r}; valid names: {valid}")
        if len(set(metrics)) != len(metrics):
            raise HarnessError(f"metrics: duplicate names in {list(metrics)}")
        if self.hog_correlation not in HOG_CORRELATIONS:
            raise HarnessError(
                f"unknown hog_correlation {self.hog_correlation!r}; valid names: {', '.join(HOG_CORRELATIONS)}"
            )
        if int(self.ssim_window) < 3 or int(self.ssim_window) % 2 == 0:
            raise HarnessError(f"ssim_window must be an odd integer >= 3, got {self.ssim_window!r}")
        if not float(self.ssim_data_range) > 0:
            raise HarnessError(f"ssim_data_range must be > 0, got {self.ssim_data_range!r}")
        if not float(self.ssim_sigma) > 0:
            raise HarnessError(f"ssim_sigma must be > 0, got {self.ssim_sigma!r}")
        if not float(self.ssim_truncate) > 0:
            raise HarnessError(f"ssim_truncate must be > 0, got {self.ssim_truncate!r}")
        if self.ssim_hog_map not in SSIM_HOG_MAPS:
            raise HarnessError(f"unknown ssim_hog_map {self.ssim_hog_map!r}; valid names: {', '.join(SSIM_HOG_MAPS)}")
        if self.hog_cell_px is not None and int(self.hog_cell_px) < 1:
            raise HarnessError(f"hog_cell_px must be >= 1 or null, got {self.hog_cell_px!r}")
        bins = self.emprt_bins
        if not (bins in BIN_RULES or (isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1)):
            raise HarnessError(f"emprt_bins must be an integer >= 1 or one of {', '.join(BIN_RULES)}, got {bins!r}")
        if int(self.hog_orientations) < 1 or int(self.hog_cells_per_block) < 1:
            raise HarnessError("hog_orientations and hog_cells_per_block must be >= 1")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "MetricSettings":
        """Build from a Hydra/omegaconf node or a plain dict (keys = field names; missing -> default).

        Unknown keys are an error too (a typo must not silently fall back to a default).
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key in cfg:  # works for dict and omegaconf DictConfig alike
            if key not in known:
                raise HarnessError(f"unknown metrics setting {key!r}; valid settings: {', '.join(sorted(known))}")
            values[key] = cfg[key]
        # Coerce YAML scalars (e.g. `ssim_data_range: 1`) and ListConfig to the declared types.
        if "metrics" in values and not isinstance(values["metrics"], str):
            values["metrics"] = tuple(values["metrics"])
        for key in ("ssim_window", "hog_orientations", "hog_cells_per_block"):
            if key in values:
                values[key] = int(values[key])
        for key in ("ssim_sigma", "ssim_data_range", "ssim_truncate"):
            if key in values:
                values[key] = float(values[key])
        if values.get("hog_cell_px") is not None:
            values["hog_cell_px"] = int(values["hog_cell_px"])
        if isinstance(values.get("emprt_bins"), str) and values["emprt_bins"].isdigit():  # a command-line count
            values["emprt_bins"] = int(values["emprt_bins"])
        for key in ("ssim_gaussian", "ssim_sample_covariance"):
            if key in values:
                values[key] = bool(values[key])
        for key in ("hog_correlation", "preset", "ssim_hog_map"):
            if key in values:
                values[key] = str(values[key])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict of every setting (for run.json)."""
        record = asdict(self)
        record["metrics"] = list(self.metrics)
        return record
