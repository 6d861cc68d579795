"""Post-processing of saliency maps and similarity scores between two maps (docs/protocol.md §4,
Adebayo et al. 2018, "Sanity Checks for Saliency Maps"). Pure NumPy / SciPy / scikit-image: this
package must not import TensorFlow.

- `forms`: the post-processed forms of a map the metrics compare (absolute, signed, min-max scaled,
  HOG features, ranks); `hog`: the HOG features of a stack of maps.
- `metrics`: the metrics, one function each with one signature (`METRICS`).
- `entropy`: eMPRT (`emprt`), the rise in a map's histogram entropy.
- `settings`: `MetricSettings`, one preset per file in conf/metrics/.
- `scoring`: `compare` / `compare_batch`.
- `masks`: random maps for the calibration control.
"""

from harness.metrics.entropy import histogram_entropy
from harness.metrics.forms import FORMS, absolute_map, minmax01, signed_map
from harness.metrics.hog import hog_geometry
from harness.metrics.masks import MASK_KINDS, random_mask
from harness.metrics.metrics import METRICS, Score
from harness.metrics.scoring import PreparedMap, compare, compare_batch, prepare, prepare_stack
from harness.metrics.settings import BIN_RULES, HOG_CORRELATIONS, METRIC_NAMES, SSIM_HOG_MAPS, MetricSettings

__all__ = [
    "BIN_RULES", "FORMS", "HOG_CORRELATIONS", "MASK_KINDS", "METRICS", "METRIC_NAMES", "SSIM_HOG_MAPS",
    "MetricSettings", "PreparedMap", "Score", "absolute_map", "compare", "compare_batch", "hog_geometry",
    "histogram_entropy", "minmax01", "prepare", "prepare_stack", "random_mask", "signed_map",
]
