"""Similarity metrics between two saliency maps, each a registered piece.

A metric is registered once (`@metric`) with its name, the map forms it compares (see
`harness.metrics.forms`; a tuple, or a function of the settings returning one) and a batched
compute `compute(ref, cmp, settings)`: `ref` and `cmp` are `FormView`s of a batch of pairs of maps
of one size (`ref["abs"]`: the reference maps' absolute forms, one per pair; `ref.stack("abs")`:
stacked), and it returns one `(value, reason)` per pair, `reason` "" for a sound value or why the
value is degenerate (then NaN when it is undefined). The scorer computes the forms, each once per
map, and turns the results into `Score`s; nothing else needs to know the metric. Reading a form the
metric does not name is an error (it would be computed map by map, outside the batch). A new metric
on a new form, e.g.::

    @form("histogram", ("abs",), batched=True)
    def _histogram(abs_maps, settings):             # [n, H, W] -> [n, bins]
        return np.stack([np.histogram(m, bins=10, range=(0, 1))[0] for m in abs_maps])

    @metric("histogram_gap", ("histogram",))
    def histogram_gap(ref, cmp, settings):
        return [(float(np.abs(a - b).sum()), "") for a, b in zip(ref["histogram"], cmp["histogram"])]

and `metrics: [..., histogram_gap]` in a preset (conf/metrics/) computes it.

The metrics follow docs/protocol.md §4 (Adebayo et al. 2018): Spearman rank
correlation of the absolute and of the signed maps, SSIM and HOG similarity, and a foreground-only
Spearman (docs/protocol.md §5.3). Undefined scores (§5.1) are never zero-filled: a constant map makes
Spearman and the HOG correlation undefined, so the score is NaN with a reason saying which side was
constant. The caller counts and reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from skimage.metrics import structural_similarity

from harness.metrics.forms import FORMS, RAW, IMAGE, PreparedMap, ssim_window_mean, stack, unit_rows

if TYPE_CHECKING:
    from harness.metrics.settings import MetricSettings

#: What a metric's compute returns for each pair: the value and "" or why it is degenerate.
Result = tuple[float, str]
NAN = float("nan")


@dataclass(frozen=True)
class Score:
    metric: str
    value: float  # NaN when undefined
    degenerate: bool
    reason: str  # "" or why the score is degenerate / undefined


class FormView:
    """One side (the references or the compared maps) of a batch of pairs of maps of one size, as
    one metric sees it: the forms it declares (and those they are computed from), already computed."""

    def __init__(self, maps: Sequence[PreparedMap], metric: str, forms: Collection[str]):
        self.maps = maps
        self.metric = metric
        self.forms = forms

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, form: str) -> list[Any]:
        """The form `form` of each map, in pair order."""
        if form not in self.forms:  # it would be computed map by map, outside the batch
            raise ValueError(f"metric {self.metric!r} reads the map form {form!r} without declaring it")
        return [m[form] for m in self.maps]

    def stack(self, form: str) -> np.ndarray:
        """The form `form` of each map, stacked: [pairs, ...] (forms.stack: no copy where it can)."""
        if form not in self.forms:
            self[form]  # the error of a form the metric does not declare
        return stack(self.maps, form)


@dataclass(frozen=True)
class Metric:
    """A registered metric (see the module docstring)."""

    name: str
    forms: tuple[str, ...] | Callable[[MetricSettings], tuple[str, ...]]
    compute: Callable[[FormView, FormView, MetricSettings], Sequence[Result]]

    def forms_for(self, settings: MetricSettings) -> tuple[str, ...]:
        return tuple(self.forms(settings)) if callable(self.forms) else self.forms


#: name -> Metric, in registration order (the order of METRIC_NAMES).
METRICS: dict[str, Metric] = {}


def metric(name: str, forms: Sequence[str] | Callable[[MetricSettings], tuple[str, ...]]) -> Callable:
    """Decorator registering `compute(ref, cmp, settings)` as the metric `name` (returned unchanged)."""
    if not callable(forms):
        forms = tuple(forms)
        unknown = [f for f in forms if f not in FORMS and f not in (RAW, IMAGE)]
        if unknown:
            raise ValueError(f"metric {name!r}: unknown map forms {unknown}; known: {', '.join(FORMS)}")

    def register(compute: Callable) -> Callable:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, forms, compute)
        return compute
    return register


def metric_names() -> tuple[str, ...]:
    """Every registered metric, in registration order."""
    return tuple(METRICS)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _is_constant(x: np.ndarray) -> bool:
    return x.size == 0 or bool(x.min() == x.max())


def constant_reason(ref: np.ndarray, cmp: np.ndarray, what: str = "constant map") -> str:
    """'' if neither side is constant, else e.g. 'constant map (reference)'."""
    return _reason(_is_constant(ref), _is_constant(cmp), what)


def _reason(ref_constant: bool, cmp_constant: bool, what: str) -> str:
    sides = [name for name, constant in (("reference", ref_constant), ("compared", cmp_constant)) if constant]
    return f"{what} ({' and '.join(sides)})" if sides else ""


def _constant_rows(stack: np.ndarray) -> np.ndarray:
    """Whether each map of a stack [n, ...] is constant."""
    flat = stack.reshape(len(stack), -1)
    return flat.min(axis=1) == flat.max(axis=1) if flat.shape[1] else np.ones(len(flat), bool)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula, as scipy.stats.pearsonr's result (to ~1e-15): pearsonr's input handling
    costs ~10 ms a call (scipy 1.16), np.corrcoef's ~0.2 ms. NaN for a constant side; callers rule
    that out. The clip keeps rounding inside [-1, 1], as pearsonr does."""
    return float(_sum_of_products(unit_rows(np.ravel(x)[None]), unit_rows(np.ravel(y)[None]))[0])


def _sum_of_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlations of row pairs already centred and of unit length (forms.unit_rows)."""
    return np.clip(np.sum(a * b, axis=1), -1.0, 1.0)


def correlation(ref: np.ndarray, cmp: np.ndarray, ref_corr: np.ndarray, cmp_corr: np.ndarray,
                what: str = "constant map") -> Result:
    """Pearson of (ref_corr, cmp_corr); NaN with a reason when `ref` or `cmp` is constant.
    Spearman is Pearson of the average ranks, exactly as scipy.stats.spearmanr computes it."""
    reason = constant_reason(ref, cmp, what)
    if reason:
        return NAN, reason
    return _pearson(ref_corr, cmp_corr), ""


def correlations(ref: FormView, cmp: FormView, form: str, unit_form: str, what: str = "constant map") -> list[Result]:
    """`correlation` of each pair, of the batch in one expression: constant check on `form`, Pearson
    of the form `unit_form` is of (a `unit_<name>` form). A constant side has a constant `unit_form`
    source (its ranks, its HOG features), so only a pair whose correlation is NaN is checked for it."""
    values = _sum_of_products(ref.stack(unit_form), cmp.stack(unit_form)).tolist()
    undefined = [k for k, value in enumerate(values) if value != value]
    reasons = [""] * len(values)
    if undefined:
        a, b = ref[form], cmp[form]
        for k in undefined:
            reasons[k] = constant_reason(a[k], b[k], what)
    return [(NAN, reason) if reason else (value, "") for value, reason in zip(values, reasons, strict=True)]


def _ssim_batch(ref01: np.ndarray, cmp01: np.ndarray, s: MetricSettings,
                ref_moments: np.ndarray, cmp_moments: np.ndarray) -> np.ndarray:
    """skimage's `structural_similarity` of each pair of [n, H, W] or [n, H, W, C] float64 maps, over
    the whole stack; with channels, skimage's per-channel SSIM averaged (`channel_axis=-1`, the
    notebook's `multichannel=True`). `ref_moments`, `cmp_moments`: each side's form `ssim_moments`
    (its local means and mean squares).

    Why not call skimage: it takes one pair a call, ~0.2 ms of Python around five small filters (a
    fifth of scoring a 28 x 28 pair). Here the same filters run along H and W of the stack
    (forms.ssim_window_mean), four of the five once per map as its form (a reference compared at
    every step gets them once), then skimage's formula and border crop; the tests compare with
    skimage. `ssim_window` sets the uniform window, the crop and NP of the sample covariance
    NP / (NP - 1) (as skimage: NP = win ** 2 with Gaussian weights too)."""
    win = int(s.ssim_window)
    if min(ref01.shape[1:3]) < win:  # skimage's own error for a window larger than the map
        structural_similarity(ref01[0], cmp01[0], win_size=win, data_range=float(s.ssim_data_range),
                              channel_axis=-1 if ref01.ndim == 4 else None)
    cov_norm = win ** 2 / (win ** 2 - 1) if s.ssim_sample_covariance else 1.0
    x, y = np.asarray(ref01, np.float64), np.asarray(cmp01, np.float64)
    ux, uy = ref_moments[:, 0], cmp_moments[:, 0]
    vx = cov_norm * (ref_moments[:, 1] - ux * ux)
    vy = cov_norm * (cmp_moments[:, 1] - uy * uy)
    vxy = cov_norm * (ssim_window_mean(x * y, s) - ux * uy)
    c1, c2 = (0.01 * float(s.ssim_data_range)) ** 2, (0.03 * float(s.ssim_data_range)) ** 2
    similarity = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    height, width = similarity.shape[1:3]
    cropped = similarity[:, pad:height - pad, pad:width - pad]
    return cropped.reshape(len(cropped), -1).mean(axis=1, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The metrics (registration order = METRIC_NAMES)
# --------------------------------------------------------------------------------------------


@metric("spearman_abs", ("abs", "unit_rank_abs"))
def spearman_abs(ref: FormView, cmp: FormView, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the absolute maps (absolute_map), all pixels."""
    return correlations(ref, cmp, "abs", "unit_rank_abs")


@metric("spearman_signed", ("signed", "unit_rank_signed"))
def spearman_signed(ref: FormView, cmp: FormView, settings: MetricSettings) -> list[Result]:
    """Spearman rank correlation of the signed maps (signed_map), all pixels."""
    return correlations(ref, cmp, "signed", "unit_rank_signed")


@metric("ssim", ("ssim_hog", "ssim_moments"))
def ssim(ref: FormView, cmp: FormView, settings: MetricSettings) -> list[Result]:
    """skimage SSIM of the map settings.ssim_hog_map (raw01: the raw map, all channels, per-channel
    SSIM averaged; abs01: the absolute map), min-max scaled; window, weights, covariance and data
    range from the settings. SSIM of a constant map is defined: the value is kept, flagged."""
    a, b = ref.stack("ssim_hog"), cmp.stack("ssim_hog")
    values = _ssim_batch(a, b, settings, ref.stack("ssim_moments"), cmp.stack("ssim_moments")).tolist()
    return [(value, _reason(x, y, "constant map"))
            for value, x, y in zip(values, _constant_rows(a), _constant_rows(b), strict=True)]


def _hog_forms(settings: MetricSettings) -> tuple[str, ...]:
    return ("ssim_hog", "hog", "unit_hog" if settings.hog_correlation == "pearson" else "unit_rank_hog")


@metric("hog", _hog_forms)
def hog_similarity(ref: FormView, cmp: FormView, settings: MetricSettings) -> list[Result]:
    """Pearson or Spearman (settings.hog_correlation) of the skimage HOG vectors of the map SSIM sees."""
    corr = "unit_hog" if settings.hog_correlation == "pearson" else "unit_rank_hog"
    features = correlations(ref, cmp, "hog", corr, "constant HOG features")
    # a constant map has all-zero HOG features (a NaN correlation): the map's own reason first
    return [(NAN, constant_reason(a, b) or reason) if reason else (value, reason)
            for (value, reason), a, b in zip(features, ref["ssim_hog"], cmp["ssim_hog"], strict=True)]


@metric("spearman_abs_fg", ("fg", "abs_fg", "rank_abs_fg"))
def spearman_abs_fg(ref: FormView, cmp: FormView, settings: MetricSettings) -> list[Result]:
    """spearman_abs restricted to the foreground (input non-zero in any channel): the maps are
    post-processed on the full image, then masked. Needs the input image."""
    return [(NAN, "no foreground pixels") if not fg.any() else correlation(a, b, ra, rb, "constant map on foreground")
            for fg, a, b, ra, rb in zip(ref["fg"], ref["abs_fg"], cmp["abs_fg"], ref["rank_abs_fg"], cmp["rank_abs_fg"])]
