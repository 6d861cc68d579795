# %% [markdown]
# # A segmentation model, sanity-checked from Python
# A small DeepLab (the built-in segmenter's architecture, harness.zoo.deeplab) trained here for a
# short while on MNIST scenes (64x64 canvases of digits; 11 classes: background and one per digit),
# then the cascading model-randomization test of its maps. Every method explains one scalar per
# image: a class's softmax score summed over the pixels (docs/segmentation.md), declared through the
# model's config keys (`model.output_layout`, `model.reduction`, `model.segmentation`).
# `HARNESS_EXAMPLE_QUICK=1` (the test suite) trains and checks less.

# %%
import os
from pathlib import Path

import keras

import harness
from harness.zoo import deeplab, scenes

QUICK = os.environ.get("HARNESS_EXAMPLE_QUICK") == "1"
OUT = Path(os.environ.get("HARNESS_EXAMPLE_OUT", "example-output"))  # where the figures go
x, y = scenes.make_scenes(64 if QUICK else 1000, "train")  # images [N, 64, 64, 1] in [0, 1], labels [N, 64, 64]
held_out, _ = scenes.make_scenes(2 if QUICK else 8, "held_out")  # digits the model never saw

# %%
keras.utils.set_random_seed(0)
model = deeplab.small_deeplab(scenes.CLASSES, width=16)  # per-pixel logits [batch, 64, 64, 11]
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=32, epochs=1 if QUICK else 4, verbose=0)

# %%
result = harness.sanity_check(
    model, held_out,
    methods=["gradient", {"name": "gradcam", "endpoint": "decoder_relu"}],  # Grad-CAM at the decoder's last ReLU
    model__output_layout="segmentation",
    model__reduction={"scores": "softmax", "pixels": "all"},
    model__segmentation={"background": 0, "class_names": list(scenes.CLASS_NAMES)},
    # The convolutions, top-down (one block per layer, the default, is 25 steps with the batch norms).
    model__blocks={"names": ["classifier", "decoder_conv", "decoder1_conv", "aspp_project_conv", "enc4_conv",
                             "enc3_conv", "enc2_conv", "enc1_conv"]},
    controls=["random_model"], progress=False,
    **({"metrics.metrics": ["spearman_abs", "ssim"]} if QUICK else {}),
)
print(result)  # the verdicts; a handful of scenes are too few for a pass or fail

# %%
OUT.mkdir(parents=True, exist_ok=True)
result.plot_curves().savefig(OUT / "segmentation-curves.png")
result.plot_maps(0).savefig(OUT / "segmentation-maps.png")  # rows: methods; columns: input, trained, each step
print("figures:", sorted(p.name for p in OUT.glob("segmentation-*.png")))
result.close()
