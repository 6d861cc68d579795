"""Display names (the paper's: "Guided Backprop", not `guided_backprop`), orders and colours, one place for
every table and figure of the report."""
from __future__ import annotations

import re
from collections.abc import Iterable

from harness.results import CONTROL_SCHEDULE, ORIGINAL, RANDOM_LABELS  # noqa: F401 - the report's vocabulary

# In the paper's order (Figure 2, then the appendix's VarGrad), then the later methods and the
# pseudo-methods; unknown methods follow alphabetically.
METHOD_LABELS = {
    "gradient": "Gradient", "smoothgrad": "SmoothGrad", "guided_backprop": "Guided Backprop", "gradcam": "Grad-CAM",
    "guided_gradcam": "Guided Grad-CAM", "integrated_gradients": "Integrated Gradients",
    "gradient_x_input": "Gradient ⊙ Input", "ig_smoothgrad": "IG-SmoothGrad", "vargrad": "VarGrad",
    "guided_ig": "Guided IG", "blur_ig": "Blur IG", "xrai": "XRAI", "occlusion": "Occlusion", "cam": "CAM",
    # Pseudo-methods that use no model: where a method stands next to "no model at all".
    "edge_detector": "Edge detector (Sobel)", "random_attribution": "Random attribution",
}
METRIC_LABELS = {"spearman_abs": "Spearman rank correlation (absolute)",
                 "spearman_signed": "Spearman rank correlation (signed)", "ssim": "SSIM", "hog": "HOG similarity",
                 "spearman_abs_fg": "Spearman (absolute, foreground only)",
                 "emprt": "eMPRT (relative rise in the map's entropy)"}
METRIC_SHORT = {"spearman_abs": "|Spearman|", "spearman_signed": "signed Spearman", "ssim": "SSIM",
                "hog": "HOG", "spearman_abs_fg": "|Spearman| foreground", "emprt": "eMPRT"}
MODEL_LABELS = {"mnist_cnn": "MNIST CNN", "mnist_mlp": "MNIST MLP",
                "mnist_cnn_randlabels": "MNIST CNN (random labels)",
                "mnist_mlp_randlabels": "MNIST MLP (random labels)", "inception_v3": "Inception v3"}

# Control rows: a method's reference levels, drawn next to its curve (see tables.SUMMARY_COLUMNS).
CONTROL_LABELS = {"ceiling": "ceiling (second noise draw)", "random_model": "fully random model",
                  "random_mask": "random mask", "random_logit": "map of a random other class"}
BLOCK_LABELS = {ORIGINAL: "original", RANDOM_LABELS: "random labels"}

# The paper's experiments, in the order the report presents them.
EXPERIMENT_ORDER = ("cascading_cnn", "cascading_mlp", "independent_cnn", "data_randomization", "calibration",
                    "inception_cascading")

# tab10 minus grey, fixed per method so a method keeps its colour from figure to figure.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def metric_short(metric: str) -> str:
    return METRIC_SHORT.get(metric, metric)


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def block_label(block: str) -> str:
    return BLOCK_LABELS.get(block, block)


def base_model(model: str) -> str:
    """The paper's model a built-in model stands for (`mnist_cnn_randlabels`, `mnist_cnn_authors_seed1` ->
    `mnist_cnn`); a snapshot on the way (`mnist_cnn_authors@5000`) stands for none."""
    return re.sub(r"_authors(_seed\d+)?$", "", model.removesuffix("_randlabels"))


def _ranked(names: Iterable[str], known: Iterable[str]) -> list[str]:
    known = list(known)
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: (known.index(n), "") if n in known else (len(known), n))


def order_methods(methods: Iterable[str]) -> list[str]:
    return _ranked(methods, METHOD_LABELS)


def order_metrics(metrics: Iterable[str]) -> list[str]:
    return _ranked(metrics, METRIC_LABELS)


def order_experiments(names: Iterable[str]) -> list[str]:
    return _ranked(names, EXPERIMENT_ORDER)


def method_color(method: str) -> str:
    if method in METHOD_LABELS:
        return _PALETTE[list(METHOD_LABELS).index(method) % len(_PALETTE)]
    # Unknown methods: a stable colour from the name (not from the order they happen to appear in).
    return _PALETTE[sum(method.encode()) % len(_PALETTE)]
