"""Explain a segmentation model's images for figures like MATLAB's gradCAM segmentation example.

    python -m harness.segmentation_figures --out results/segmentation-figures            # mnist_seg
    python -m harness.segmentation_figures --model deeplabv3plus_resnet50 --data photos --count 2

Per image: the predicted segmentation and segmentation Grad-CAM of its `--classes` largest predicted classes
(not background) at every feature layer of the model config, into `<out>/explained.npz`; the figures
(harness.report.segmentation, drawn from that file alone) beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from harness.errors import HarnessError


def explain(model, images01: np.ndarray, ids: list[str], classes_per_image: int = 2) -> dict[str, np.ndarray]:
    """What harness.report.segmentation draws, for the images (in [0, 1]) of a SegmentationModel."""
    from harness import segmentation

    x = model.input_spec.to_model_space(images01)
    predicted = model.segment(x)
    scores = model.predict(x)
    if model.background is not None:
        scores[:, model.background] = -np.inf
    classes = np.argsort(-scores, axis=1)[:, :classes_per_image].astype(np.int32)
    maps = np.stack([segmentation.gradcam(model, x[i:i + 1], classes[i], model.feature_layers)[0]
                     for i in range(len(x))])
    return {"images": np.asarray(images01, np.float32), "predicted": predicted, "maps": maps, "classes": classes,
            "layers": np.array(model.feature_layers), "class_names": np.array(model.class_names),
            "colors": np.array(model.colors, np.float32), "image_ids": np.array(ids)}


def write(out: Path, model_cfg: dict, data_cfg: dict, count: int = 4, classes: int = 2) -> Path:
    """`out/explained.npz` for `count` images of a data config, explained on a segmentation model config."""
    from harness.data import load_images
    from harness.models import load_model
    from harness.results import write_npz
    from harness.segmentation import SegmentationModel

    model = load_model(model_cfg)
    if not isinstance(model, SegmentationModel):
        raise HarnessError(f"model {model.name} is not a segmentation model (output_layout: classes)")
    images = load_images(dict(data_cfg) | {"count": count}, model.input_spec.size, model.input_spec.channels)
    return write_npz(Path(out) / "explained.npz", explain(model, images.images, images.ids, classes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.segmentation_figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist_seg", help="a model config of conf/model/ (a segmentation model)")
    parser.add_argument("--data", default="mnist_scenes", help="a data config of conf/data/")
    parser.add_argument("--count", type=int, default=4, help="images")
    parser.add_argument("--classes", type=int, default=2, help="classes explained per image")
    parser.add_argument("--out", type=Path, default=Path("results/segmentation-figures"))
    args = parser.parse_args(argv)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()
    from harness.config import group_defaults
    from harness.report import segmentation as drawing

    try:
        explained = write(args.out, group_defaults("model", args.model), group_defaults("data", args.data),
                          args.count, args.classes)
        for path in drawing.figures(explained, args.out):
            print(path)
    except HarnessError as error:
        print(f"segmentation_figures: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
