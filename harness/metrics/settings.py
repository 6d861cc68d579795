"""MetricSettings: which metrics to compute and how (one preset file in conf/metrics/ each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.rules import FLAG, NULL, TEXT, Rule, check, list_of, number, one_of, whole
from harness.errors import HarnessError

#: The metrics (harness.metrics.metrics.METRICS, in this order).
METRIC_NAMES: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog", "spearman_abs_fg", "emprt")
#: Bin rules np.histogram takes by name (emprt_bins may also be a count).
BIN_RULES: tuple[str, ...] = ("auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt")
#: skimage's structural_similarity fixes its Gaussian's truncate at this (since skimage 0.15).
SKIMAGE_SSIM_TRUNCATE = 3.5

#: Correlations usable on the two HOG feature vectors (paper: Pearson, notebook: Spearman).
HOG_CORRELATIONS: tuple[str, ...] = ("pearson", "spearman")
#: Map forms SSIM and HOG can see: the raw map (all channels) or the absolute map, min-max scaled
#: (docs/protocol.md §4.3).
SSIM_HOG_MAPS: tuple[str, ...] = ("raw01", "abs01")

#: What each setting may be (a test checks every field of MetricSettings has a rule).
RULES = {
    "metrics": Rule((TEXT | list_of(TEXT)).test, "a metric name or a list of metric names"),
    "ssim_window": whole(3, odd=True),
    "ssim_gaussian": FLAG,
    "ssim_sigma": number(above=0),
    "ssim_data_range": number(above=0),
    "ssim_sample_covariance": FLAG,
    "ssim_truncate": one_of(SKIMAGE_SSIM_TRUNCATE),
    "ssim_hog_map": one_of(*SSIM_HOG_MAPS),
    "hog_cell_px": NULL | whole(1),
    "hog_orientations": whole(1),
    "hog_cells_per_block": whole(1),
    "hog_correlation": one_of(*HOG_CORRELATIONS),
    "emprt_bins": whole(1) | one_of(*BIN_RULES),
    "preset": TEXT,
}
FLOATS = ("ssim_sigma", "ssim_data_range", "ssim_truncate")  # YAML writes 1.0 as 1


@dataclass(frozen=True)
class MetricSettings:
    """Which metrics to compute and how. Defaults are the paper's preset (``conf/metrics/paper.yaml``)."""

    # Which metrics to compute, in this order; valid names: METRIC_NAMES.
    metrics: tuple[str, ...] = ("spearman_abs", "spearman_signed", "ssim", "hog")
    ssim_window: int = 5  # paper text: skimage SSIM, window 5 (uniform filter)
    ssim_gaussian: bool = False  # notebook: Gaussian weights, sigma 1.5, window 11
    ssim_sigma: float = 1.5
    ssim_data_range: float = 1.0  # always passed explicitly to skimage (maps are min-max [0, 1])
    # skimage's default, both presets: NP / (NP - 1); False: population covariance (Wang et al. 2004).
    ssim_sample_covariance: bool = True
    # Gaussian weights only. Recorded, not chosen: skimage >= 0.15 (the notebook's) fixes 3.5.
    ssim_truncate: float = SKIMAGE_SSIM_TRUNCATE
    # The map SSIM and HOG see (SSIM_HOG_MAPS): raw01 (protocol, paper text "without abs", notebook) or abs01.
    ssim_hog_map: str = "raw01"
    hog_cell_px: int | None = None  # None -> round(16 * size / 299), at least 2 (see hog_geometry)
    hog_orientations: int = 9
    hog_cells_per_block: int = 3  # fewer where the image has fewer cells a side (see hog_geometry)
    hog_correlation: str = "pearson"  # paper: Pearson; notebook: Spearman
    # eMPRT's histogram bins over the map's own range: a count (Hedström et al.: 100) or a bin rule (BIN_RULES).
    emprt_bins: int | str = 100
    preset: str = "paper"  # recorded in outputs

    def __post_init__(self) -> None:
        # a single name (a command-line override) or a list (a config)
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(str(m) for m in self.metrics)
        object.__setattr__(self, "metrics", metrics)
        valid = ", ".join(METRIC_NAMES)
        if not metrics:
            raise HarnessError(f"metrics: at least one metric is needed; valid names: {valid}")
        for name in metrics:
            if name not in METRIC_NAMES:
                raise HarnessError(f"unknown metric {name!r}; valid names: {valid}")
        if len(set(metrics)) != len(metrics):
            raise HarnessError(f"metrics: duplicate names in {list(metrics)}")
        check(asdict(self), RULES, prefix="metrics.")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "MetricSettings":
        """Build from a Hydra/omegaconf node or a plain dict of field names (missing: default; unknown: an error)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key in cfg:  # works for dict and omegaconf DictConfig alike
            if key not in known:
                raise HarnessError(f"unknown metrics setting {key!r}; valid settings: {', '.join(sorted(known))}")
            values[key] = cfg[key]
        values = {k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in values.items()}
        if isinstance(values.get("emprt_bins"), str) and values["emprt_bins"].isdigit():  # a command-line count
            values["emprt_bins"] = int(values["emprt_bins"])
        check(values, RULES, prefix="metrics.")  # before the conversions, which would hide a wrong type
        if values.get("emprt_bins") == 1 and not isinstance(values["emprt_bins"], bool):
            # One bin holds every value: every map's entropy is 0, and eMPRT's q is undefined or 0.
            raise HarnessError("metrics.emprt_bins must be at least 2 (one bin gives every map entropy 0) or one "
                               f"of {', '.join(BIN_RULES)}, got 1")
        for key in FLOATS:
            if key in values:
                values[key] = float(values[key])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict of every setting (for run.json)."""
        record = asdict(self)
        record["metrics"] = list(self.metrics)
        return record
