"""Figures like MATLAB's gradCAM segmentation example (harness.segmentation_figures, harness.report.segmentation)."""
import numpy as np
import pytest

from harness import segmentation
from harness.errors import HarnessError
from harness.report import segmentation as drawing
from harness.results import write_npz
from harness.segmentation import Reduction
from harness.segmentation_figures import explain

from conftest import wrap_keras
from test_segmentation import images, tiny_segmenter


@pytest.fixture
def model():
    """The tiny segmenter biased to background (the largest score of every image) and never class b."""
    keras_model = tiny_segmenter()
    kernel, _ = keras_model.get_layer("classifier").get_weights()
    keras_model.get_layer("classifier").set_weights([kernel, np.array([3.0, 0.0, -50.0], np.float32)])
    return segmentation.wrap(wrap_keras(keras_model, gradcam_endpoint="decoder_relu"), Reduction(),
                             class_names=["background", "a", "b"], background=0,
                             feature_layers=["decoder_relu", "conv2"])


def test_explained_arrays_are_the_largest_classes_grad_cams(model):
    x = images(3)
    data = explain(model, x, ["s0", "s1", "s2"], classes_per_image=2)
    assert data["maps"].shape == (3, 2, 2, 8, 8) and list(data["layers"]) == ["decoder_relu", "conv2"]
    assert (model.predict(x).argmax(axis=1) == 0).all() and (data["classes"] != 0).all()  # never the background
    scores = model.predict(x)
    for i in range(3):
        assert scores[i, data["classes"][i, 0]] >= scores[i, data["classes"][i, 1]]
        np.testing.assert_allclose(data["maps"][i], segmentation.gradcam(model, x[i:i + 1], data["classes"][i],
                                                                         ["decoder_relu", "conv2"])[0], rtol=1e-6)
    np.testing.assert_array_equal(data["predicted"], model.segment(x))


def test_figure_grid_and_legend(model, tmp_path):
    x = images(2)
    write_npz(tmp_path / "explained.npz", explain(model, x, ["s0", "s1"], classes_per_image=2))
    data = drawing.read(tmp_path / "explained.npz")
    figure = drawing.image_figure(data, 0)
    axes = figure.get_axes()
    assert len(axes) == 3 * 2  # a first row (image, overlay), then classes x layers
    legend = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == [data["class_names"][c] for c in np.unique(data["predicted"][0])] and "b" not in legend
    titles = [ax.get_title() for ax in axes[2:]]
    names = data["class_names"]
    assert titles[0] == f"{names[data['classes'][0, 0]]} @ decoder_relu" and titles[1].endswith("@ conv2")
    paths = drawing.figures(tmp_path / "explained.npz", tmp_path / "figures")
    assert [p.name for p in paths] == ["segmentation-gradcam-s0.png", "segmentation-gradcam-s1.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_a_file_without_the_arrays_is_one_clear_error(tmp_path):
    write_npz(tmp_path / "other.npz", {"images": np.zeros((1, 8, 8, 1))})
    with pytest.raises(HarnessError, match="is no segmentation explanation file: it lacks predicted, maps"):
        drawing.read(tmp_path / "other.npz")


def test_the_report_section_draws_every_explained_image(model, tmp_path):
    from harness.report.load import Experiment

    folder = tmp_path / "segmentation"
    write_npz(folder / drawing.EXPLAINED, explain(model, images(2), ["s0", "s1"]))
    blocks, figures = drawing.segmentation_section([Experiment("other", tmp_path / "other"),
                                                    Experiment("segmentation", folder)], tmp_path / "report")
    assert blocks[0].text == "Segmentation Grad-CAM" and [f.path for f in figures] == [
        "figures/segmentation-segmentation_gradcam-s0.png", "figures/segmentation-segmentation_gradcam-s1.png"]
    assert all((tmp_path / "report" / f.path).is_file() for f in figures) and figures[0] in blocks
    assert drawing.segmentation_section([Experiment("other", tmp_path / "other")], tmp_path / "report") == ([], [])


def test_reproduce_writes_the_explained_images_of_its_last_run(tmp_path):
    """harness.reproduce's hook: the run's model and data configs, at most data.count images."""
    from omegaconf import OmegaConf
    from skimage import io

    from harness import reproduce
    from harness.models.export import export_hub_style

    path = export_hub_style(tiny_segmenter(), tmp_path / "tiny_seg",
                            {"name": "tiny_seg", "input": {"size": [8, 8], "channels": 1}})
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images(3)):
        io.imsave(tmp_path / "images" / f"img{i}.png", (image[..., 0] * 255).astype(np.uint8), check_contrast=False)
    cfg = OmegaConf.create({
        "model": {"source": str(path), "output_layout": "segmentation", "gradcam_endpoint": "decoder_relu",
                  "segmentation": {"background": 0, "feature_layers": ["conv2"]}},
        "data": {"source": "folder", "path": str(tmp_path / "images"), "count": 2}})
    reproduce._segmentation_figures(tmp_path / "exp", cfg, {"count": 4, "classes": 1})
    data = drawing.read(tmp_path / "exp" / drawing.EXPLAINED)
    assert list(data["image_ids"]) == ["img0.png", "img1.png"] and data["maps"].shape == (2, 1, 2, 8, 8)
    assert list(data["layers"]) == ["decoder_relu", "conv2"]
