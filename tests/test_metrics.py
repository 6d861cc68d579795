"""Tests for harness.metrics (pure numpy/scipy/skimage; no TensorFlow)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from harness.errors import HarnessError
from harness.metrics import (
    METRIC_NAMES,
    MetricSettings,
    Score,
    absolute_map,
    compare,
    compare_batch,
    hog_geometry,
    minmax01,
    random_mask,
    signed_map,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "metrics"
ALL_METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog", "spearman_abs_fg")


def _by_name(scores: list[Score]) -> dict[str, Score]:
    return {s.metric: s for s in scores}


def _smooth_map(rng: np.random.Generator, shape=(64, 64, 3)) -> np.ndarray:
    """A structured (non-noise) map: random blobs plus a little noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape[:2])
    for _ in range(4):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        m += rng.normal() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (shape[0] / 8) ** 2))
    out = m[..., None] * rng.uniform(0.5, 1.5, size=shape[2]) + 0.05 * rng.normal(size=shape)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------


def test_no_tensorflow_import():
    import harness.metrics as sim

    files = list(Path(sim.__file__).parent.glob("*.py"))
    assert len(files) >= 5  # the package's modules, not just __init__
    for path in files:
        src = path.read_text()
        assert "import tensorflow" not in src and "from tensorflow" not in src, path.name


def test_absolute_map_one_channel_divides_by_max_abs_without_clip():
    m = np.array([[1.0, -4.0], [2.0, 0.0]], dtype=np.float32)[..., None]
    np.testing.assert_allclose(absolute_map(m), [[0.25, 1.0], [0.5, 0.0]])
    # A 2-D map is treated as one channel.
    np.testing.assert_allclose(absolute_map(m[..., 0]), absolute_map(m))


def test_absolute_map_three_channels_sums_abs_and_clips_at_99th_percentile():
    # 100 pixels; channel-abs-sums are 0..99 except one outlier of 1000.
    sums = np.arange(100, dtype=np.float64)
    sums[-1] = 1000.0
    m = np.zeros((10, 10, 3))
    m[..., 0] = (sums / 2).reshape(10, 10)
    m[..., 1] = -(sums / 4).reshape(10, 10)
    m[..., 2] = (sums / 4).reshape(10, 10)
    p99 = np.percentile(sums, 99)
    expected = (np.minimum(sums, p99) / p99).reshape(10, 10)
    out = absolute_map(m)
    np.testing.assert_allclose(out, expected)
    assert out.max() == pytest.approx(1.0) and out.min() == 0.0
    assert (out == 1.0).sum() >= 1  # the outlier is clipped, not allowed to squash the rest


def test_signed_map_one_channel_divides_by_max_abs():
    m = np.array([[1.0, -4.0], [2.0, 0.0]])[..., None]
    np.testing.assert_allclose(signed_map(m), [[0.25, -1.0], [0.5, 0.0]])


def test_signed_map_three_channels_is_pairs_visualize_image_diverging():
    """docs/protocol.md §4.2: 3-channel maps get PAIR's own diverging visualisation: span = |99th
    percentile of the signed sum s|, (s + span) / (2 span) clipped to [-1, 1], i.e. s clipped to
    [-3 span, span] -- not a symmetric clip at the 99th percentile of |s|."""
    from saliency.core.visualization import VisualizeImageDiverging

    rng = np.random.default_rng(0)
    m = rng.normal(size=(20, 20, 3)) + 0.2  # skewed, so |99th pct of s| != 99th pct of |s|
    m[0, 0] = [50.0, 50.0, 50.0]  # positive outlier: clipped to span -> 1
    m[0, 1] = [-50.0, -50.0, -50.0]  # negative outlier: clipped to -3 span -> -1
    m[0, 2] = [-2.5, -2.5, -2.5]  # inside [-3 span, span], below -span: negative, not clipped
    out = signed_map(m)
    np.testing.assert_array_equal(out, VisualizeImageDiverging(m))
    span = abs(np.percentile(m.sum(axis=2), 99))
    assert out[0, 0] == 1.0 and out[0, 1] == -1.0 and out[0, 2] == pytest.approx((-7.5 + span) / (2 * span))
    assert -1.0 < out[0, 2] < 0.0
    # A float32 map (what the methods return): PAIR sums in float32, the harness in float64.
    m32 = m.astype(np.float32)
    np.testing.assert_allclose(signed_map(m32), VisualizeImageDiverging(m32), rtol=0, atol=1e-6)


def test_all_zero_maps_stay_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for shape in [(5, 5, 1), (5, 5, 3), (5, 5)]:
            z = np.zeros(shape, dtype=np.float32)
            np.testing.assert_array_equal(absolute_map(z), 0.0)
            np.testing.assert_array_equal(signed_map(z), 0.0)
        np.testing.assert_array_equal(minmax01(np.full((4, 4), 3.0)), 0.0)


def test_sparse_three_channel_map_is_not_erased_by_the_percentile_clip():
    # Fewer than 1 % non-zero pixels: the 99th percentile is 0; fall back to division by the max.
    m = np.zeros((20, 20, 3))
    m[3, 4] = [1.0, -1.0, 2.0]
    m[5, 6] = [0.5, 0.5, 0.0]
    a = absolute_map(m)
    assert a[3, 4] == 1.0 and a[5, 6] == pytest.approx(0.25)
    s = signed_map(m)  # span = max |s| = 2 where PAIR's span (the 99th percentile) is 0
    assert s[3, 4] == 1.0 and s[5, 6] == pytest.approx(0.75) and s[0, 0] == 0.5


def test_minmax01():
    np.testing.assert_allclose(minmax01(np.array([[2.0, 4.0], [3.0, 6.0]])), [[0.0, 0.5], [0.25, 1.0]])


def test_hog_geometry_scales_cell_with_image_and_reduces_block():
    s = MetricSettings()
    assert hog_geometry(299, 299, s) == (16, 3)
    assert hog_geometry(28, 28, s) == (2, 3)  # round(1.5) -> 1, clamped to 2
    assert hog_geometry(224, 224, s) == (12, 3)
    assert hog_geometry(40, 40, MetricSettings(hog_cell_px=16)) == (16, 2)  # 2 cells per side only
    with pytest.raises(ValueError):
        hog_geometry(10, 10, MetricSettings(hog_cell_px=16))


# ---------------------------------------------------------------------------------------------
# Metrics equal the direct library calls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_each_metric_equals_direct_library_call(channels):
    rng = np.random.default_rng(1)
    ref = _smooth_map(rng, (64, 64, channels))
    cmp = ref + 0.5 * _smooth_map(rng, (64, 64, channels))
    image = np.zeros((64, 64, 3), dtype=np.float32)
    image[10:50, 5:40] = 0.7
    fg = np.any(image != 0, axis=2)
    settings = MetricSettings(metrics=ALL_METRICS)
    got = _by_name(compare(ref, cmp, settings, image=image))
    assert list(got) == list(ALL_METRICS)  # order follows settings.metrics

    a_ref, a_cmp = absolute_map(ref), absolute_map(cmp)
    s_ref, s_cmp = signed_map(ref), signed_map(cmp)
    # SSIM and HOG: the raw, signed map, all channels, min-max scaled (docs/protocol.md §4.3).
    m_ref = (ref - ref.min()) / (ref.max() - ref.min()) if channels == 3 else minmax01(ref[..., 0])
    m_cmp = (cmp - cmp.min()) / (cmp.max() - cmp.min()) if channels == 3 else minmax01(cmp[..., 0])
    axis = -1 if channels == 3 else None
    cell, block = hog_geometry(64, 64, settings)
    assert (cell, block) == (3, 3)

    def h(x):
        return hog(x, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(block, block), block_norm="L2-Hys",
                   channel_axis=axis)

    expected = {
        "spearman_abs": stats.spearmanr(a_ref.ravel(), a_cmp.ravel()).statistic,
        "spearman_signed": stats.spearmanr(s_ref.ravel(), s_cmp.ravel()).statistic,
        "ssim": structural_similarity(m_ref.astype(np.float64), m_cmp.astype(np.float64), win_size=5, data_range=1.0,
                                      channel_axis=axis),
        "hog": stats.pearsonr(h(m_ref), h(m_cmp)).statistic,
        "spearman_abs_fg": stats.spearmanr(a_ref[fg], a_cmp[fg]).statistic,
    }
    for name, value in expected.items():
        assert got[name].value == pytest.approx(value, abs=1e-6 if name in ("ssim", "hog") else 1e-12), name
        assert not got[name].degenerate and got[name].reason == ""
        assert 0.0 < got[name].value < 1.0  # sanity: related but not identical maps


def _notebook_normalize_image(x):
    """The notebook's normalize_image (inceptionv3_cascading_randomization.ipynb), verbatim."""
    x = np.array(x).astype(np.float32)
    x_min = x.min()
    x_max = x.max()
    x_norm = (x - x_min) / (x_max - x_min)
    return x_norm


def _notebook_ssim_and_hog(raw, raw2):
    """A literal transcription of the notebook's metric calls, with scikit-image 0.15.0 (pinned in
    the authors' requirements.txt) as today's scikit-image:

        ss1 = ssim(normalize_image(raw), normalize_image(raw2), gaussian_weights=True, multichannel=True)
        rank_corr_hog = spr(feature.hog(normalize_image(raw), pixels_per_cell=(16, 16)),
                            feature.hog(normalize_image(raw2), pixels_per_cell=(16, 16)))[0]

    compare_ssim 0.15.0, made explicit: sigma 1.5, truncate 3.5 (hard-coded since 0.15; today's
    skimage hard-codes it too), win_size 11 (crop, NP), use_sample_covariance True (its default),
    data_range 2 (dtype_range[float32] = (-1, 1): normalize_image returns float32), inputs cast to
    float64 (0.15.0 did `X.astype(np.float64)`; today's keeps float32), multichannel -> channel_axis.
    hog 0.15.0 defaults: orientations 9, cells_per_block (3, 3), block_norm L2-Hys, multichannel
    inferred from ndim == 3 (each pixel's dominant channel), gradients in float64.
    """
    a, b = _notebook_normalize_image(raw), _notebook_normalize_image(raw2)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ss1 = structural_similarity(a64, b64, gaussian_weights=True, sigma=1.5, win_size=11,
                                use_sample_covariance=True, data_range=2.0, channel_axis=-1)

    def notebook_hog(x):
        return hog(x, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(3, 3), block_norm="L2-Hys",
                   channel_axis=-1 if x.ndim == 3 else None)

    return ss1, stats.spearmanr(notebook_hog(a64), notebook_hog(b64))[0]


def test_notebook_preset_reproduces_the_notebooks_ssim_and_hog_calls():
    """The notebook preset, loaded from conf/metrics/notebook.yaml, against a literal transcription
    of the authors' calls on 299 x 299 x 3 maps (Inception; 16 px HOG cells as in the notebook)."""
    notebook = MetricSettings.from_config(OmegaConf.load(CONF_DIR / "notebook.yaml"))
    settings = MetricSettings(**{**notebook.__dict__, "metrics": ("ssim", "hog")})
    assert hog_geometry(299, 299, settings) == (16, 3)
    rng = np.random.default_rng(2)
    for _ in range(2):
        ref = _smooth_map(rng, (299, 299, 3))
        cmp = ref + 1.5 * _smooth_map(rng, (299, 299, 3))
        got = _by_name(compare(ref, cmp, settings))
        ssim, hog_rank = _notebook_ssim_and_hog(ref, cmp)
        # float32 rounding in normalize_image is all that separates the two (measured: < 1e-7)
        assert got["ssim"].value == pytest.approx(ssim, abs=1e-6)
        assert got["hog"].value == pytest.approx(hog_rank, abs=1e-6)
        assert 0.1 < got["ssim"].value < 0.99 and 0.05 < got["hog"].value < 0.99  # a real comparison
    # The implicit data range of 2 inflates SSIM relative to the correct range of 1.
    correct = compare(ref, cmp, MetricSettings(**{**settings.__dict__, "ssim_data_range": 1.0}))[0].value
    assert got["ssim"].value > correct


def test_paper_and_notebook_presets_default_to_the_raw_min_max_map_and_record_it():
    for preset in ("paper", "notebook"):
        settings = MetricSettings.from_config(OmegaConf.load(CONF_DIR / f"{preset}.yaml"))
        assert settings.ssim_hog_map == "raw01"
        record = settings.to_record()
        assert record["ssim_hog_map"] == "raw01" and record["ssim_sample_covariance"] is True
        assert "ssim_truncate" in record and "ssim_data_range" in record and "ssim_window" in record
    assert MetricSettings().ssim_hog_map == "raw01"
    with pytest.raises(HarnessError, match="raw01, abs01"):
        MetricSettings(ssim_hog_map="abs")
    # abs01 remains an option: today's form, the absolute map min-max scaled.
    rng = np.random.default_rng(13)
    ref, cmp = _smooth_map(rng, (32, 32, 3)), _smooth_map(rng, (32, 32, 3))
    got = compare(ref, cmp, MetricSettings(metrics=("ssim",), ssim_hog_map="abs01"))[0].value
    assert got == pytest.approx(structural_similarity(minmax01(absolute_map(ref)), minmax01(absolute_map(cmp)),
                                                      win_size=5, data_range=1.0), abs=1e-12)
    assert got != pytest.approx(compare(ref, cmp, MetricSettings(metrics=("ssim",)))[0].value, abs=1e-3)


def test_ssim_truncate_is_skimages_fixed_value_and_other_values_are_refused():
    """skimage's structural_similarity fixes its Gaussian's truncate at 3.5 (0.14 took scipy's 4.0):
    the setting records it, and another value is one clear error naming the setting."""
    assert MetricSettings().ssim_truncate == 3.5 and MetricSettings().to_record()["ssim_truncate"] == 3.5
    with pytest.raises(HarnessError, match="ssim_truncate"):
        MetricSettings.from_config({"ssim_truncate": 4.0})


@pytest.mark.parametrize("channels", [1, 3])
def test_identical_maps_score_one(channels):
    rng = np.random.default_rng(3)
    m = _smooth_map(rng, (48, 48, channels))
    for s in compare(m, m.copy(), MetricSettings(metrics=ALL_METRICS), image=np.ones((48, 48, 1))):
        assert s.value == pytest.approx(1.0), s
        assert not s.degenerate


# ---------------------------------------------------------------------------------------------
# Degenerate inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [0.0, 0.3])
@pytest.mark.parametrize("side", ["reference", "compared", "reference and compared"])
def test_constant_maps_give_nan_degenerate_reason_and_no_warnings(fill, side):
    rng = np.random.default_rng(4)
    const = np.full((32, 32, 3), fill, dtype=np.float32)
    other = _smooth_map(rng, (32, 32, 3))
    ref = const if "reference" in side else other
    cmp = const if "compared" in side else other
    image = np.ones((32, 32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (scipy ConstantInputWarning, numpy divide) fails
        got = _by_name(compare(ref, cmp, MetricSettings(metrics=ALL_METRICS), image=image))
    for name in ("spearman_abs", "spearman_signed", "hog", "spearman_abs_fg"):
        assert math.isnan(got[name].value), name  # never zero-filled
        assert got[name].degenerate
        assert side in got[name].reason and "constant map" in got[name].reason
    # SSIM of constant maps is defined by skimage: value kept, but flagged.
    assert not math.isnan(got["ssim"].value)
    assert got["ssim"].degenerate and got["ssim"].reason == f"constant map ({side})"
    if side == "reference and compared":
        assert got["ssim"].value == pytest.approx(1.0)


def test_constant_hog_features_are_flagged():
    # A non-constant map whose HOG features are all 0: alternating rows. skimage's HOG uses centred
    # differences x[i+1] - x[i-1], which vanish on a period-2 stripe pattern.
    m = np.zeros((32, 32, 1))
    m[::2] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compare(m, _smooth_map(np.random.default_rng(5), (32, 32, 1)), MetricSettings(metrics=("hog",)))[0]
    assert math.isnan(got.value) and got.degenerate and got.reason == "constant HOG features (reference)"


def test_non_finite_maps_are_flagged_not_scored():
    m = np.ones((16, 16, 3))
    bad = m.copy()
    bad[2, 2, 1] = np.nan
    for s in compare(bad, m + np.arange(16)[:, None, None], MetricSettings()):
        assert math.isnan(s.value) and s.degenerate and s.reason == "non-finite values (reference)"


def test_non_finite_maps_in_stacks_are_flagged_pair_by_pair():
    """Stacks (as the runner scores a unit: scoring.prepare_stack checks every map's values at once):
    a NaN in a compared map or an inf in a reference flags that pair alone, naming the side; the
    other pairs get compare's scores. Red with the stack's maps all taken as finite."""
    rng = np.random.default_rng(4)
    refs = np.stack([_smooth_map(rng, (16, 16, 1)) for _ in range(4)])
    cmps = np.stack([_smooth_map(rng, (16, 16, 1)) for _ in range(4)])
    cmps[1, 3, 3, 0], refs[2, 0, 5, 0] = np.nan, -np.inf
    settings = MetricSettings()
    batch = compare_batch(refs, cmps, settings)
    for k, side in ((1, "compared"), (2, "reference")):
        assert all(math.isnan(s.value) and s.degenerate and s.reason == f"non-finite values ({side})"
                   for s in batch[k])
    assert [batch[0], batch[3]] == [compare(refs[k], cmps[k], settings) for k in (0, 3)]


# ---------------------------------------------------------------------------------------------
# Foreground Spearman
# ---------------------------------------------------------------------------------------------


def test_foreground_spearman_uses_only_foreground_pixels():
    rng = np.random.default_rng(6)
    image = np.zeros((28, 28, 1), dtype=np.float32)
    image[8:20, 10:18] = 1.0  # a (binarised) MNIST-like digit on a black background
    fg = image[..., 0] != 0
    # Gradient x Input-like maps: zero background shared by both, independent values on the digit.
    ref = (rng.normal(size=(28, 28, 1)) * image).astype(np.float32)
    cmp = (rng.normal(size=(28, 28, 1)) * image).astype(np.float32)
    settings = MetricSettings(metrics=("spearman_abs", "spearman_abs_fg"))
    got = _by_name(compare(ref, cmp, settings, image=image))
    a_ref, a_cmp = absolute_map(ref), absolute_map(cmp)
    assert got["spearman_abs_fg"].value == pytest.approx(stats.spearmanr(a_ref[fg], a_cmp[fg]).statistic)
    # The shared zero support inflates the full-image |Spearman| (docs/protocol.md §5.3) but not the fg one.
    assert got["spearman_abs"].value > 0.5
    assert abs(got["spearman_abs_fg"].value) < 0.3
    # Changing background pixels of the maps does not change the foreground score.
    ref2 = ref.copy()
    ref2[~fg] = 1e-6 * rng.uniform(size=((~fg).sum(), 1))
    assert compare(ref2, cmp, settings, image=image)[1].value == pytest.approx(got["spearman_abs_fg"].value)


def test_foreground_spearman_without_foreground_or_image():
    m = _smooth_map(np.random.default_rng(7), (16, 16, 1))
    settings = MetricSettings(metrics=("spearman_abs_fg",))
    got = compare(m, m * 2 + 1, settings, image=np.zeros((16, 16, 3)))[0]
    assert math.isnan(got.value) and got.degenerate and got.reason == "no foreground pixels"
    with pytest.raises(ValueError, match="image"):
        compare(m, m, settings)
    # Not needed when fg is not requested.
    assert compare(m, m, MetricSettings(metrics=("spearman_abs",)))[0].value == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Settings, presets, batch, masks
# ---------------------------------------------------------------------------------------------


def test_unknown_metric_name_raises_harness_error_naming_it():
    with pytest.raises(HarnessError, match="spearman_rank") as info:
        MetricSettings.from_config({"metrics": ["spearman_abs", "spearman_rank"]})
    for name in METRIC_NAMES:
        assert name in str(info.value)
    with pytest.raises(HarnessError):
        MetricSettings(metrics=("nope",))
    with pytest.raises(HarnessError, match="ssim_windw"):
        MetricSettings.from_config({"ssim_windw": 7})
    with pytest.raises(HarnessError, match="kendall"):
        MetricSettings.from_config({"hog_correlation": "kendall"})


def test_presets_load_from_yaml():
    paper = MetricSettings.from_config(OmegaConf.load(CONF_DIR / "paper.yaml"))
    assert paper == MetricSettings()  # the dataclass defaults are the paper preset
    notebook = MetricSettings.from_config(OmegaConf.load(CONF_DIR / "notebook.yaml"))
    assert notebook.preset == "notebook"
    assert (notebook.ssim_gaussian, notebook.ssim_window, notebook.ssim_sigma) == (True, 11, 1.5)
    assert notebook.ssim_data_range == 2.0 and notebook.hog_correlation == "spearman"
    assert notebook.metrics == paper.metrics
    assert paper.to_record()["metrics"] == list(paper.metrics)
    # Plain dicts with YAML-ish scalars work too.
    s = MetricSettings.from_config({"metrics": "ssim", "ssim_data_range": 1, "hog_cell_px": 8})
    assert s.metrics == ("ssim",) and isinstance(s.ssim_data_range, float) and s.hog_cell_px == 8


def test_compare_batch_loops_over_batch():
    rng = np.random.default_rng(8)
    refs = np.stack([_smooth_map(rng, (24, 24, 3)) for _ in range(3)])
    cmps = np.stack([_smooth_map(rng, (24, 24, 3)) for _ in range(3)])
    imgs = np.ones((3, 24, 24, 3))
    settings = MetricSettings(metrics=("spearman_abs", "spearman_abs_fg"))
    batch = compare_batch(refs, cmps, settings, images=imgs)
    assert len(batch) == 3
    for i in range(3):
        assert batch[i] == compare(refs[i], cmps[i], settings, image=imgs[i])
    with pytest.raises(ValueError):
        compare_batch(refs, cmps[:2], settings)
    mixed = [cmps[0], _smooth_map(rng, (20, 24, 3)), cmps[2]]  # batched SSIM / HOG must not hide compare's error
    with pytest.raises(ValueError, match=r"maps differ in shape: reference \(24, 24, 3\), compared \(20, 24, 3\)"):
        compare_batch(refs, mixed, MetricSettings())


def test_compare_batch_times_each_metric_with_the_forms_it_reads_first(monkeypatch):
    """`timer` opens one span per metric and chunk, in settings.metrics' order; a form shared by two
    metrics (raw01: SSIM's and HOG's map) is computed inside the first one's span, HOG's features
    inside HOG's; and the scores are those of an untimed call, bit for bit."""
    from harness.metrics import FORMS, scoring

    monkeypatch.setattr(scoring, "CHUNK_VALUES", 2 * 28 * 28)  # 5 maps: 3 chunks
    rng = np.random.default_rng(3)
    refs, cmps = rng.standard_normal((5, 28, 28, 1)), rng.standard_normal((5, 28, 28, 1))
    settings = MetricSettings(metrics=("spearman_abs", "ssim", "hog"))
    untimed = compare_batch(refs, cmps, settings)
    spans, computed_in = [], {}
    for name in ("raw01", "hog"):
        real = FORMS[name]
        monkeypatch.setitem(FORMS, name, dataclasses.replace(real, compute=lambda *a, _real=real, _name=name: (
            computed_in.setdefault(_name, set()).add(spans[-1]), _real.compute(*a))[1]))

    @contextlib.contextmanager
    def timer(metric):
        spans.append(metric)
        yield

    assert compare_batch(refs, cmps, settings, timer=timer) == untimed
    assert spans == ["spearman_abs", "ssim", "hog"] * 3
    assert computed_in == {"raw01": {"ssim"}, "hog": {"hog"}}


@pytest.mark.parametrize("settings", [
    MetricSettings(metrics=("ssim",)),  # the paper's: uniform window 5, sample covariance
    MetricSettings(metrics=("ssim",), ssim_window=11, ssim_gaussian=True, ssim_data_range=2.0),  # the notebook's
    MetricSettings(metrics=("ssim",), ssim_hog_map="abs01"),
    MetricSettings(metrics=("ssim",), ssim_window=11, ssim_gaussian=True, ssim_sample_covariance=False),
])
def test_batched_ssim_is_skimages_pair_by_pair_and_skips_non_finite_pairs(settings):
    rng = np.random.default_rng(12)
    refs = [_smooth_map(rng, (28, 28, 1)) for _ in range(4)] + [_smooth_map(rng, (16, 20, 3))]
    cmps = [_smooth_map(rng, m.shape) for m in refs]
    cmps[1] = np.zeros_like(cmps[1])  # constant: defined, flagged
    cmps[2][3, 3] = np.nan  # undefined
    scores = compare_batch(refs, cmps, settings)
    for ref, cmp, (score,) in zip(refs, cmps, scores):
        if not np.isfinite(cmp).all():
            assert math.isnan(score.value) and score.reason.startswith("non-finite")
            continue
        if settings.ssim_hog_map == "abs01":
            a, b, axis = minmax01(absolute_map(ref)), minmax01(absolute_map(cmp)), None
        else:
            a, b, axis = minmax01(ref), minmax01(cmp), -1
        expected = structural_similarity(
            a, b, win_size=settings.ssim_window, data_range=settings.ssim_data_range, channel_axis=axis,
            use_sample_covariance=settings.ssim_sample_covariance,
            **({"gaussian_weights": True, "sigma": 1.5} if settings.ssim_gaussian else {}))
        assert score.value == pytest.approx(expected, abs=1e-12)
    assert scores[1][0].degenerate
    with pytest.raises(ValueError, match="win_size exceeds image extent"):  # skimage's own message
        compare(np.ones((4, 4, 1)), np.ones((4, 4, 1)) * 2, settings)


def test_random_mask():
    rng = np.random.default_rng(9)
    g = random_mask((100, 100, 3), rng)
    u = random_mask((100, 100), rng, "uniform")
    assert g.dtype == np.float32 and g.shape == (100, 100, 3)
    assert abs(g.mean()) < 0.05 and abs(g.std() - 1) < 0.05
    assert u.dtype == np.float32 and u.min() >= -1 and u.max() <= 1 and abs(u.std() - 1 / np.sqrt(3)) < 0.02
    with pytest.raises(HarnessError, match="gaussian"):
        random_mask((2, 2), rng, "laplace")


# ---------------------------------------------------------------------------------------------
# Calibration (paper appendix): random masks give ~0, except HOG between uniform masks (~0.08)
# ---------------------------------------------------------------------------------------------


def _mean_scores(kind: str, shape, n: int, settings: MetricSettings, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    rows = [
        [s.value for s in compare(random_mask(shape, rng, kind), random_mask(shape, rng, kind), settings)]
        for _ in range(n)
    ]
    return dict(zip(settings.metrics, np.mean(rows, axis=0)))


# SSIM of two independent noise maps is not 0 but C2 / (vx + vy + C2) (structure 0, luminance ~1):
# on the raw min-max map (ssim_hog_map raw01) a Gaussian mask spans about +-4.4 SD, so its variance
# after scaling is ~0.013 and, with C2 = (0.03 * 1)^2, SSIM ~0.035 (abs01: ~0.011).
SSIM_NOISE_FLOOR = 0.05


def _assert_about_zero(means: dict[str, float]) -> None:
    assert abs(means["spearman_abs"]) < 0.01
    assert abs(means["spearman_signed"]) < 0.01
    assert abs(means["ssim"]) < SSIM_NOISE_FLOOR
    assert abs(means["hog"]) < 0.03


def test_calibration_two_gaussian_masks_score_about_zero_fast():
    """Fast version of the test below: 12 pairs."""
    _assert_about_zero(_mean_scores("gaussian", (299, 299, 3), 12, MetricSettings(), seed=11))


@pytest.mark.slow
def test_calibration_two_gaussian_masks_score_about_zero():
    """50 pairs of 299x299x3 N(0,1) masks, paper settings (about 8 s CPU; 30 s on a busy machine).

    Measured means (abs01, before raw01 became the default): spearman_abs -0.0005, spearman_signed
    0.0004, ssim 0.011, hog 0.011 (SE 0.003); raw01 (6 pairs): ssim 0.037, hog 0.008.
    The Spearman scores are 0 within 0.01. SSIM and HOG carry a small, real positive floor: SSIM from
    its stabilising constant C2 = (0.03 * data_range)^2 (see SSIM_NOISE_FLOOR; it goes to -0.001 with
    K1 = K2 -> 0); HOG (bound 0.03) because the 9 orientation bins are not equally likely on a pixel
    grid (mean bin values 0.108..0.111), a pattern both noise maps share.
    """
    _assert_about_zero(_mean_scores("gaussian", (299, 299, 3), 50, MetricSettings(), seed=0))


def test_calibration_map_against_gaussian_masks_scores_about_zero():
    rng = np.random.default_rng(10)
    ref = _smooth_map(rng, (299, 299, 3))
    settings = MetricSettings()
    rows = [[s.value for s in compare(ref, random_mask((299, 299, 3), rng), settings)] for _ in range(10)]
    for name, value in zip(settings.metrics, np.mean(rows, axis=0)):
        # SSIM: the C2 floor of SSIM_NOISE_FLOOR, higher against a smooth raw01 map (measured 0.067)
        assert abs(value) < (0.1 if name == "ssim" else 0.03), (name, value)


def test_calibration_hog_between_two_uniform_masks_is_about_0_08():
    """HOG similarity of two U[-1,1] 299x299 (single-channel) masks, paper settings: measured
    0.071 over these 50 pairs (0.076 +- 0.0015 over 200 other pairs), the paper's ~0.08 (HOG on
    the raw min-max-scaled signed mask gives 0.074). Uniform noise has a bounded, non-Gaussian
    gradient distribution, so its gradient orientations prefer some HOG bins over others; every
    uniform mask shares that profile, hence a positive correlation. (The same holds, more strongly,
    for the absolute map of a single-channel Gaussian mask, a half-normal: about 0.16.)
    """
    means = _mean_scores("uniform", (299, 299), 50, MetricSettings(metrics=("hog",)), seed=1)
    assert 0.04 < means["hog"] < 0.12


def test_calibration_hog_uniform_three_channel_absolute_map_is_lower():
    """Documents where the 0.08 comes from: on 3-channel uniform masks the absolute map (sum of
    three |U| plus the 99th-percentile clip) is closer to Gaussian and HOG drops to about 0.02.
    The raw min-max map (raw01, the default) keeps the three channels, and skimage's HOG takes each
    pixel's dominant channel: the max of three bounded gradients prefers some orientations strongly,
    so two independent uniform masks score about 0.36 (6 pairs; Gaussian masks: 0.008).
    """
    means = _mean_scores("uniform", (299, 299, 3), 6, MetricSettings(metrics=("hog",), ssim_hog_map="abs01"), seed=2)
    assert -0.01 < means["hog"] < 0.045
    raw = _mean_scores("uniform", (299, 299, 3), 3, MetricSettings(metrics=("hog",)), seed=2)
    assert 0.25 < raw["hog"] < 0.5


# ---------------------------------------------------------------------------------------------
# Library calls, and the code kept here: each compared with the installed library
# ---------------------------------------------------------------------------------------------


def test_the_metrics_are_the_settings_names_in_order():
    from harness.metrics import METRICS

    assert tuple(METRICS) == METRIC_NAMES


@pytest.mark.parametrize("shape", [(28, 28), (31, 17), (1, 300), (12, 12, 3)])
def test_own_pearson_of_ranks_is_scipys_spearmanr_and_pearsonr(shape):
    """metrics.correlation (NumPy over a stack of pairs; SciPy's pearsonr and spearmanr work pair by
    pair) against SciPy on random maps of several shapes, with a tied zero background and a constant
    pair (NaN on both sides)."""
    from harness.metrics.metrics import average_ranks, correlation

    rng = np.random.default_rng(sum(shape))
    x, y = rng.standard_normal((6, *shape)), rng.standard_normal((6, *shape))
    x[1:3, : shape[0] // 2] = 0.0  # ties
    y[2] += 0.5 * x[2]
    x[5] = 1.0  # constant: undefined
    rho, r = correlation(average_ranks(x), average_ranks(y)), correlation(x, y)
    for k in range(5):
        assert rho[k] == pytest.approx(stats.spearmanr(x[k].ravel(), y[k].ravel()).statistic, abs=1e-14)
        assert r[k] == pytest.approx(stats.pearsonr(x[k].ravel(), y[k].ravel()).statistic, abs=1e-14)
    assert math.isnan(rho[5]) and math.isnan(r[5])


@pytest.mark.parametrize("size, settings", [
    (28, MetricSettings()),                                        # MNIST: 2 px cells, 3x3 blocks
    (64, MetricSettings(hog_cell_px=8, hog_orientations=6)),
    (299, MetricSettings()),                                       # Inception: 16 px cells
    (10, MetricSettings(hog_cell_px=4)),                           # blocks reduced to 2x2 cells
])
def test_own_batched_hog_equals_the_installed_skimage_hog_map_by_map(size, settings):
    """harness.metrics.hog (kept for speed, see its docstring) against skimage.feature.hog: equal to
    within the last bits (its block sums run in another order)."""
    from harness.metrics.hog import hog_features

    rng = np.random.default_rng(size)
    maps = np.stack([minmax01(_smooth_map(rng, (size, size, 1))[..., 0]) for _ in range(3)])
    maps[1, : size // 2] = 0.0  # a flat half: zero gradients, the epsilon of the block norm matters
    cell, block = hog_geometry(size, size, settings)
    batched = hog_features(maps, settings)
    for m, got in zip(maps, batched):
        expected = hog(m, orientations=settings.hog_orientations, pixels_per_cell=(cell, cell),
                       cells_per_block=(block, block), block_norm="L2-Hys", feature_vector=True)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,cell,orientations", [
    ((28, 28), 2, 9), ((31, 29), 3, 9), ((40, 37), 4, 7), ((64, 64), 5, 12), ((33, 33), 16, 9), ((20, 20), 1, 8),
    ((20, 20), 2, 1), ((20, 20), 2, 180),
])
def test_cell_histograms_are_scikit_images_kernel_bit_for_bit(size, cell, orientations):
    """hog._cell_histograms against the Cython kernel skimage.feature.hog calls, map by map: odd
    cells, partial cells at the edges, 1 to 180 bins; maps with flat regions (zero gradients), values
    on a coarse grid (orientations exactly on bin bounds) and gradients pointing at exactly 0 and 180
    degrees. Catches a pixel binned on the wrong side of a bound, sums kept in float64 instead of the
    kernel's float32, pixels summed in another order, a partial cell counted, degrees % 180 wrong."""
    kernel = pytest.importorskip("skimage.feature._hoghistogram").hog_histograms
    from harness.metrics.hog import _cell_histograms, _central_differences

    rng = np.random.default_rng(cell * 1000 + orientations)
    maps = rng.random((5, *size))
    maps[0, : size[0] // 2] = 0.5  # flat: zero gradients
    maps[1] = np.round(maps[1] * 4) / 4  # a coarse grid: angles of 0, 45, 90, ... degrees
    maps[2, :, ::2] = 0.25  # columns alike: gradients along the rows only
    maps[3] = np.linspace(1, 0, size[1])[None, :]  # falling to the right: exactly 180 degrees
    g_rows, g_cols = _central_differences(maps)
    # and gradients whose angles lie within 20 ulps of each bin bound, on both sides
    bounds = 180.0 / orientations * np.arange(orientations + 1)
    degrees = bounds[:, None] + np.arange(-20, 21)[None, :] * np.spacing(bounds)[:, None]
    angles = np.resize(np.deg2rad(degrees.ravel()), size)
    g_rows = np.concatenate([g_rows, np.sin(angles)[None]])
    g_cols = np.concatenate([g_cols, np.cos(angles)[None]])
    got = _cell_histograms(g_rows, g_cols, cell, orientations)
    rows, cols = size[0] // cell, size[1] // cell
    for g_row, g_col, histogram in zip(g_rows, g_cols, got):
        expected = np.zeros((rows, cols, orientations))
        kernel(g_col, g_row, cell, cell, size[1], size[0], cols, rows, orientations, expected)
        np.testing.assert_array_equal(histogram.view(np.uint64), expected.view(np.uint64))


@pytest.mark.parametrize("orientations", [1, 7, 9, 12, 180, 359])
def test_orientation_bins_are_the_kernels_at_and_beside_every_bound(orientations):
    """hog._orientation_bins against scikit-image's rule written out: orientation = degrees % 180,
    bin i unless orientation >= (i + 1) * 180 / n or orientation < i * 180 / n (bounds in float64); at
    each bound, 1-3 ulps either side of it, the same 180 degrees lower, and +-180, +-0.0, the
    smallest negatives. Catches a quotient taken as the bin without either correction (at a bound it
    falls on either side for some n), a bound compared the wrong way, a wrong remainder."""
    from harness.metrics.hog import _orientation_bins

    bounds = 180.0 / orientations * np.arange(orientations + 1)
    ulps = np.arange(-3, 4)[None, :] * np.spacing(bounds)[:, None]
    near = (bounds[:, None] + ulps).ravel()
    degrees = np.concatenate([near, near - 180.0, [180.0, -180.0, 0.0, -0.0, -5e-324, -1e-300, -1e-14]])
    degrees = degrees[(degrees >= -180.0) & (degrees <= 180.0)]
    orientation = degrees % 180
    i = np.arange(orientations)
    inside = ~((orientation[:, None] >= 180.0 / orientations * (i + 1)) | (orientation[:, None] < 180.0 / orientations * i))
    expected = np.where(inside.any(axis=1), inside.argmax(axis=1), orientations)
    np.testing.assert_array_equal(_orientation_bins(degrees, orientations), expected)


def test_own_batched_hog_of_three_channel_maps_equals_skimage_dominant_channel_hog():
    from harness.metrics.hog import hog_features

    rng = np.random.default_rng(15)
    settings = MetricSettings(hog_cell_px=4)
    maps = np.stack([minmax01(_smooth_map(rng, (40, 40, 3))) for _ in range(3)])
    maps[1, :20] = 0.5  # a flat half: ties between the channels' (zero) gradients
    for m, got in zip(maps, hog_features(maps, settings)):
        expected = hog(m, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(3, 3), block_norm="L2-Hys",
                       channel_axis=-1)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_prepared_reference_gives_the_same_scores_as_raw_maps():
    from harness.metrics import PreparedMap, prepare_stack

    rng = np.random.default_rng(11)
    settings = MetricSettings(metrics=ALL_METRICS)
    image = (rng.uniform(size=(28, 28, 1)) > 0.5).astype(float)
    ref, cmps = rng.normal(size=(28, 28, 1)), rng.normal(size=(4, 28, 28, 1))
    prepared = PreparedMap(ref, settings, image)
    for cmp in cmps:
        assert compare(prepared, cmp, settings, image=image) == compare(ref, cmp, settings, image=image)
    assert compare_batch([prepared] * 4, cmps, settings, images=[image] * 4) == \
        [compare(ref, c, settings, image=image) for c in cmps]
    stacked = prepare_stack(cmps.astype(np.float32)[..., 0], settings, [image] * 4)
    assert compare_batch(stacked, cmps[::-1], settings, images=[image] * 4) == \
        [compare(c.astype(np.float32), d, settings, image=image) for c, d in zip(cmps, cmps[::-1])]


def _counting_forms(monkeypatch) -> dict[str, int]:
    """Wrap every form to count the maps it is computed for."""
    from harness.metrics import FORMS

    computed: dict[str, int] = {}
    for name, f in list(FORMS.items()):
        def compute(stack, settings, _name=name, _f=f):
            computed[_name] = computed.get(_name, 0) + len(stack)
            return _f.compute(stack, settings)
        monkeypatch.setitem(FORMS, name, dataclasses.replace(f, compute=compute))
    return computed


def test_each_form_is_computed_once_per_map_however_many_metrics_use_it(monkeypatch):
    """Every form is computed once per map, though several metrics use it ('abs' feeds spearman_abs,
    the abs01 map of ssim and hog, and spearman_abs_fg) and a prepared reference appears twice in the
    batch; a prepared reference keeps its forms for the next batch (the runner compares its original
    maps with every step's)."""
    from harness.metrics import PreparedMap

    computed = _counting_forms(monkeypatch)
    settings = MetricSettings(metrics=ALL_METRICS, ssim_hog_map="abs01", hog_correlation="spearman")
    rng = np.random.default_rng(17)
    image = (rng.uniform(size=(16, 16, 1)) > 0.3).astype(float)
    refs = [PreparedMap(_smooth_map(rng, (16, 16, 1)), settings, image) for _ in range(2)]
    batch = [refs[0], refs[1], refs[0]]  # the same prepared reference twice
    compare_batch(batch, [_smooth_map(rng, (16, 16, 1)) for _ in range(3)], settings, images=[image] * 3)
    used = {"abs", "signed", "abs01", "ssim_hog", "hog", "rank_abs", "rank_signed", "rank_hog"}
    assert computed == {name: 2 + 3 for name in used}  # 2 references + 3 compared maps
    compare_batch(batch, [_smooth_map(rng, (16, 16, 1)) for _ in range(3)], settings, images=[image] * 3)
    compare(refs[1], _smooth_map(rng, (16, 16, 1)), settings, image=image)
    assert computed == {name: 2 + 3 + 3 + 1 for name in used}  # the references' forms were kept


def test_a_batch_is_scored_in_chunks_with_the_scores_of_pair_by_pair(monkeypatch):
    """compare_batch scores a batch chunk by chunk (scoring.CHUNK_VALUES): every pair gets the scores
    compare gives it alone, in order, across chunk boundaries, non-finite maps, two map sizes and a
    prepared reference listed twice; no form sees more maps at once than a chunk holds."""
    from harness.metrics import FORMS, PreparedMap, scoring

    monkeypatch.setattr(scoring, "CHUNK_VALUES", 3 * 16 * 16)  # 3 pairs of 16 x 16 maps a chunk
    widest = 0
    for name, f in list(FORMS.items()):
        def compute(stack, settings, _f=f):
            nonlocal widest
            widest = max(widest, len(stack))
            return _f.compute(stack, settings)
        monkeypatch.setitem(FORMS, name, dataclasses.replace(f, compute=compute))
    settings = MetricSettings(metrics=(*ALL_METRICS, "emprt"))
    rng = np.random.default_rng(21)
    shapes = [(16, 16, 1)] * 5 + [(12, 16, 1)] + [(16, 16, 1)] * 4
    images = [(rng.uniform(size=s) > 0.4).astype(float) for s in shapes]
    refs = [_smooth_map(rng, s) for s in shapes]
    cmps = [_smooth_map(rng, s) for s in shapes]
    cmps[4][2, 2] = np.inf
    shared = PreparedMap(refs[0], settings, images[0])
    images[7], refs[7] = images[0], refs[0]
    batch = compare_batch([shared, *refs[1:7], shared, *refs[8:]], cmps, settings, images=images)
    assert batch == [compare(r, c, settings, image=i) for r, c, i in zip(refs, cmps, images)]
    assert widest == 3


def test_a_compared_map_identical_to_its_reference_shares_its_forms(monkeypatch):
    """A compared map with its reference's bytes and input (step 0; a deterministic method's ceiling
    control) gets no forms of its own, and the scores of two separately prepared copies; one that
    differs only by -0.0 for 0.0, or explains another input, is prepared itself."""
    from harness.metrics import PreparedMap

    settings = MetricSettings(metrics=ALL_METRICS)
    rng = np.random.default_rng(23)
    images = [(rng.uniform(size=(16, 16, 1)) > 0.3).astype(float) for _ in range(4)]
    maps = np.stack([_smooth_map(rng, (16, 16, 1)) for _ in range(4)]).astype(np.float32)
    maps[:, 0, 0] = 0.0
    apart = [compare(PreparedMap(m, settings, i), PreparedMap(m.copy(), settings, i), settings, image=i)
             for m, i in zip(maps, images)]
    computed = _counting_forms(monkeypatch)
    refs = [PreparedMap(m, settings, i) for m, i in zip(maps, images)]
    assert compare_batch(refs, maps.copy(), settings, images=[i.copy() for i in images]) == apart
    assert computed["hog"] == 4 and computed["rank_abs"] == 4  # the references' own, once each

    computed.clear()
    other = maps.copy()
    other[0, 0, 0] = -0.0  # the same values, other bytes
    other_images = [i.copy() for i in images]
    other_images[1][0, 0] = 1.0 - other_images[1][0, 0]  # the same map, another input
    no_fg = MetricSettings(metrics=("spearman_abs", "hog"))
    compare_batch([PreparedMap(m, no_fg, i) for m, i in zip(maps, images)], other, no_fg, images=other_images)
    assert computed["hog"] == 4 + 2 and computed["rank_abs"] == 4 + 2  # 4 references; maps 0 and 1
