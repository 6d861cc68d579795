"""Saliency methods: equal to PAIR saliency.core where PAIR has the method, batched, compiled once.

References are PAIR's own classes over `harness.oracle.Reference`, the call_model_function a PAIR user
writes (plain tf.functions, none of the harness's batching, chunking or graph import). The built-in MNIST CNN is a SavedModel
loaded through tensorflow_hub; its Keras twin (same weights) gives the Keras path and the layer
values Grad-CAM's reference needs. The hand-derived Guided Backprop check lives in
tests/test_guided_machinery.py (test_guided_gradient_matches_hand_derivation).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import saliency.core as pair
import tensorflow as tf
import yaml

from harness import methods, runner
from harness.config import CONFIG_DIR, group_defaults
from harness.errors import HarnessError
from harness.methods.cam import upsample
from harness.models.keras_guided import keras_endpoint_model as endpoint_model
from harness.oracle import Reference, mnist_keras_twin, pair_core, pair_map
from harness.methods.smoothgrad import draw_noise, noise_sigma
from harness.schedules import Randomizer, Reinit, schedule_steps

from conftest import CHEAP_CNN, tiny_cnn, wrap_keras
from model_states import loaded, states
from test_cli import config

ALL = set(methods.names())


def quick(name: str) -> dict:
    """The method's registered quick settings (for tests that only need it to run)."""
    return dict(methods.spec(name).quick)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run(name, subject, params=None, seed=0, rows=slice(None)):
    return methods.get(name)(subject.model, subject.x[rows], subject.t[rows], np.random.default_rng(seed),
                             {"gradcam_endpoint": subject.endpoint, **(params or {})})


def pair_maps(subject, explain) -> np.ndarray:
    """explain(image, call_model_function, call_model_args) per image, stacked [n, H, W, C]."""
    maps = [explain(xi, subject.ref.call_model_function, {"target": int(ti)}) for xi, ti in zip(subject.x, subject.t)]
    return np.stack([m if m.ndim == 3 else m[..., None] for m in maps]).astype(np.float32)


def replay_noise(monkeypatch, noise: np.ndarray, sigmas: np.ndarray) -> None:
    """Make PAIR's GetSmoothedMask draw `noise` ([images, samples, ...], the harness's draw) in order."""
    samples = iter(noise.reshape(-1, *noise.shape[2:]))
    scales = iter(np.repeat(sigmas, noise.shape[1]))

    def normal(loc, scale, size):
        assert loc == 0 and np.isclose(scale, next(scales), rtol=1e-6)
        drawn = next(samples)
        assert drawn.shape == tuple(size)
        return drawn
    monkeypatch.setattr(np.random, "normal", normal)


def subject(model, x, ref, endpoint, **extra):
    return SimpleNamespace(model=model, x=x, t=np.argmax(model.predict(x), 1).astype(np.int32), ref=ref,
                           endpoint=endpoint, **extra)


@pytest.fixture(scope="module")
def cnn():
    """The built-in CNN through hub, 3 MNIST test images, and the PAIR user's reference."""
    from harness.data import load_images
    from harness.models import load_model

    model = load_model({"source": CHEAP_CNN}, log=lambda _: None)
    x = load_images({"source": "mnist", "count": 3}, (28, 28), 1).images
    twin = mnist_keras_twin(model)
    ref = Reference(model.logits, model.tensor_spec(), endpoint_model(twin, "conv2"))
    return subject(model, x, ref, "conv2", twin=twin)


@pytest.fixture(scope="module")
def state(request, cnn):
    """The CNN subject in the model state `request.param` (tests/model_states.py), on the same images:
    the tests that hold a method equal to PAIR take it, so that they hold on more than the weights
    this machine trained."""
    if request.param == "trained":
        yield cnn
        return
    with loaded(request.param) as model:
        twin = mnist_keras_twin(model)
        ref = Reference(model.logits, model.tensor_spec(), endpoint_model(twin, "conv2"))
        yield subject(model, cnn.x, ref, "conv2", twin=twin)


@pytest.fixture(scope="module")
def cnn_keras(cnn):
    """The same network as a Keras model (the Keras path of every method)."""
    return subject(wrap_keras(cnn.twin), cnn.x, cnn.ref, "conv2")


def gap_model(seed: int = 5):
    """A small Keras CNN ending in GlobalAveragePooling2D -> Dense (what CAM needs), 28x28x1."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="gap_net")


# -- registry and configs ----------------------------------------------------------------------------
def test_every_config_is_a_registered_method_whose_defaults_it_holds():
    files = sorted((CONFIG_DIR / "method").glob("*.yaml"))
    assert {f.stem for f in files} == set(methods.names()) and len(files) >= 14
    for file in files:
        config = yaml.safe_load(file.read_text())
        assert config.pop("name") == file.stem
        assert methods.defaults(file.stem) == config, file.name  # read from the file, not a copy


def test_registrations_count_the_work_of_each_method():
    def rows(name, **s):
        return methods.spec(name).rows(methods.defaults(name) | s, (28, 28, 1))
    assert rows("ig_smoothgrad", samples=3, steps=4) == (12, 0)
    assert rows("xrai", steps=5) == (10, 0)
    assert rows("occlusion", size=15, stride=1) == (0, 14 * 14 + 1)
    assert rows("guided_gradcam") == (2, 0) and rows("gradient") == (1, 0) and rows("cam") == (0, 1)
    assert rows("edge_detector") == (0, 0) and rows("random_attribution") == (0, 0)  # no model involved
    assert {m for m in ALL if methods.spec(m).reference is None} == {"guided_backprop", "guided_gradcam", "cam",
                                                                     "edge_detector", "random_attribution"}
    assert {m for m in ALL if methods.spec(m).stochastic} == {"smoothgrad", "vargrad", "ig_smoothgrad",
                                                              "random_attribution"}


# XRAI's map is a greedy choice over its IG attribution, which a last-bit difference can flip: it is
# held to PAIR in two parts instead (test_xrai_is_pairs_ranking_of_pairs_attribution_and_its_ig_is_pairs).
PAIR_MAPS = sorted(m for m in ALL if methods.spec(m).reference and not methods.spec(m).stochastic and m != "xrai")


@pytest.mark.smoke
@pytest.mark.parametrize("state", states(), indirect=True)
@pytest.mark.parametrize("name", PAIR_MAPS)
def test_every_method_with_a_pair_reference_equals_it_at_its_quick_settings(state, name):
    # Catches a registered PAIR call that is not the method (another baseline, magnitude, window...):
    # the benchmark's agreement column relies on it. PAIR runs at its own defaults, one row a model
    # call, and so does the harness here: a gradient at near-tied max-pools (a blurred or flat image)
    # follows the rows that share its call (on the amd_epyc state, Blur IG with all 12 rows in one
    # call was 7 % off PAIR's, 1e-7 with one row a call). Blur IG's strongest blurs are near-flat
    # images, whose max-pools also follow the last bits of the blur (PAIR's differ): 4e-3 on one
    # image of the trained state.
    s = methods.defaults(name) | quick(name)
    expected = np.stack([pair_map(name, s, state.ref.call_model_function, xi, ti) for xi, ti in zip(state.x, state.t)])
    assert rel(run(name, state, quick(name) | {"max_batch": 1}), expected) < (1e-2 if name == "blur_ig" else 1e-5)


TINY_METHOD = '''
import numpy as np
from harness.methods import register
from harness.methods.kernels import input_gradients


@register("{name}", reference=lambda pair, x, cmf, args, s: s["scale"] * pair.GradientSaliency().GetMask(x, cmf, args),
          quick={{"scale": 0.5}})
def scaled_gradient(model, x, targets, rng, s):
    return s["scale"] * input_gradients(model, x, targets, s["output"], s["max_batch"])
'''


def test_adding_a_method_is_one_file_plus_one_config(cnn, tmp_path, monkeypatch):
    import sys

    from harness import config

    name = "scaled_gradient_for_a_test"
    package = tmp_path / "methods"
    package.mkdir()
    (package / f"{name}.py").write_text(TINY_METHOD.format(name=name))
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / f"{name}.yaml").write_text(
        f"name: {name}\nscale: 2.0\noutput: logit\nmax_batch: auto\n")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path / "conf")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(package)])
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(methods, "_SPECS", dict(methods._SPECS))
    monkeypatch.delitem(sys.modules, f"harness.methods.{name}", raising=False)
    try:
        assert name in methods.names() and methods.defaults(name) == {"scale": 2.0, "output": "logit",
                                                                       "max_batch": "auto"}
        np.testing.assert_array_equal(run(name, cnn), 2.0 * run("gradient", cnn))
        np.testing.assert_array_equal(run(name, cnn, quick(name)), 0.5 * run("gradient", cnn))
        expected = np.stack([pair_map(name, methods.defaults(name), cnn.ref.call_model_function, xi, ti)
                             for xi, ti in zip(cnn.x, cnn.t)])
        assert rel(run(name, cnn), expected) < 1e-5
        with pytest.raises(HarnessError, match=f"unknown setting.*scal.*{name}"):
            run(name, cnn, {"scal": 1.0})
    finally:
        sys.modules.pop(f"harness.methods.{name}", None)


def test_a_method_without_a_config_is_one_clear_error(tmp_path, monkeypatch):
    from harness import config

    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    with pytest.raises(HarnessError, match="method nameless has no config: add .*method/nameless.yaml"):
        methods.register("nameless")


@pytest.mark.parametrize("name, params, message", [
    ("smoothgrad", {"sample": 3}, "unknown setting.*sample.*smoothgrad"),
    ("gradient", {"output": "softmax"}, "unknown output 'softmax'"),
    ("integrated_gradients", {"baseline": "white"}, "unknown baseline 'white'"),
    ("integrated_gradients", {"rule": "trapezoid", "steps": 1}, "steps must be >= 2"),
    ("occlusion", {"size": 40}, "size <= image side 28"),
    ("guided_backprop", {"graph_mode": "thawed"}, "unknown graph_mode 'thawed'"),
    ("gradcam", {"endpoint": "conv9"}, "unknown endpoint 'conv9'"),
    ("cam", {}, "cam needs a Keras model.*SavedModel"),
    ("gradient", {"max_batch": 0}, "max_batch must be 'auto' or an integer >= 1"),
])
def test_bad_settings_are_one_clear_error(cnn, name, params, message):
    with pytest.raises(HarnessError, match=message):
        run(name, cnn, params, rows=slice(1))


def test_auto_max_batch_bounds_the_input_values_per_call():
    assert methods.rows_per_call("auto", (28, 28, 1)) == 256
    assert methods.rows_per_call("auto", (299, 299, 3)) == 15
    assert methods.rows_per_call("auto", (2048, 2048, 3)) == 4
    assert methods.rows_per_call(7, (299, 299, 3)) == 7


def test_a_compiled_kernel_names_images_of_the_wrong_size(cnn):
    # Kernels check the shape before the tf.function does (backends.compile_counted), to name it in our terms.
    for kernel in (cnn.model.backend.gradient_kernel(cnn.model, "logit"),
                   cnn.model.backend.guided_kernel(cnn.model, "logit", "live", "guided_backprop")):
        with pytest.raises(ValueError, match=r"input of shape \[1, 30, 30, 1\]; it takes \[None, 28, 28, 1\]"):
            kernel(np.zeros((1, 30, 30, 1), np.float32), np.zeros(1, np.int32))
        assert kernel(cnn.x[:1], np.zeros(1, np.int32)).shape == (1, 28, 28, 1)


def test_models_without_what_a_method_needs_fail_clearly(images8):
    plain = wrap_keras(tiny_cnn())
    targets = np.zeros(len(images8), np.int32)
    with pytest.raises(HarnessError, match="GlobalAveragePooling2D -> Dense"):
        methods.get("cam")(plain, images8, targets, None, {})
    with pytest.raises(HarnessError, match="needs an endpoint"):
        methods.get("gradcam")(plain, images8, targets, None, {"gradcam_endpoint": None})
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    tanh = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(
        keras.layers.Conv2D(2, 3, activation="tanh")(inputs))), name="tanh_net")
    with pytest.raises(HarnessError, match="no ReLU"):
        methods.get("guided_backprop")(wrap_keras(tanh), images8, targets, None, {})


# -- equal to PAIR -----------------------------------------------------------------------------------
@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
def test_gradient_is_pair_gradient(state):
    expected = pair_maps(state, lambda x, f, a: pair.GradientSaliency().GetMask(x, f, a))
    for i in range(len(state.x)):  # same rows, same ops: bit-identical
        np.testing.assert_array_equal(run("gradient", state, rows=slice(i, i + 1))[0], expected[i])
    assert rel(run("gradient", state), expected) < 1e-6  # batched: float reassociation only
    np.testing.assert_allclose(run("gradient_x_input", state), state.x * run("gradient", state), rtol=1e-6)


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
@pytest.mark.parametrize("squared", [False, True])
def test_smoothgrad_is_pair_smoothgrad_with_the_same_noise(state, monkeypatch, squared):
    params = {"samples": 10, "spread": 0.15, "squared": squared, "max_batch": 7}  # chunks cut images
    maps = run("smoothgrad", state, params, seed=3)
    noise = draw_noise(np.random.default_rng(3), state.x, 10, 0.15)
    replay_noise(monkeypatch, noise, noise_sigma(state.x, 0.15))
    expected = pair_maps(state, lambda x, f, a: pair.GradientSaliency().GetSmoothedMask(
        x, f, a, stdev_spread=0.15, nsamples=10, magnitude=squared))
    assert rel(maps, expected) < 1e-5


def test_noise_comes_only_from_the_rng_and_not_from_the_chunking(cnn):
    first = run("smoothgrad", cnn, {"samples": 8}, seed=11)
    np.testing.assert_array_equal(first, run("smoothgrad", cnn, {"samples": 8}, seed=11))
    assert rel(run("smoothgrad", cnn, {"samples": 8, "max_batch": 3}, seed=11), first) < 1e-6
    assert rel(run("smoothgrad", cnn, {"samples": 8}, seed=12), first) > 1e-2


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
def test_vargrad_is_the_variance_of_the_noisy_gradients(state):
    noise = draw_noise(np.random.default_rng(4), state.x, 6, 0.15)
    noisy = (state.x[:, None] + noise).reshape(-1, *state.x.shape[1:])
    grads = state.ref.gradient(tf.constant(noisy), tf.constant(np.repeat(state.t, 6))).numpy()
    expected = grads.reshape(len(state.x), 6, *state.x.shape[1:]).var(axis=1)
    assert rel(run("vargrad", state, {"samples": 6}, seed=4), expected) < 1e-5


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
@pytest.mark.parametrize("baseline, value", [("zeros", 0.0), ("gray", 0.5), ("constant", 0.25)])
def test_integrated_gradients_is_pair_ig(state, baseline, value):
    # One image's path per call on both sides: gradients can depend on the batch composition
    # (oneDNN picks kernels by batch size; near-tied max-pools then route differently).
    maps = run("integrated_gradients", state, {"steps": 20, "baseline": baseline, "baseline_value": value,
                                                "max_batch": 20})
    expected = pair_maps(state, lambda x, f, a: pair.IntegratedGradients().GetMask(
        x, f, a, x_baseline=np.full_like(x, value), x_steps=20, batch_size=20))
    assert rel(maps, expected) < 1e-4


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
def test_trapezoid_rule_weighs_the_ends_by_half(state):
    x, t = state.x, tf.constant(state.t)
    ends = state.ref.gradient(tf.zeros_like(x), t).numpy() + state.ref.gradient(tf.constant(x), t).numpy()
    maps = run("integrated_gradients", state, {"steps": 2, "rule": "trapezoid"})
    assert rel(maps, x * ends / 2) < 1e-6


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
def test_blur_baseline_is_the_blurred_image(state):
    from scipy import ndimage

    maps = run("integrated_gradients", state, {"steps": 5, "baseline": "blur", "blur_sigma": 3.0, "max_batch": 5})
    expected = pair_maps(state, lambda x, f, a: pair.IntegratedGradients().GetMask(
        x, f, a, x_baseline=ndimage.gaussian_filter(x, sigma=(3, 3, 0), mode="nearest"), x_steps=5, batch_size=5))
    assert rel(maps, expected) < 1e-4


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
def test_ig_smoothgrad_is_pair_smoothed_ig_with_the_same_noise(state, monkeypatch):
    maps = run("ig_smoothgrad", state, {"samples": 4, "steps": 10, "max_batch": 16}, seed=5)
    noise = draw_noise(np.random.default_rng(5), state.x, 4, 0.15)
    replay_noise(monkeypatch, noise, noise_sigma(state.x, 0.15))
    expected = pair_maps(state, lambda x, f, a: pair.IntegratedGradients().GetSmoothedMask(
        x, f, a, stdev_spread=0.15, nsamples=4, magnitude=False, x_steps=10, x_baseline=np.zeros_like(x),
        batch_size=10))
    assert rel(maps, expected) < 1e-4


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
@pytest.mark.parametrize("path", ["hub", "keras"])
def test_gradcam_is_pair_gradcam(state, path):
    model = state.model if path == "hub" else wrap_keras(state.twin)
    expected = pair_maps(state, lambda x, f, a: pair.GradCam().GetMask(x, f, a, three_dims=False))
    assert rel(run("gradcam", SimpleNamespace(**{**vars(state), "model": model})), expected) < 1e-5


def test_upsampling_is_skimage_resize_as_pair_calls_it():
    from skimage.transform import resize

    maps = np.random.default_rng(0).normal(size=(2, 7, 5)).astype(np.float32)
    expected = np.stack([resize(m, (28, 20)) for m in maps])
    np.testing.assert_allclose(upsample(maps, (28, 20), normalize=False), expected, atol=1e-6)
    assert np.abs(tf.image.resize(maps[..., None], (28, 20)).numpy()[..., 0] - expected).max() > 1e-2


@pytest.mark.parametrize("state, value", [  # PAIR's occlusion at stride 1: ~8 s a state
    ("trained", 0.0), ("trained", 0.5), ("reinit1", 0.5), *(pytest.param(n, v, marks=pytest.mark.slow)
                                                         for n, v in (("reinit1", 0.0), ("reinit2", 0.0), ("reinit2", 0.5)))],
    indirect=["state"])
def test_occlusion_at_stride_1_is_pair_occlusion(state, value):
    maps = run("occlusion", state, {"size": 11, "value": value})
    expected = pair_maps(state, lambda x, f, a: pair.Occlusion().GetMask(x, f, a, size=11, value=value))
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_occlusion_strided_windows_cover_the_border_and_mean_divides_by_coverage(cnn):
    from harness.methods.occlusion import window_starts

    assert window_starts(28, 9, 4) == [0, 4, 8, 12, 16, 19]
    summed = run("occlusion", cnn, {"size": 9, "stride": 4, "value": 0.5})  # MNIST corners are 0 already
    mean = run("occlusion", cnn, {"size": 9, "stride": 4, "value": 0.5, "aggregate": "mean"})
    assert np.all(summed[:, -1, -1] != 0) and np.all(summed[:, 0, 0] != 0)
    np.testing.assert_allclose(mean[:, 0, 0], summed[:, 0, 0], rtol=1e-6)  # one window covers a corner
    np.testing.assert_allclose(mean[:, 4, 4], summed[:, 4, 4] / 4, rtol=1e-6)  # 2 x 2 windows cover (4, 4)


# -- XRAI, Blur IG, Guided IG: the harness's batched versions vs PAIR's per-image ones ---------------
@pytest.mark.smoke
@pytest.mark.parametrize("state", states(), indirect=True)
def test_xrai_is_pairs_ranking_of_pairs_attribution_and_its_ig_is_pairs(state, monkeypatch):
    # XRAI's map is a greedy choice of segments by the mean IG attribution of their new pixels, and a
    # choice between near-equal means follows the attribution's last bits, which differ between the
    # harness's IG and PAIR's (a float64 sum; other rows in a call, where batched): whole maps can
    # agree on one machine's weights and not on another's. So, at PAIR's defaults (one row a model
    # call) and quick settings: (b) the IG attribution XRAI ranks is PAIR's within float tolerance;
    # (a) given PAIR's own attribution, the map (segments, ranking, fill) is PAIR's, bit for bit.
    from saliency.core import xrai as pair_xrai

    from harness.methods import xrai

    pair_ig, harness_ig = pair_xrai.XRAI._get_integrated_gradients, xrai.attribution
    per_baseline, ranked = [], []

    def pair_spy(self, *args, **kwargs):
        per_baseline.append(pair_ig(self, *args, **kwargs))
        return per_baseline[-1]

    def harness_spy(*args):
        ranked.append(harness_ig(*args))
        return ranked[-1]
    monkeypatch.setattr(pair_xrai.XRAI, "_get_integrated_gradients", pair_spy)
    for algorithm in ("full", "fast"):
        s = methods.defaults("xrai") | quick("xrai") | {"algorithm": algorithm, "max_batch": 1}
        per_baseline.clear()
        expected = np.stack([pair_map("xrai", s, state.ref.call_model_function, xi, ti)
                             for xi, ti in zip(state.x, state.t)])
        pairs = np.stack([np.mean(ig, axis=0).max(axis=-1) for ig in per_baseline])  # as PAIR's GetMask
        monkeypatch.setattr(xrai, "attribution", harness_spy)
        assert run("xrai", state, s).shape == state.x.shape
        assert rel(ranked[-1], pairs) < 1e-5  # (b)
        monkeypatch.setattr(xrai, "attribution", lambda *_: pairs)
        np.testing.assert_array_equal(run("xrai", state, s), expected)  # (a)


def small_photo(shape=(56, 72)) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    return (resize(data.astronaut(), shape, preserve_range=True) / 127.5 - 1).astype(np.float32)


def test_xrai_segments_are_pairs_masks_and_are_cached_by_image(monkeypatch):
    from saliency.core import xrai as pair_xrai

    from harness.methods import segments

    for image in (small_photo(), small_photo()[..., :1], small_photo((40, 31))):
        expected = pair_xrai._get_segments_felzenszwalb(image)
        masks = segments.felzenszwalb_masks(image)
        assert len(masks) == len(expected)
        for mask, want in zip(masks, expected):
            np.testing.assert_array_equal(mask, np.flatnonzero(want))
    segments.cache_clear()
    calls = []
    monkeypatch.setattr(segments, "felzenszwalb_masks", lambda im: calls.append(1) or [np.arange(3)])
    image = small_photo()
    first = segments.masks_of(image)
    assert segments.masks_of(image.copy()) is first and len(calls) == 1  # same bytes: cached
    segments.masks_of(image + 1e-3)
    assert len(calls) == 2 and segments.cache_size() == 2
    segments.cache_clear()
    assert segments.cache_size() == 0


def test_xrai_ranking_is_pairs_bit_for_bit():
    from saliency.core import xrai as pair_xrai

    from harness.methods import segments, xrai

    image = small_photo()
    dense = pair_xrai._get_segments_felzenszwalb(image)
    masks = segments.felzenszwalb_masks(image)
    rng = np.random.default_rng(3)
    for attr in (rng.normal(size=image.shape[:2]), np.round(rng.normal(size=image.shape[:2]), 1)):  # + ties
        attr = attr.astype(np.float32)
        np.testing.assert_array_equal(xrai.rank_full(attr, masks), pair_xrai.XRAI._xrai(attr, dense)[0])
        np.testing.assert_array_equal(xrai.rank_fast(attr, masks), pair_xrai.XRAI._xrai_fast(attr, dense)[0])


def test_xrai_segments_each_image_once_across_randomization_steps(cnn, monkeypatch):
    from harness.methods import segments

    segments.cache_clear()
    calls = []
    original = segments.felzenszwalb_masks
    monkeypatch.setattr(segments, "felzenszwalb_masks", lambda im: calls.append(1) or original(im))
    before = run("xrai", cnn, {"steps": 2})
    with Randomizer(cnn.model, Reinit()).step(schedule_steps("cascading", [b.name for b in cnn.model.blocks])[2]):
        randomized = run("xrai", cnn, {"steps": 2})
    assert len(calls) == len(cnn.x) and rel(randomized, before) > 1e-3


def test_xrai_segments_alongside_the_model_on_an_accelerator_with_the_same_map(cnn, monkeypatch):
    from harness.methods import segments, xrai

    in_turn = run("xrai", cnn, {"steps": 2})
    monkeypatch.setattr(xrai, "on_accelerator", lambda: True)
    segments.cache_clear()
    np.testing.assert_array_equal(run("xrai", cnn, {"steps": 2}), in_turn)
    assert segments.cache_size() == len(cnn.x)


def pair_blur_ig(subject, dtype, **settings):
    return pair_maps(subject, lambda x, f, a: pair.BlurIG().GetMask(x.astype(dtype), f, a, batch_size=1, **settings))


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
@pytest.mark.parametrize("settings", [{"steps": 6, "max_sigma": 3.0}, {"steps": 5, "max_sigma": 4.0, "sqrt": True}])
def test_blur_ig_is_pair_blur_ig(state, settings):
    maps = run("blur_ig", state, settings)
    # PAIR in float64 (its float32 derivative, a difference of two blurred float32 images divided by
    # grad_step, carries ~1e-5 relative rounding noise; the harness forms it without cancellation).
    assert rel(maps, pair_blur_ig(state, np.float64, **settings)) < 1e-5
    assert rel(maps, pair_blur_ig(state, np.float32, **settings)) < 1e-4


def test_path_sums_add_each_row_to_its_image_in_parts_of_bounded_size(monkeypatch):
    from harness.methods import integrated

    rows = np.random.default_rng(5).normal(size=(7, 4, 3, 2))
    image = np.array([0, 0, 0, 2, 2, 3, 3])
    total, expected = np.ones((4, 4, 3, 2)), np.ones((4, 4, 3, 2))
    np.add.at(expected, image, rows)
    monkeypatch.setattr(integrated, "WORK_VALUES", 48)  # two rows of 24 values a part
    parts = integrated.row_parts(len(rows), rows.shape[1:])
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    for part in parts:
        integrated.add_by_image(total, image[part], rows[part])
    np.testing.assert_allclose(total, expected, rtol=1e-12)
    assert integrated.row_parts(3, (10 ** 6,)) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # at least a row


def test_blur_path_is_scipys_gaussian_filter_and_its_sigma_difference():
    from scipy import ndimage

    from harness.methods.blur_ig import blur_points

    image = np.random.default_rng(4).uniform(-1, 1, size=(21, 34, 3))
    sigmas, step = np.array([0.0, 0.4, 2.5, 9.0, 40.0]), 0.01  # 40: the kernel is wider than the image
    blurred, derivative = blur_points(image, sigmas, step)

    def blur(sigma):
        return ndimage.gaussian_filter(image, [sigma, sigma, 0], mode="constant") if sigma else image
    for k, sigma in enumerate(sigmas):
        assert rel(blurred[k], blur(sigma)) < 1e-6
        expected = (blur(sigma + step) - blur(sigma)) / step
        assert np.abs(derivative[k] - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1e-3), sigma


@pytest.mark.parametrize("state", states("trained", "reinit1", "reinit2"), indirect=True)
@pytest.mark.parametrize("settings", [{"steps": 6}, {"steps": 9, "fraction": 0.1, "max_dist": 0.3, "baseline": "gray"}])
def test_guided_ig_is_pair_guided_ig(state, settings):
    # At the method's defaults (one image per gradient call, as PAIR's): catches a path step that is
    # not PAIR's, and gradients batched at the defaults (their rounding can move other features).
    pair_core()  # PAIR's Guided IG needs the NumPy 2 shim

    x = state.x.copy()
    x[1] = 0.5 if settings.get("baseline") == "gray" else 0.0  # an image equal to its baseline: map 0
    s = SimpleNamespace(**{**vars(state), "x": x})
    base = 0.5 if settings.get("baseline") == "gray" else 0.0
    expected = pair_maps(s, lambda xi, f, a: pair.GuidedIG().GetMask(
        xi, f, a, x_baseline=np.full_like(xi, base), x_steps=settings["steps"],
        fraction=settings.get("fraction", 0.25), max_dist=settings.get("max_dist", 0.02)))
    maps = run("guided_ig", s, settings)
    assert np.all(maps[1] == 0) and np.abs(expected).max() > 0
    assert rel(maps, expected) < 1e-5


def test_guided_ig_threads_do_not_change_the_map(cnn, monkeypatch):
    from harness.methods import guided_ig

    plain = run("guided_ig", cnn, {"steps": 5})
    monkeypatch.setattr(guided_ig, "PARALLEL_FEATURES", 1)  # path searches in worker threads
    np.testing.assert_array_equal(run("guided_ig", cnn, {"steps": 5}), plain)


def batch_coupled_cnn():
    """tiny_cnn(4) whose logits all get + 1e-3 x the batch mean of the images' pixel sums: the gradient
    of an image depends on how many images share its call (by 1e-3 / batch size on every pixel), as
    a batched kernel's rounding makes it depend on its batch-mates, but on any machine."""
    base = tiny_cnn(4)
    coupled = keras.layers.Lambda(lambda t: t[0] + 1e-3 * keras.ops.mean(keras.ops.sum(t[1], axis=(1, 2, 3))),
                                  name="batch_mean")([base.outputs[0], base.inputs[0]])
    return keras.Model(base.inputs[0], coupled, name="batch_coupled")


def test_guided_ig_is_pair_guided_ig_on_a_batch_coupled_model(images8):
    # Catches, on any machine: gradients of several images in one call at the defaults (PAIR asks for
    # one image a call, and this model's gradients depend on the number of images in a call).
    pair_core()  # PAIR's Guided IG needs the NumPy 2 shim

    keras_model = batch_coupled_cnn()
    model = wrap_keras(keras_model)
    s = subject(model, images8, Reference(lambda v: keras_model(v, training=False), model.tensor_spec()), None)
    expected = pair_maps(s, lambda xi, f, a: pair.GuidedIG().GetMask(xi, f, a, x_baseline=np.zeros_like(xi),
                                                                     x_steps=20))
    assert rel(run("guided_ig", s, {"steps": 20}), expected) < 1e-5


@pytest.mark.parametrize("which", ["mnist_cnn", "batch_coupled"])
def test_guided_ig_map_of_an_image_is_the_same_alone_and_in_any_group(cnn, images8, which):
    # Catches: Guided IG asking for the gradients of several images in one call at its defaults. Which
    # features a step moves flips with a gradient's last bits, so the map of an image would depend on
    # the images beside it (the trained CNN's batched gradients differ in their last bits from an image
    # alone; the coupled model's differ on any machine).
    if which == "mnist_cnn":
        model, x = cnn.model, np.concatenate([cnn.x, cnn.x[:, :, ::-1]])
    else:
        model, x = wrap_keras(batch_coupled_cnn()), images8
    t = np.argmax(model.predict(x), 1).astype(np.int32)

    def guided(rows):
        return methods.get("guided_ig")(model, x[rows], t[rows], None, {"steps": 20})
    together = guided(slice(None))
    assert np.abs(together).max() > 0
    np.testing.assert_array_equal(guided(slice(None, None, -1)), together[::-1])  # other order
    np.testing.assert_array_equal(guided(slice(1, 4)), together[1:4])  # other group
    for i in range(len(x)):
        np.testing.assert_array_equal(guided(slice(i, i + 1))[0], together[i])  # alone


def test_cam_is_the_class_weighted_feature_sum_upsampled():
    from skimage.transform import resize

    model = gap_model()
    wrapped = wrap_keras(model)
    x = np.random.default_rng(2).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    t = np.array([0, 3, 1], np.int32)
    features = keras.Model(model.inputs[0], model.get_layer("gap").input)(x).numpy()
    weights = model.get_layer("logits").kernel.numpy()[:, t]
    expected = np.stack([resize(f @ w, (28, 28)) for f, w in zip(features, weights.T)])
    maps = methods.get("cam")(wrapped, x, t, None, {})
    np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-6)
    # Grad-CAM on the pooled layer is ReLU(CAM), normalized, for a GAP -> Dense model.
    gradcam = methods.get("gradcam")(wrapped, x, t, None, {"endpoint": "conv2"})
    low = np.maximum(np.einsum("bhwk,kb->bhw", features, weights), 0)
    assert rel(gradcam[..., 0], upsample(low, (28, 28), normalize=True)) < 1e-5


def test_probability_output_is_the_softmax_gradient(cnn_keras):
    x, t = tf.constant(cnn_keras.x), cnn_keras.t
    with tf.GradientTape() as tape:
        tape.watch(x)
        picked = tf.gather(tf.nn.softmax(cnn_keras.model.keras_model(x)), t, batch_dims=1)
    assert rel(run("gradient", cnn_keras, {"output": "probability"}), tape.gradient(picked, x)) < 1e-5


# -- Guided Backprop -----------------------------------------------------------------------------------
def test_guided_backprop_keras_and_hub_agree_and_leave_the_gradient_alone(cnn, cnn_keras):
    before = [(s, run("gradient", s)) for s in (cnn, cnn_keras)]
    hub, via_keras = run("guided_backprop", cnn), run("guided_backprop", cnn_keras)
    assert rel(hub, via_keras) < 1e-5
    assert rel(hub, run("gradient", cnn)) > 0.1  # the gate matters
    for s, gradient in before:
        np.testing.assert_array_equal(run("gradient", s), gradient)  # bit-identical after the guided pass
    # Guided Grad-CAM's one kernel (guided and Grad-CAM passes in one call) = the two kernels apart.
    for s, guided in ((cnn, hub), (cnn_keras, via_keras)):
        np.testing.assert_allclose(run("guided_gradcam", s), guided * run("gradcam", s), rtol=1e-6, atol=1e-9)


def test_frozen_graph_mode_equals_live_and_follows_randomization(cnn):
    live = run("guided_backprop", cnn)
    frozen = run("guided_backprop", cnn, {"graph_mode": "frozen"})
    assert rel(frozen, live) < 1e-5
    traces = cnn.model.trace_counts["guided/logit/frozen"]
    randomizer = Randomizer(cnn.model, Reinit())
    with randomizer.step(schedule_steps("cascading", [b.name for b in cnn.model.blocks])[2]):
        live_random = run("guided_backprop", cnn)
        assert rel(run("guided_backprop", cnn, {"graph_mode": "frozen"}), live_random) < 1e-5
    assert cnn.model.trace_counts["guided/logit/frozen"] == traces + 1  # re-frozen once, then traced
    assert rel(run("guided_backprop", cnn, {"graph_mode": "frozen"}), live) < 1e-5  # and back


# -- randomization without retracing -------------------------------------------------------------------
# One method per kernel family (blur_ig stands for the path methods XRAI, Blur IG and Guided IG, which
# all use the gradient kernel; guided_gradcam has its own kernel, guided and Grad-CAM in one call).
FAMILIES = ["gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam",
            "occlusion", "blur_ig", "cam"]


@pytest.mark.parametrize("name, path", [(n, p) for n in FAMILIES for p in ("hub", "keras") if (n, p) != ("cam", "hub")])
def test_randomizing_a_block_changes_the_maps_without_a_retrace(cnn, cnn_keras, name, path):
    if name == "cam":  # Keras-only; on a GAP -> Dense model
        s = subject(wrap_keras(gap_model()), cnn.x, None, "conv2")
    else:
        s = cnn if path == "hub" else cnn_keras
    params = quick(name)
    before = run(name, s, params)
    traces = dict(s.model.trace_counts)
    step = schedule_steps("cascading", [b.name for b in s.model.blocks])[2]  # logits and the block below
    with Randomizer(s.model, Reinit()).step(step):
        randomized = run(name, s, params)
    assert dict(s.model.trace_counts) == traces
    assert rel(randomized, before) > 1e-3
    np.testing.assert_array_equal(run(name, s, params), before)  # the restore is exact


# -- end to end ------------------------------------------------------------------------------------------
def test_every_method_runs_through_the_runner(tmp_path):
    cfg = runner._plain(config("data.count=2", f"results_dir={tmp_path}", "progress=false",
                               "schedule=independent"))
    cfg["methods"] = [group_defaults("method", m) | quick(m) for m in sorted(ALL - {"cam"})]
    run_dir = runner.run(cfg, log=lambda _: None)
    scores = pd.read_csv(run_dir / "scores.csv")
    assert set(scores["method"]) == ALL - {"cam"}
    with np.load(run_dir / "maps.npz") as maps:
        for m in ALL - {"cam"}:
            assert maps[f"{m}/000"].shape == (2, 28, 28, 1) and np.isfinite(maps[f"{m}/004"]).all(), m
    traces = json.loads((run_dir / "run.json").read_text())["trace_counts"]
    assert traces and set(traces.values()) == {1}  # every kernel compiled once for all 5 model states


def test_cam_runs_through_the_runner_on_a_keras_file(tmp_path):
    path = tmp_path / "gap.keras"
    gap_model().save(path)
    cfg = config("model=keras_file", f"model.source={path}", "method=cam", "data.count=2",
                 f"results_dir={tmp_path}", "progress=false", "schedule=independent")
    scores = pd.read_csv(runner.run(cfg, log=lambda _: None) / "scores.csv")
    assert set(scores["method"]) == {"cam"} and scores["step"].max() == 3


# -- the same checks on a hub-style SavedModel of another architecture ----------------------------------
def exported(tmp_path_factory, model, value_range, endpoint):
    """(hub-loaded subject, Keras subject) of `model` exported hub-style, with the PAIR reference."""
    from harness.models import load_model
    from harness.models.export import export_hub_style

    path = export_hub_style(model, tmp_path_factory.mktemp("hub") / model.name)
    size = tuple(model.inputs[0].shape[1:3])
    hub = load_model({"source": str(path), "input": {"size": list(size), "channels": model.inputs[0].shape[-1],
                                                     "value_range": list(value_range)}}, log=lambda _: None)
    x = np.random.default_rng(8).uniform(*value_range, size=(2, *size, model.inputs[0].shape[-1])).astype(np.float32)
    ref = Reference(lambda v: model(v, training=False), hub.tensor_spec(), endpoint_model(model, endpoint))
    return subject(hub, x, ref, endpoint), subject(wrap_keras(model), x, ref, endpoint)


SCALES = [
    pytest.param(lambda: tiny_cnn(3), (0.0, 1.0), "conv2", {"samples": 5, "steps": 8}, id="tiny_cnn"),
    pytest.param(lambda: keras.applications.InceptionV3(weights=None, classifier_activation=None), (-1.0, 1.0),
                 "mixed10", {"samples": 2, "steps": 3}, id="inception_v3", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("build, value_range, endpoint, budget", SCALES)
def test_hub_savedmodel_methods_equal_pair(tmp_path_factory, monkeypatch, build, value_range, endpoint, budget):
    keras.utils.set_random_seed(7)
    hub, _ = exported(tmp_path_factory, build(), value_range, endpoint)
    samples, steps = budget["samples"], budget["steps"]
    expected = pair_maps(hub, lambda x, f, a: pair.GradientSaliency().GetMask(x, f, a))
    assert rel(run("gradient", hub), expected) < 1e-5
    expected = pair_maps(hub, lambda x, f, a: pair.IntegratedGradients().GetMask(
        x, f, a, x_steps=steps, batch_size=steps))
    assert rel(run("integrated_gradients", hub, {"steps": steps}), expected) < 1e-4
    expected = pair_maps(hub, lambda x, f, a: pair.GradCam().GetMask(x, f, a, three_dims=False))
    assert rel(run("gradcam", hub)[..., :1], expected) < 1e-5
    maps = run("smoothgrad", hub, {"samples": samples}, seed=9)
    replay_noise(monkeypatch, draw_noise(np.random.default_rng(9), hub.x, samples, 0.15), noise_sigma(hub.x, 0.15))
    expected = pair_maps(hub, lambda x, f, a: pair.GradientSaliency().GetSmoothedMask(
        x, f, a, nsamples=samples, magnitude=False))
    assert rel(maps, expected) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("build, value_range, endpoint", [
    (lambda: keras.applications.InceptionV3(weights=None, classifier_activation=None), (-1.0, 1.0), "mixed10"),
    (lambda: keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classifier_activation=None),
     (-1.0, 1.0), "out_relu"),
], ids=["inception_v3", "mobilenet_v2_relu6"])
def test_guided_backprop_keras_equals_hub_at_scale(tmp_path_factory, build, value_range, endpoint):
    keras.utils.set_random_seed(9)
    hub, via_keras = exported(tmp_path_factory, build(), value_range, endpoint)
    guided = run("guided_backprop", hub)
    assert rel(guided, run("guided_backprop", via_keras)) < 1e-5
    assert rel(guided, run("gradient", hub)) > 0.1
    assert rel(run("guided_gradcam", hub), run("guided_gradcam", via_keras)) < 1e-5


def test_a_model_known_only_by_its_forward_pass_runs_the_plain_methods_and_refuses_the_rest(images8):
    # A backend is one class: the base Backend has the plain kernels every model shares and no layers.
    from dataclasses import replace

    from harness.models.backends import Backend

    keras_model = wrap_keras(tiny_cnn())
    plain = replace(keras_model, backend=Backend(), trace_counts=type(keras_model.trace_counts)(), _compiled={})
    targets = np.zeros(len(images8), np.int32)
    np.testing.assert_array_equal(methods.get("gradient")(plain, images8, targets, None, {}),
                                  methods.get("gradient")(keras_model, images8, targets, None, {}))
    for name in ("guided_backprop", "gradcam"):
        with pytest.raises(HarnessError, match=f"method {name} needs a Keras model or a SavedModel; model tiny_cnn"):
            methods.get(name)(plain, images8, targets, None, {"gradcam_endpoint": "conv2"})
    with pytest.raises(HarnessError, match="cam needs a Keras model.*known only by its forward pass"):
        methods.get("cam")(plain, images8, targets, None, {})
