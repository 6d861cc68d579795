"""Segmentation models: per-pixel class scores reduced to the one scalar per class every method explains.

`wrap` puts a *reduction* (softmax or logit scores, summed over all pixels, the predicted pixels of a
class, or a mask) after the network's `[b, H, W, classes]` output, so the wrapped model looks like a
classifier and shares the network's variables; `gradcam` computes segmentation Grad-CAM for several
classes and feature layers in one call. docs/segmentation.md tells the whole story.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from harness.errors import HarnessError
from harness.models.backends import KerasBackend
from harness.models.wrapper import ModelUnderTest

SCORES = ("softmax", "logits")
PIXELS = ("all", "predicted", "mask")
LAYOUTS = ("classes", "segmentation")


@dataclass(frozen=True)
class Reduction:
    """How per-pixel scores become one scalar per class (see the module doc)."""
    scores: str = "softmax"
    pixels: str = "all"
    mask: np.ndarray | None = field(default=None, compare=False)  # [H, W], for pixels: mask

    def __post_init__(self):
        if self.scores not in SCORES:
            raise HarnessError(f"reduction scores {self.scores!r} unknown; valid: {', '.join(SCORES)}")
        if self.pixels not in PIXELS:
            raise HarnessError(f"reduction pixels {self.pixels!r} unknown; valid: {', '.join(PIXELS)}")
        if (self.pixels == "mask") != (self.mask is not None):
            raise HarnessError("reduction: a mask goes with pixels: mask, and pixels: mask needs a mask "
                               f"(got pixels {self.pixels!r}, mask {'given' if self.mask is not None else 'none'})")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Reduction":
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - {"scores", "pixels", "mask"})
        if unknown:
            raise HarnessError(f"unknown reduction setting(s) {', '.join(unknown)}; valid: scores, pixels, mask")
        mask = cfg.get("mask")  # a .npy path or nested lists, [H, W]; nonzero = counted
        if isinstance(mask, (str, Path)):
            if not Path(mask).is_file():
                raise HarnessError(f"reduction mask file {str(mask)!r} does not exist (a .npy of [height, width])")
            mask = np.load(mask)
        if mask is not None:
            mask = np.asarray(mask, np.float32)
            if mask.ndim != 2:
                raise HarnessError(f"reduction mask has shape {list(mask.shape)}; it must be [height, width]")
            mask = (mask != 0).astype(np.float32)
        return cls(str(cfg.get("scores") or "softmax"), str(cfg.get("pixels") or "all"), mask)

    def key(self) -> dict[str, Any]:
        """What the explained scalar depends on besides the weights (the map cache's key)."""
        mask = None if self.mask is None else hashlib.sha256(self.mask.tobytes()).hexdigest()
        return {"scores": self.scores, "pixels": self.pixels, "mask": mask}


def reduce_scores(pixel_logits: tf.Tensor, reduction: Reduction) -> tf.Tensor:
    """[b, H, W, classes] per-pixel logits -> [b, classes]: the class's score summed over its pixels."""
    with tf.name_scope("pixel_reduction"):
        scores = tf.nn.softmax(pixel_logits, axis=-1) if reduction.scores == "softmax" else pixel_logits
        if reduction.pixels == "all":
            return tf.reduce_sum(scores, axis=[1, 2])
        if reduction.pixels == "predicted":
            # The prediction is a constant of the input: which pixels count is not differentiated.
            predicted = tf.argmax(tf.stop_gradient(pixel_logits), axis=-1)
            weights = tf.one_hot(predicted, tf.shape(pixel_logits)[-1], dtype=scores.dtype)
        else:
            weights = tf.constant(reduction.mask)[None, :, :, None]
        return tf.reduce_sum(scores * weights, axis=[1, 2])


@dataclass
class SegmentationModel(ModelUnderTest):
    """A segmentation network seen through its reduction: `logits(x)` is `[b, classes]` reduced
    scores; `pixel_logits(x)` the network's own `[b, H, W, classes]` output."""
    pixel_call: Callable[[tf.Tensor], tf.Tensor] | None = None
    reduction: Reduction = field(default_factory=Reduction)
    class_names: tuple[str, ...] = ()
    colors: tuple[tuple[float, float, float], ...] = ()   # RGB in [0, 1], one per class
    background: int | None = None                         # never the predicted target (runner)
    feature_layers: tuple[str, ...] = ()                  # Grad-CAM layers, the default one first

    def pixel_logits(self, x: np.ndarray, max_batch: int = 16) -> np.ndarray:
        fn = self.compiled("pixel_logits", lambda: tf.function(self._counted("pixel_logits", self.pixel_call),
                                                               input_signature=[self.tensor_spec()]))
        x = np.asarray(x, np.float32)
        return np.concatenate([fn(tf.constant(x[i:i + max_batch])).numpy() for i in range(0, len(x) or 1, max_batch)])

    def segment(self, x: np.ndarray) -> np.ndarray:
        """[b, H, W] predicted class of every pixel."""
        return np.argmax(self.pixel_logits(x), axis=-1).astype(np.int32)


# -- wrapping ---------------------------------------------------------------------------------------
def from_config(model: ModelUnderTest, cfg: Mapping[str, Any]) -> ModelUnderTest:
    """The model as its config declares it: unchanged for `output_layout: classes`, wrapped in its
    reduction for `output_layout: segmentation`. A reduction on a classifier is an error."""
    layout = cfg.get("output_layout") or "classes"
    if layout not in LAYOUTS:
        raise HarnessError(f"model {model.name}: unknown output_layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout == "classes":
        if cfg.get("reduction"):
            raise HarnessError(f"model {model.name} has output_layout classes ([batch, classes] logits), but a "
                               f"reduction {dict(cfg['reduction'])} is given; a reduction applies only to "
                               "output_layout: segmentation (per-pixel logits [batch, H, W, classes])")
        return model
    info = dict(cfg.get("segmentation") or {})
    unknown = sorted(set(info) - {"class_names", "colors", "background", "feature_layers"})
    if unknown:
        raise HarnessError(f"unknown segmentation setting(s) {', '.join(unknown)}; "
                           "valid: class_names, colors, background, feature_layers")
    default_layer = [cfg["gradcam_endpoint"]] if cfg.get("gradcam_endpoint") else []
    layers = default_layer + [name for name in info.get("feature_layers") or () if name not in default_layer]
    return wrap(model, Reduction.from_config(cfg.get("reduction")), class_names=info.get("class_names"),
                colors=info.get("colors"), background=info.get("background"), feature_layers=layers)


def wrap(model: ModelUnderTest, reduction: Reduction | None = None, class_names: Sequence[str] | None = None,
         colors: Sequence[Sequence[float]] | None = None, background: int | None = None,
         feature_layers: Sequence[str] | None = None) -> SegmentationModel:
    """`model` (per-pixel logits) seen through `reduction`; it shares the model's variables and blocks."""
    reduction = reduction or Reduction()
    probe = np.zeros((1, *(model.input_spec.size or (32, 32)), model.input_spec.channels), np.float32)
    shape = list(np.shape(model.call(tf.constant(probe))))
    if len(shape) != 4 or shape[-1] < 2:
        raise HarnessError(f"model {model.name} outputs shape {shape}, not per-pixel logits [batch, H, W, classes]: "
                           "it is no segmentation model; a reduction (output_layout: segmentation) applies only "
                           "to those (valid for this model: output_layout: classes, no reduction)")
    classes = shape[-1]
    if reduction.mask is not None and tuple(reduction.mask.shape) != tuple(shape[1:3]):
        raise HarnessError(f"reduction mask has shape {list(reduction.mask.shape)}; model {model.name} "
                           f"outputs {shape[1]}x{shape[2]} pixels")
    names = tuple(class_names or (f"class{k}" for k in range(classes)))
    if len(names) != classes:
        raise HarnessError(f"model {model.name} has {classes} classes but {len(names)} class_names")
    if not colors:  # black background, then matplotlib's tab20 colours
        from matplotlib import colormaps

        colors = [(0.0, 0.0, 0.0)] + [colormaps["tab20"](k % 20)[:3] for k in range(classes - 1)]
    palette = tuple(tuple(float(c) for c in rgb) for rgb in colors)
    if len(palette) != classes or any(len(c) != 3 for c in palette):
        raise HarnessError(f"model {model.name}: colors must be {classes} RGB triples, one per class")
    if background is not None and not 0 <= int(background) < classes:
        raise HarnessError(f"model {model.name}: background {background} is not a class; valid: 0..{classes - 1}")
    pixel_call = model.call
    backend = model.backend
    if isinstance(backend, KerasBackend):
        backend = KerasBackend(_reduced_keras_model(backend.keras_model, reduction))
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(ModelUnderTest)
              if f.init and f.name not in ("call", "backend", "trace_counts", "_compiled", "num_classes")}
    return SegmentationModel(
        **fields, num_classes=classes, call=lambda x: reduce_scores(pixel_call(x), reduction), backend=backend,
        pixel_call=pixel_call, reduction=reduction, class_names=names, colors=palette,
        background=None if background is None else int(background),
        feature_layers=tuple(feature_layers or ()))


def _reduced_keras_model(keras_model, reduction: Reduction):
    """The Keras model with the reduction as its last layer: the same layers (so Grad-CAM reaches
    every feature layer by name and Guided Backprop every ReLU) and the same variables."""
    import keras

    class PixelReduction(keras.layers.Layer):
        def call(self, pixel_logits):
            return reduce_scores(pixel_logits, reduction)

    inputs = keras_model.inputs[0] if len(keras_model.inputs) == 1 else keras_model.inputs
    return keras.Model(inputs, PixelReduction(name="pixel_reduction")(keras_model.outputs[0]),
                       name=keras_model.name)


# -- Grad-CAM for several classes and feature layers --------------------------------------------------
def gradcam(model: SegmentationModel, images: np.ndarray, classes: Sequence[int],
            feature_layers: Sequence[str] | None = None, normalize: bool = False,
            max_batch: int | str = "auto") -> np.ndarray:
    """Segmentation Grad-CAM, `[b, len(classes), len(feature_layers), H, W]`: per class, the gradient
    of its reduced score at each feature layer, channel weights = spatial mean of those gradients,
    weighted channel sum, ReLU, upsampled to the input (as the `gradcam` method, MATLAB's default of no
    normalization). `images` in the model's input space; layers default to the model's gradcam_endpoint."""
    from harness.methods.cam import gradcam_maps

    if not isinstance(model, SegmentationModel):
        raise HarnessError(f"model {model.name} is not a segmentation model (output_layout classes); "
                           "segmentation Grad-CAM needs output_layout: segmentation and its reduction")
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad or not classes:
        raise HarnessError(f"classes {bad or classes} of model {model.name}: valid 0..{model.num_classes - 1} "
                           f"({', '.join(model.class_names)})")
    layers = list(feature_layers or model.feature_layers[:1])
    if not layers:
        raise HarnessError(f"model {model.name} has no gradcam_endpoint: name the feature layers")
    x = np.repeat(np.asarray(images, np.float32), len(classes), axis=0)   # image-major rows
    targets = np.tile(np.asarray(classes, np.int32), len(images))
    settings = {"output": "logit", "graph_mode": "live", "max_batch": max_batch, "normalize": normalize}
    maps = [gradcam_maps(model, x, targets, settings | {"endpoint": layer}, "segmentation gradcam")
            for layer in layers]
    return np.stack(maps, axis=1).reshape(len(images), len(classes), len(layers), *x.shape[1:3])
