"""The built-in segmentation model: MNIST scenes, the small DeepLab, its training, export and IoU
(harness.zoo.scenes, harness.zoo.deeplab, harness.zoo.segmenter)."""
import json

import numpy as np
import pytest

from harness.zoo import deeplab, scenes, segmenter


def test_scenes_are_deterministic_and_labelled_by_their_strokes():
    x, y = scenes.make_scenes(12, "train")
    x2, y2 = scenes.make_scenes(12, "train")
    assert x.shape == (12, 64, 64, 1) and y.shape == (12, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert (x[..., 0][y > 0] > scenes.STROKE).all()        # every digit pixel is a stroke
    assert (x[..., 0][y == 0] <= 0.5).all()               # background never looks like one
    digits_per_scene = [len(set(np.unique(labels)) - {0}) for labels in y]
    assert min(digits_per_scene) >= 1 and max(digits_per_scene) <= 4
    held_out, _ = scenes.make_scenes(12, "held_out")
    assert not np.array_equal(held_out, x)


def test_mean_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    predicted = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    # class 0: 2 / 4; class 1: 3 / 4; class 2: 1 / 2; class 3 occurs nowhere (left out)
    mean, per_class = scenes.mean_iou(predicted, truth, classes=4)
    assert per_class[:3] == [0.5, 0.75, 0.5] and np.isnan(per_class[3])
    assert mean == pytest.approx((0.5 + 0.75 + 0.5) / 3)


def test_small_deeplab_names_the_matlab_feature_layers():
    model = deeplab.small_deeplab(11, width=8)
    names = {layer.name for layer in model.layers}
    assert {"aspp_concat", "decoder_relu", "enc4_relu", "classifier"} <= names
    assert tuple(model.outputs[0].shape[1:]) == (64, 64, 11)
    assert tuple(model.get_layer("aspp_concat").output.shape[1:3]) == (8, 8)      # 1/8
    assert tuple(model.get_layer("decoder_relu").output.shape[1:3]) == (16, 16)   # 1/4


def test_a_tiny_recipe_trains_exports_and_carries_its_iou(tmp_path, monkeypatch):
    """Training end to end at test size: the exported model loads as a segmentation model and its
    run record's metrics hold the held-out mean IoU the export measured."""
    from harness import zoo
    from harness.models import load_model
    from harness.segmentation import SegmentationModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    recipe = segmenter.SegRecipe(scenes=64, held_out=8, width=8, epochs=1, batch_size=16)
    monkeypatch.setitem(zoo.RECIPES, "tiny_seg", recipe)
    logged = []
    model = load_model({"source": "builtin:tiny_seg", "output_layout": "segmentation",
                        "gradcam_endpoint": "decoder_relu", "segmentation": {"background": 0}}, log=logged.append)
    assert isinstance(model, SegmentationModel) and model.num_classes == 11
    metrics = model.metadata["metrics"]
    assert 0 <= metrics["mean_iou"] <= 1 and metrics["train_seconds"] > 0 and metrics["steps"] == 4
    assert len(metrics["class_iou"]) == 11 and any("mean IoU" in line for line in logged)
    # the export measured the model it exported: the loaded model gives the same IoU
    x, y = scenes.make_scenes(8, "held_out")
    assert scenes.mean_iou(model.segment(x), y)[0] == pytest.approx(metrics["mean_iou"], abs=1e-6)
    saved = json.loads(next(tmp_path.glob("zoo/tiny_seg-*/harness.json")).read_text())
    assert saved["initializers"]["enc1_conv/kernel"]["kind"] == "variance_scaling"
    assert saved["segmentation"]["class_names"][0] == "background"
    before = len(logged)
    load_model({"source": "builtin:tiny_seg", "output_layout": "segmentation"}, log=logged.append)
    assert len(logged) == before  # cached: no second training


@pytest.mark.slow  # a ResNet50 built twice (~40 s on 2 busy cores)
def test_deeplabv3plus_resnet50_config_loads_with_random_weights():
    """The declared blocks, feature layers and classes are the model's; Grad-CAM reaches the MATLAB
    example's counterparts (input shrunk to 64x64 to keep the test short)."""
    from harness import segmentation
    from harness.config import group_defaults
    from harness.models import load_model

    cfg = group_defaults("model", "deeplabv3plus_resnet50")
    cfg["input"]["size"] = [64, 64]
    model = load_model(cfg, log=lambda _: None)
    assert model.num_classes == 11 and model.class_names[0] == "Sky" and model.background is None
    blocks = [b.name for b in model.blocks]  # in execution order
    assert sorted(blocks) == sorted(cfg["blocks"]["names"]) and (blocks[0], blocks[-1]) == ("conv1_conv", "classifier")
    assert model.feature_layers == ("decoder_relu", "aspp_concat", "conv4_block6_out")
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    assert model.pixel_logits(x).shape == (1, 64, 64, 11)
    maps = segmentation.gradcam(model, x, [3, 8], model.feature_layers)
    assert maps.shape == (1, 2, 3, 64, 64) and np.isfinite(maps).all()
    again = load_model(cfg, log=lambda _: None)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))  # the same random weights


def test_deeplabv3plus_bad_backbone_and_weights_are_clear_errors():
    from harness.errors import HarnessError
    from harness.models import load_model

    base = {"output_layout": "segmentation", "segmentation": {"class_names": ["a", "b"]}, "input": {"size": [64, 64]}}
    with pytest.raises(HarnessError, match=r"unknown DeepLab v3\+ backbone 'ResNet18'; valid: ResNet50, ResNet101"):
        load_model(base | {"source": "deeplabv3plus:ResNet18"})
    with pytest.raises(HarnessError, match=r"weights file 'missing.h5' does not exist"):
        load_model(base | {"source": "deeplabv3plus:ResNet50", "weights": "missing.h5"})


def test_the_scene_data_source_gives_held_out_scenes_with_their_largest_digit():
    from harness.data import load_images

    images = load_images({"source": "mnist_scenes", "count": 5}, (64, 64), 1)
    x, y = scenes.make_scenes(5, "held_out")
    np.testing.assert_array_equal(images.images, x)
    assert images.ids[0] == "mnist_scene_0000"
    for labels, label in zip(y, images.labels):
        counts = np.bincount(labels.ravel(), minlength=11)
        assert label >= 1 and counts[label] == counts[1:].max()


# Of the held-out scenes, the share where segmentation Grad-CAM at the last feature layer must be
# largest over the explained class's own pixels (measured: see docs/segmentation.md).
OWN_PIXELS_SHARE = 0.8


@pytest.mark.parametrize("source, min_iou", [
    # the quick snapshot (trained in about a minute; measured 0.93 of the scenes, mean IoU 0.32)
    ("builtin:mnist_seg@500", 0.2),
    # the full built-in model (about 8 minutes of training on first use; measured 1.00, IoU 0.69)
    pytest.param("builtin:mnist_seg", 0.6, marks=pytest.mark.slow),
])
def test_gradcam_at_the_last_feature_layer_is_largest_over_the_class_pixels(source, min_iou, monkeypatch):
    """For each held-out scene and the digit class with the most pixels: the mean Grad-CAM over that
    class's pixels exceeds its mean over the pixels of every other class in the scene (background
    and the other digits), in at least OWN_PIXELS_SHARE of the scenes; the model's mean IoU is at
    least `min_iou` (0.6 for the full model: the target the built-in model was built for).
    Catches: a reduction or Grad-CAM that does not localize the explained class (e.g. the gradient
    of another class's score, or a feature layer's map not upsampled to the input's grid)."""
    from harness import segmentation
    from harness.config import group_defaults
    from harness.models import load_model

    # The full model's 3,000 steps are beyond the test suite's HARNESS_ZOO_MAX_STEPS; this slow test
    # checks that model itself, so it lifts the limit for itself alone.
    monkeypatch.delenv("HARNESS_ZOO_MAX_STEPS", raising=False)
    model = load_model(group_defaults("model", "mnist_seg") | {"source": source}, log=print)
    assert model.metadata["metrics"]["mean_iou"] >= min_iou
    x, y = scenes.make_scenes(100, "held_out")
    classes = [int(np.bincount(m.ravel(), minlength=11)[1:].argmax() + 1) for m in y]
    wins = []
    for image, labels, c in zip(x, y, classes):
        cam = segmentation.gradcam(model, image[None], [c], ["decoder_relu"])[0, 0, 0]
        others = [cam[labels == k].mean() for k in np.unique(labels) if k != c]
        wins.append(cam[labels == c].mean() > max(others))
    share = float(np.mean(wins))
    print(f"{source}: Grad-CAM (decoder_relu) largest over the class's own pixels in {share:.0%} of 100 held-out scenes")
    assert share >= OWN_PIXELS_SHARE


TINY = segmenter.SegRecipe(scenes=64, held_out=8, width=8, epochs=2, batch_size=16, snapshots=(4,))


def _weights(path) -> list[np.ndarray]:
    import tensorflow as tf

    return [v.numpy() for v in sorted(tf.saved_model.load(str(path)).variables, key=lambda v: v.name)]


def test_a_snapshot_is_the_full_trainings_state_at_that_step(tmp_path, monkeypatch):
    """`NAME@STEPS` trained on its own equals the snapshot the full training exports on its way, and
    the full training differs from it. Catches: a learning-rate schedule that spans only the
    snapshot's steps, data order that depends on the number of epochs, or a snapshot exported at
    the wrong step."""
    from harness import zoo

    monkeypatch.setitem(zoo.RECIPES, "tiny_seg", TINY)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "full"))
    full = zoo.model_path("tiny_seg", log=lambda _: None)
    on_the_way = segmenter.snapshot_path("tiny_seg", TINY, 4)
    assert json.loads((on_the_way / "harness.json").read_text())["metrics"]["steps"] == 4
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "alone"))
    alone = zoo.model_path("tiny_seg@4", log=lambda _: None)
    assert not (segmenter.snapshot_path("tiny_seg", TINY, 8) / "saved_model.pb").exists()
    for a, b in zip(_weights(alone), _weights(on_the_way), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(full), _weights(alone)))


def test_snapshot_names_and_the_step_limit_are_clear_errors(monkeypatch):
    """A snapshot off an epoch boundary names the valid steps; under HARNESS_ZOO_MAX_STEPS (the test
    suite's 1,200) the full segmenter is refused, naming its quick snapshot, before any training.
    Catches: the suite training the full model (most of ten minutes), or a snapshot at a step the
    training never stops at."""
    from harness import zoo
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"'mnist_seg@300'.*multiples of 250 up to 3000"):
        zoo.model_path("mnist_seg@300")
    monkeypatch.setenv("HARNESS_ZOO_MAX_STEPS", "1200")
    with pytest.raises(HarnessError, match=r"mnist_seg@3000: more steps than HARNESS_ZOO_MAX_STEPS=1200.*mnist_seg@500"):
        zoo.model_path("mnist_seg")


def test_quick_names_are_cheap_snapshots_of_the_same_training():
    """Catches: --quick running the full segmenter or a 55,000-step default model."""
    from harness import zoo

    assert zoo.quick_name("mnist_seg", 1200) == "mnist_seg@500"
    assert zoo.quick_name("mnist_seg@250", 1200) == "mnist_seg@250"
    assert zoo.quick_name("mnist_cnn", 1200) == "mnist_cnn_authors@1200"
    assert zoo.quick_name("mnist_cnn_randlabels", 1200) == "mnist_cnn_randlabels"


@pytest.mark.slow  # a ResNet50 built twice and its weights written (~100 MB)
def test_deeplabv3plus_loads_a_local_weights_file(tmp_path):
    """Weights saved from `deeplab.deeplabv3plus` (model.save_weights) are the ones the config loads."""
    import keras

    from harness.config import group_defaults
    from harness.models import load_model

    cfg = group_defaults("model", "deeplabv3plus_resnet50")
    cfg["input"]["size"] = [64, 64]
    keras.utils.set_random_seed(7)  # other weights than the config's random ones
    trained = deeplab.deeplabv3plus(11, (64, 64, 3))
    trained.save_weights(tmp_path / "deeplab.weights.h5")
    model = load_model(cfg | {"weights": str(tmp_path / "deeplab.weights.h5")}, log=lambda _: None)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model.pixel_logits(x), trained.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    assert model.identity.endswith("deeplab.weights.h5")
