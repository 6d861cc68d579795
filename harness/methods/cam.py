"""Class activation maps: Grad-CAM (Selvaraju et al. 2017), Guided Grad-CAM, and CAM (Zhou et al. 2016).

Grad-CAM as PAIR's `GradCam.GetMask`: channel weights = spatial mean of the gradients at an endpoint
(the method's `endpoint`, else the model's `gradcam_endpoint`: a Keras layer or a SavedModel name
scope); weighted channel sum; ReLU; divided by its maximum (`normalize`); upsampled as PAIR does
(skimage `resize`, order 1, mirrored border; `tf.image.resize` clamps the border instead).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import tensorflow as tf
from scipy import ndimage

from harness.errors import HarnessError
from harness.methods import register
from harness.methods.kernels import run_kernel, to_channels
from harness.models.backends import compile_counted


def endpoint_of(s: dict, method: str) -> str:
    name = s.get("endpoint") or s.get("gradcam_endpoint")
    if not name:
        raise HarnessError(f"method {method} needs an endpoint: set the model's gradcam_endpoint or "
                           f"the method's endpoint (a layer / name scope whose output is [b, h, w, c])")
    return str(name)


def gradcam_maps(model, x: np.ndarray, targets: np.ndarray, s: dict, method: str) -> np.ndarray:
    """[b, H, W] Grad-CAM maps, upsampled to the input size."""
    endpoint, output = endpoint_of(s, method), s["output"]
    fn = model.backend.endpoint_kernel(model, f"gradcam/{endpoint}/{output}", endpoint, output, s["graph_mode"],
                                       channel_weighting(endpoint), method)
    cams = run_kernel(fn, x, targets, s["max_batch"])
    return upsample(cams, x.shape[1:3], normalize=bool(s["normalize"]))


def channel_weighting(endpoint: str):
    """An endpoint kernel's reduce(values, gradients): ReLU(sum_c mean_hw(grad_c) * value_c), [b, h, w]."""
    def weighted_channels(values: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
        if values.shape.rank != 4:
            raise HarnessError(f"Grad-CAM endpoint {endpoint!r} has shape {values.shape}; it needs a "
                               "[batch, height, width, channels] feature map (a conv layer's output)")
        weights = tf.reduce_mean(grads, axis=[1, 2])
        return tf.nn.relu(tf.einsum("bhwc,bc->bhw", values, weights))
    return weighted_channels


@lru_cache(maxsize=32)
def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: skimage's order-1 resize along one axis (ndimage.zoom, mirror, grid mode)."""
    matrix = ndimage.zoom(np.eye(size_in), (size_out / size_in, 1.0), order=1, mode="mirror", grid_mode=True)
    assert matrix.shape == (size_out, size_in), matrix.shape
    return matrix


def upsample(maps: np.ndarray, size: tuple[int, int], normalize: bool) -> np.ndarray:
    """[b, h, w] -> [b, H, W]; with `normalize`, each map is first divided by its maximum (if > 0)."""
    maps = np.asarray(maps, np.float64)
    if normalize:
        peak = maps.reshape(len(maps), -1).max(axis=1)
        maps = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
    rows, cols = _resize_matrix(maps.shape[1], size[0]), _resize_matrix(maps.shape[2], size[1])
    return (rows @ maps @ cols.T).astype(np.float32)  # two matmuls (a 3-operand einsum is ~20x slower)


def _pair_gradcam(pair, x, cmf, args, s) -> np.ndarray:
    return pair.GradCam().GetMask(x, cmf, args, three_dims=False)[..., None]


@register("gradcam", reference=_pair_gradcam)
def gradcam(model, x, targets, rng, s) -> np.ndarray:
    return to_channels(gradcam_maps(model, x, targets, s, "gradcam"), x.shape[-1])


@register("guided_gradcam", rows=lambda s, shape: (2, 0))  # a guided and a Grad-CAM pass
def guided_gradcam(model, x, targets, rng, s) -> np.ndarray:
    """Guided Backprop x Grad-CAM, elementwise; both passes in one compiled call per chunk."""
    endpoint, output = endpoint_of(s, "guided_gradcam"), s["output"]
    fn = model.backend.guided_endpoint_kernel(model, f"guided_gradcam/{endpoint}/{output}", endpoint, output,
                                              s["graph_mode"], channel_weighting(endpoint), "guided_gradcam")
    guided, cams = run_kernel(fn, x, targets, s["max_batch"])
    return guided * upsample(cams, x.shape[1:3], normalize=bool(s["normalize"]))[..., None]


@register("cam", rows=lambda s, shape: (0, 1))  # a forward pass to the pooled features
def cam(model, x, targets, rng, s) -> np.ndarray:
    """sum_k w[k, target] * A_k for a model ending in GlobalAveragePooling2D + Dense (the logit's own
    weights, so there is no `output` setting), upsampled as Grad-CAM; signed, not normalized."""
    if model.keras_model is None:
        raise HarnessError(f"method cam needs a Keras model ending in GlobalAveragePooling2D + Dense; "
                           f"model {model.name} is {model.backend.description} (use gradcam, which CAM is a case of)")
    fn = model.compiled("cam", lambda: compile_counted(model, "cam", _cam_body(model)))
    cams = run_kernel(fn, x, targets, s["max_batch"])
    return to_channels(upsample(cams, x.shape[1:3], normalize=False), x.shape[-1])


def _cam_body(model):
    """The CAM kernel's body over the model's pooled features and final Dense layer, or a HarnessError."""
    import keras

    keras_model = model.keras_model
    dense = keras_model.layers[-1]
    layer = _producer(dense.input) if isinstance(dense, keras.layers.Dense) else None
    while isinstance(layer, keras.layers.Dropout):  # inactive at inference
        layer = _producer(layer.input)
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D) or layer.keepdims:
        raise HarnessError(f"method cam needs a model whose last layers are GlobalAveragePooling2D -> "
                           f"Dense; model {keras_model.name} ends in "
                           f"{' -> '.join(type(last).__name__ for last in keras_model.layers[-3:])} (use gradcam)")
    inputs = keras_model.inputs[0] if len(keras_model.inputs) == 1 else keras_model.inputs
    features = keras.Model(inputs, layer.input, name=f"{keras_model.name}_cam_features")

    def body(x, targets):
        class_weights = tf.gather(tf.convert_to_tensor(dense.kernel), targets, axis=1)  # [k, b]
        return tf.einsum("bhwk,kb->bhw", features(x, training=False), class_weights)
    return body


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None
