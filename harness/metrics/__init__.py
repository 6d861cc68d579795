"""Post-processing of saliency maps and similarity scores between two maps.

Implements the post-processing and similarity of docs/protocol.md §4 (Adebayo et al. 2018, "Sanity
Checks for Saliency Maps"). Pure numpy / scipy / scikit-image: this package must not import TensorFlow.

- `forms`: the post-processed forms of a map metrics compare (absolute, signed, min-max raw, HOG
  features, foreground, ranks), each a registered piece; `PreparedMap` computes each once per map.
- `metrics`: the metrics, each a registered piece naming the forms it needs, with a batched compute.
- `settings`: `MetricSettings`, one preset per file in conf/metrics/.
- `scoring`: `compare` / `compare_batch`, which know no metric by name.
- `masks`: random maps for the calibration control.
- `entropy`: eMPRT (`emprt`), the rise in a map's histogram entropy, a metric of its own form.

A new metric is one function in `metrics` (or anywhere imported before use) under `@metric(name,
forms)`; a new form (e.g. a histogram) one function under `@form(name, inputs)`.
"""

from harness.metrics.forms import (
    FORMS,
    IMAGE,
    RAW,
    Form,
    PreparedMap,
    absolute_map,
    form,
    hog_geometry,
    minmax01,
    prepare_stack,
    ranks_of,
    signed_map,
)
from harness.metrics.masks import MASK_KINDS, random_mask
from harness.metrics.metrics import METRICS, FormView, Metric, Score, metric, metric_names
from harness.metrics.entropy import BIN_RULES, histogram_entropy
from harness.metrics.scoring import compare, compare_batch, prepare
from harness.metrics.settings import HOG_CORRELATIONS, SSIM_HOG_MAPS, MetricSettings

#: The built-in metrics, in a stable order (metric_names() adds any registered later).
METRIC_NAMES: tuple[str, ...] = metric_names()

__all__ = [
    "METRIC_NAMES",
    "MASK_KINDS",
    "HOG_CORRELATIONS",
    "MetricSettings",
    "Score",
    "absolute_map",
    "signed_map",
    "minmax01",
    "SSIM_HOG_MAPS",
    "hog_geometry",
    "compare",
    "prepare",
    "PreparedMap",
    "prepare_stack",
    "compare_batch",
    "random_mask",
    "FORMS",
    "RAW",
    "IMAGE",
    "Form",
    "form",
    "ranks_of",
    "METRICS",
    "Metric",
    "FormView",
    "metric",
    "metric_names",
    "BIN_RULES",
    "histogram_entropy",
]
