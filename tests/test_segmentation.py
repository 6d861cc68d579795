"""Segmentation models through a reduction: the reduction by hand, Grad-CAM at feature layers,
the other gradient methods, and the clear errors (harness.segmentation)."""
import numpy as np
import pytest

from harness import methods, segmentation
from harness.errors import HarnessError
from harness.segmentation import Reduction

from conftest import wrap_keras

SIZE, CLASSES = 8, 3


def linear_segmenter():
    """A 1x1 conv with fixed weights: per-pixel logits = x @ W + b, computable by hand."""
    import keras

    x = inputs = keras.Input((SIZE, SIZE, 2), name="image")
    conv = keras.layers.Conv2D(CLASSES, 1, name="pixel_logits")
    model = keras.Model(inputs, conv(x), name="linear_segmenter")
    conv.set_weights([LINEAR_W[None, None], LINEAR_B])
    return model


LINEAR_W = np.array([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]], np.float32)
LINEAR_B = np.array([0.2, -0.1, 0.0], np.float32)


def tiny_segmenter(seed: int = 0):
    """conv -> conv (feature layers) -> 1x1 conv to per-pixel logits, 8x8x1 input."""
    import keras

    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="decoder_relu")(x)
    logits = keras.layers.Conv2D(CLASSES, 1, name="classifier")(x)
    return keras.Model(inputs, logits, name="tiny_segmenter")


def images(n=4, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, channels)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


MASK = np.zeros((SIZE, SIZE), np.float32)
MASK[2:5, 1:7] = 1


@pytest.mark.parametrize("scores", ["softmax", "logits"])
@pytest.mark.parametrize("pixels", ["all", "mask", "predicted"])
def test_reduction_equals_a_hand_computation(scores, pixels):
    x = images(3, channels=2)
    logits = x.astype(np.float64) @ LINEAR_W + LINEAR_B               # [b, H, W, classes], by hand
    values = softmax(logits) if scores == "softmax" else logits
    weights = {"all": np.ones_like(values), "mask": np.broadcast_to(MASK[None, :, :, None], values.shape),
               "predicted": np.eye(CLASSES)[logits.argmax(-1)]}[pixels]
    expected = (values * weights).sum(axis=(1, 2))
    reduction = Reduction(scores, pixels, MASK if pixels == "mask" else None)
    model = segmentation.wrap(wrap_keras(linear_segmenter()), reduction)
    assert model.num_classes == CLASSES
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.pixel_logits(x), logits, rtol=1e-5, atol=1e-5)


def test_gradient_of_the_reduced_logits_is_the_weights_times_the_pixels():
    """d/dx sum over masked pixels of logit_c = W[:, c] on the mask, 0 elsewhere (a linear model)."""
    model = segmentation.wrap(wrap_keras(linear_segmenter()), Reduction("logits", "mask", MASK))
    x = images(2, channels=2)
    maps = methods.get("gradient")(model, x, np.array([1, 2]), np.random.default_rng(0), {})
    expected = np.stack([MASK[:, :, None] * LINEAR_W[:, c] for c in (1, 2)])
    np.testing.assert_allclose(maps, expected, atol=1e-6)


def test_softmax_gradient_matches_finite_differences():
    model = segmentation.wrap(wrap_keras(linear_segmenter()), Reduction("softmax", "all"))
    x = images(1, channels=2)
    grad = methods.get("gradient")(model, x, np.array([0]), np.random.default_rng(0), {})[0]

    def score(z):
        return softmax(z.astype(np.float64) @ LINEAR_W + LINEAR_B)[..., 0].sum()

    eps, index = 1e-3, (3, 4, 1)
    up, down = x[0].astype(np.float64), x[0].astype(np.float64)
    up[index] += eps
    down[index] -= eps
    assert grad[index] == pytest.approx((score(up) - score(down)) / (2 * eps), rel=1e-3)


@pytest.fixture
def tiny_seg():
    return segmentation.wrap(wrap_keras(tiny_segmenter(), gradcam_endpoint="decoder_relu"),
                             Reduction("softmax", "predicted"), background=0,
                             feature_layers=["decoder_relu", "conv2"])


def test_several_classes_and_layers_in_one_call_equal_separate_calls(tiny_seg):
    x = images(3)
    together = segmentation.gradcam(tiny_seg, x, [0, 2, 1], ["decoder_relu", "conv2", "conv1"])
    assert together.shape == (3, 3, 3, SIZE, SIZE)
    gradcam = methods.get("gradcam")
    for i, c in enumerate([0, 2, 1]):
        for j, layer in enumerate(["decoder_relu", "conv2", "conv1"]):
            alone = gradcam(tiny_seg, x, np.full(3, c), np.random.default_rng(0),
                            {"endpoint": layer, "normalize": False})[..., 0]
            np.testing.assert_allclose(together[:, i, j], alone, rtol=1e-5, atol=1e-7)
    assert together.max() > 0


def test_gradcam_by_hand_on_the_feature_layer(tiny_seg):
    """Weights = spatial mean of the gradients of the reduced score; weighted sum; ReLU (same size)."""
    import keras
    import tensorflow as tf

    x = images(2)
    keras_model = tiny_seg.backend.keras_model
    probe = keras.Model(keras_model.inputs[0], [keras_model.get_layer("decoder_relu").output,
                                                keras_model.get_layer("classifier").output])
    with tf.GradientTape() as tape:
        features, logits = probe(x)
        predicted = tf.one_hot(tf.argmax(logits, -1), CLASSES)
        score = tf.reduce_sum(tf.nn.softmax(logits)[..., 2] * predicted[..., 2])
    grads = tape.gradient(score, features).numpy()
    expected = np.maximum((features.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    maps = segmentation.gradcam(tiny_seg, x, [2], ["decoder_relu"])[:, 0, 0]
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["gradient", "smoothgrad", "integrated_gradients", "guided_backprop",
                                  "guided_gradcam", "gradcam"])
def test_the_gradient_methods_explain_the_reduced_score(tiny_seg, name):
    spec = methods.spec(name)
    x = images(2)
    params = dict(spec.quick) | {"gradcam_endpoint": "decoder_relu"}  # as the runner adds it
    maps = spec.method(tiny_seg, x, np.array([1, 2]), np.random.default_rng(0), params)
    assert maps.shape == x.shape and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_a_classifier_given_a_reduction_is_one_clear_error():
    from conftest import tiny_cnn

    classifier = wrap_keras(tiny_cnn())
    with pytest.raises(HarnessError, match=r"outputs shape \[1, 3\], not per-pixel logits.*output_layout: classes"):
        segmentation.wrap(classifier, Reduction("logits"))
    with pytest.raises(HarnessError, match="output_layout classes.*reduction.*applies only to output_layout: "
                                           "segmentation"):
        segmentation.from_config(classifier, {"output_layout": "classes", "reduction": {"scores": "logits"}})
    with pytest.raises(HarnessError, match=r"unknown output_layout 'pixels'; valid: classes, segmentation"):
        segmentation.from_config(classifier, {"output_layout": "pixels"})


def test_segmentation_gradcam_of_a_classifier_or_a_wrong_mask_is_one_clear_error():
    from conftest import tiny_cnn

    with pytest.raises(HarnessError, match="model tiny_cnn is not a segmentation model"):
        segmentation.gradcam(wrap_keras(tiny_cnn()), images(1), [1], ["conv2"])
    with pytest.raises(HarnessError, match=r"reduction mask has shape \[4, 4\]; model tiny_segmenter outputs 8x8"):
        segmentation.wrap(wrap_keras(tiny_segmenter()), Reduction("softmax", "mask", np.ones((4, 4), np.float32)))


def test_bad_reduction_settings_name_the_valid_ones():
    with pytest.raises(HarnessError, match=r"reduction scores 'probits' unknown; valid: softmax, logits"):
        Reduction.from_config({"scores": "probits"})
    with pytest.raises(HarnessError, match=r"reduction pixels 'some' unknown; valid: all, predicted, mask"):
        Reduction.from_config({"pixels": "some"})
    with pytest.raises(HarnessError, match="pixels: mask needs a mask"):
        Reduction.from_config({"pixels": "mask"})


def test_a_feature_layer_that_does_not_exist_is_one_clear_error(tiny_seg):
    with pytest.raises(HarnessError, match=r"unknown layer 'decoder_rel' in model tiny_segmenter; "
                                           r"close matches: decoder_relu"):
        segmentation.gradcam(tiny_seg, images(1), [1], ["decoder_rel"])
    with pytest.raises(HarnessError, match=r"classes \[3\] of model tiny_segmenter: valid 0..2"):
        segmentation.gradcam(tiny_seg, images(1), [3])


def test_the_reduced_model_shares_the_networks_variables(tiny_seg):
    """Randomizing a block in place changes the reduced scores without a retrace."""
    x = images(2)
    before = tiny_seg.predict(x)
    block = tiny_seg.block("classifier")
    kernel = block.variables[0].variable
    saved = kernel.numpy()
    kernel.assign(np.zeros_like(saved))
    after = tiny_seg.predict(x)
    kernel.assign(saved)
    assert not np.allclose(before, after) and tiny_seg.trace_counts["logits"] == 1
    np.testing.assert_allclose(tiny_seg.predict(x), before)


@pytest.fixture
def seg_saved_model(tmp_path):
    from harness.models.export import export_hub_style

    keras_model = tiny_segmenter()
    path = export_hub_style(keras_model, tmp_path / "tiny_seg", {
        "name": "tiny_seg", "input": {"size": [SIZE, SIZE], "channels": 1, "value_range": [0.0, 1.0]}})
    return path, keras_model


SEG_CONFIG = {"output_layout": "segmentation", "gradcam_endpoint": "decoder_relu",
              "reduction": {"scores": "softmax", "pixels": "predicted"},
              "segmentation": {"background": 0, "class_names": ["background", "a", "b"]}}


def test_a_saved_model_through_its_config_equals_the_keras_model(seg_saved_model, tiny_seg):
    from harness.models import load_model

    path, _ = seg_saved_model
    model = load_model({"source": str(path)} | SEG_CONFIG, log=lambda _: None)
    assert isinstance(model, segmentation.SegmentationModel) and model.num_classes == CLASSES
    assert model.class_names == ("background", "a", "b") and model.feature_layers == ("decoder_relu",)
    x = images(2)
    np.testing.assert_allclose(model.predict(x), tiny_seg.predict(x), rtol=1e-5)
    for name in ("gradcam", "guided_backprop"):
        params = {"gradcam_endpoint": "decoder_relu", "normalize": False} if name == "gradcam" else {}
        saved, keras = (methods.get(name)(m, x, np.array([1, 2]), np.random.default_rng(0), params)
                        for m in (model, tiny_seg))
        np.testing.assert_allclose(saved, keras, rtol=1e-4, atol=1e-6)


def run_segmentation(saved_model, tmp_path, *overrides):
    from hydra import compose, initialize_config_dir
    from skimage import io

    from harness import runner
    from harness.config import CONFIG_DIR

    folder = tmp_path / "images"
    if not folder.is_dir():
        folder.mkdir()
        for i, image in enumerate(images(4)):
            io.imsave(folder / f"img{i}.png", (image[..., 0] * 255).astype(np.uint8), check_contrast=False)
    base = ["model=hub", f"model.source={saved_model}", "model.output_layout=segmentation",
            "model.gradcam_endpoint=decoder_relu", "model.segmentation={background: 0}", "data=folder",
            f"data.path={folder}", f"results_dir={tmp_path / 'r'}", "progress=false"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*base, *overrides])
    return runner.run(cfg, log=lambda _: None)


def test_cascading_randomization_of_a_segmentation_model(seg_saved_model, tmp_path):
    """A run's rows for a segmentation model; the explained class is never the background."""
    import json

    import pandas as pd

    path, _ = seg_saved_model
    run_dir = run_segmentation(path, tmp_path, "model.reduction={pixels: predicted}", "methods=[gradcam,gradient]")
    scores = pd.read_csv(run_dir / "scores.csv")
    assert set(scores["method"]) == {"gradcam", "gradient"}
    assert set(scores["block"]) >= {"classifier", "decoder_relu", "conv2", "conv1", "ceiling"}
    assert (scores["target_class"] != 0).all()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["model"]["reduction"] == {"pixels": "predicted"} and record["model"]["num_classes"] == 3


def test_the_map_cache_tells_reductions_apart(seg_saved_model, tmp_path):
    """Same weights, images, targets and method, another reduction: other maps, never the cached ones."""
    path, _ = seg_saved_model
    maps = []
    for scores in ("softmax", "logits"):
        run_dir = run_segmentation(path, tmp_path, f"model.reduction={{scores: {scores}}}", "target=original",
                                   "schedule=independent", "controls=[]")
        with np.load(run_dir / "maps.npz") as archive:
            maps.append(archive["gradient/000"])
    assert not np.allclose(maps[0], maps[1])
