"""Post-processing of saliency maps and similarity scores between two maps (docs/protocol.md §4, Adebayo
et al. 2018): `metrics` (the post-processed forms of a map, one function per metric, the calibration
control's random masks; `hog` the HOG features), `settings` (`MetricSettings`, a preset per file in
conf/metrics/), `scoring` (`compare` / `compare_batch`). NumPy / SciPy / scikit-image only.
"""

from harness.metrics.entropy import histogram_entropy
from harness.metrics.hog import hog_geometry
from harness.metrics.metrics import FORMS, MASK_KINDS, METRICS, Score, absolute_map, minmax01, random_mask, signed_map
from harness.metrics.scoring import PreparedMap, compare, compare_batch, prepare, prepare_stack
from harness.metrics.settings import BIN_RULES, HOG_CORRELATIONS, METRIC_NAMES, SSIM_HOG_MAPS, MetricSettings

__all__ = [
    "BIN_RULES", "FORMS", "HOG_CORRELATIONS", "MASK_KINDS", "METRICS", "METRIC_NAMES", "SSIM_HOG_MAPS",
    "MetricSettings", "PreparedMap", "Score", "absolute_map", "compare", "compare_batch", "hog_geometry",
    "histogram_entropy", "minmax01", "prepare", "prepare_stack", "random_mask", "signed_map",
]
