"""DeepLab v3+ style segmentation networks (Chen et al., ECCV 2018) as Keras functional models with
per-pixel logits: `small_deeplab` (the built-in scene segmenter) and `deeplabv3plus` (on a
keras.applications ResNet). Layer names follow MATLAB's DeepLab v3+ example where a counterpart
exists (`aspp_concat` its `catAspp`, `decoder_relu` its `dec_relu1`); every layer is top-level, so
Grad-CAM reaches each by name (docs/segmentation.md).
"""
from __future__ import annotations

from pathlib import Path

import keras

from harness.errors import HarnessError


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3, strides: int = 1, dilation: int = 1):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
                            use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _aspp(x, filters: int, rates: tuple[int, ...]):
    """1x1 and 3x3 dilated branches and image pooling, concatenated (`aspp_concat`), projected."""
    branches = [_conv_bn_relu(x, filters, "aspp_1x1", kernel=1)]
    branches += [_conv_bn_relu(x, filters, f"aspp_rate{r}", dilation=r) for r in rates]
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, filters, "aspp_pool_proj", kernel=1)
    size = (int(x.shape[1]), int(x.shape[2]))
    branches.append(keras.layers.UpSampling2D(size, name="aspp_pool_up")(pooled))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    return _conv_bn_relu(x, filters, "aspp_project", kernel=1)


def _decoder(x, skip, classes: int, skip_filters: int, filters: int, input_size: tuple[int, int]):
    """Upsample to the skip's resolution, concatenate its 1x1 projection, 3x3 convs (`decoder_relu`
    the last one's output), 1x1 to classes, bilinear up to the input."""
    factor = (int(skip.shape[1]) // int(x.shape[1]), int(skip.shape[2]) // int(x.shape[2]))
    x = keras.layers.UpSampling2D(factor, interpolation="bilinear", name="decoder_up")(x)
    skip = _conv_bn_relu(skip, skip_filters, "decoder_skip", kernel=1)
    x = keras.layers.Concatenate(name="decoder_concat")([x, skip])
    x = _conv_bn_relu(x, filters, "decoder1")
    x = _conv_bn_relu(x, filters, "decoder")  # its ReLU is `decoder_relu`
    x = keras.layers.Conv2D(classes, 1, name="classifier")(x)
    factor = (input_size[0] // int(x.shape[1]), input_size[1] // int(x.shape[2]))
    return keras.layers.UpSampling2D(factor, interpolation="bilinear", name="logits")(x)


def small_deeplab(classes: int, input_shape: tuple[int, int, int] = (64, 64, 1), width: int = 32):
    """The built-in segmenter (about 0.2 M parameters at width 32, 64x64 input)."""
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, width // 2, "enc1", strides=2)          # 1/2
    x = _conv_bn_relu(x, width, "enc2", strides=2)                    # 1/4: the skip
    skip = x
    x = _conv_bn_relu(x, 2 * width, "enc3", strides=2)                # 1/8
    x = _conv_bn_relu(x, 2 * width, "enc4")
    x = _aspp(x, width, rates=(2, 4))
    logits = _decoder(x, skip, classes, skip_filters=width // 2, filters=width, input_size=input_shape[:2])
    return keras.Model(inputs, logits, name="mnist_seg")


BACKBONES = {"ResNet50": ("conv4_block6_out", "conv2_block3_out"),
             "ResNet101": ("conv4_block23_out", "conv2_block3_out"),
             "ResNet152": ("conv4_block36_out", "conv2_block3_out")}


def deeplabv3plus(classes: int, input_shape: tuple[int, int, int] = (256, 256, 3), backbone: str = "ResNet50",
                  weights: str | None = None):
    """DeepLab v3+ on a keras.applications ResNet (output stride 16: the ASPP on conv4's output, the
    decoder's skip conv2's), ASPP rates 6, 12, 18 as the paper's at stride 16. `weights`: null (random)
    or a local file of the whole segmentation model's weights (`model.save_weights`)."""
    if backbone not in BACKBONES:
        raise HarnessError(f"unknown DeepLab v3+ backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    if input_shape[0] % 16 or input_shape[1] % 16:
        raise HarnessError(f"DeepLab v3+ input size {list(input_shape[:2])} must be a multiple of 16")
    if weights and not Path(weights).is_file():
        raise HarnessError(f"DeepLab v3+ weights file {weights!r} does not exist (no downloads: null or a local file)")
    base = getattr(keras.applications, backbone)(include_top=False, weights=None, input_shape=input_shape)
    deep, shallow = (base.get_layer(name).output for name in BACKBONES[backbone])
    x = _aspp(deep, 256, rates=(6, 12, 18))
    logits = _decoder(x, shallow, classes, skip_filters=48, filters=256, input_size=input_shape[:2])
    model = keras.Model(base.inputs[0], logits, name=f"deeplabv3plus_{backbone.lower()}")
    if weights:
        model.load_weights(weights)
    return model
