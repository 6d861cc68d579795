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
