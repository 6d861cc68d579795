"""Shared fixtures: tiny models built inside the tests (no network, seconds to build)."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The default built-in models train for 55,000 steps (most of an hour on 2 cores): no test may use
# one, here or in the commands the tests start (harness.zoo.budget). Tests take early snapshots of
# the same training, CHEAP_CNN and CHEAP_MLP, and nothing in them depends on their exact weights.
os.environ["HARNESS_ZOO_MAX_STEPS"] = "1200"
CHEAP_CNN = "builtin:mnist_cnn@1200"
CHEAP_MLP = "builtin:mnist_mlp@1200"


def tiny_cnn(seed: int = 0, batch_norm: bool = False):
    """A small functional CNN with named layers, like the built-in one but 8x8x1 and fast."""
    import keras

    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, logits, name="tiny_cnn")


def wrap_keras(model, **cfg):
    from harness.models.sources import _from_keras

    return _from_keras(model, cfg, kind="keras_file", identity="test")


@pytest.fixture(autouse=True, scope="session")
def session_map_cache(tmp_path_factory):
    """The map cache (harness.cache) of module-scoped fixtures that run experiments: set up before
    them, so the user's cache is never touched."""
    saved = os.environ.get("HARNESS_MAP_CACHE_DIR")
    os.environ["HARNESS_MAP_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-map-cache"))
    yield
    if saved is None:
        os.environ.pop("HARNESS_MAP_CACHE_DIR", None)
    else:
        os.environ["HARNESS_MAP_CACHE_DIR"] = saved


@pytest.fixture(autouse=True)
def own_map_cache(tmp_path_factory, monkeypatch):
    """Every test its own map cache, in-process and in the commands it starts: no test reads maps
    another test computed."""
    folder = tmp_path_factory.mktemp("map-cache")
    monkeypatch.setenv("HARNESS_MAP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_model():
    return wrap_keras(tiny_cnn())


@pytest.fixture
def tiny_saved_model(tmp_path):
    """A tiny CNN exported hub-style, with initializer metadata like the built-in models carry."""
    from harness.models.export import export_hub_style

    model = tiny_cnn()
    initializers = {f"{layer}/kernel": {"kind": "truncated_normal", "std": 0.1}
                    for layer in ("conv1", "conv2", "fc1", "logits")}
    initializers |= {f"{layer}/bias": {"kind": "constant", "value": 0.1} for layer in ("conv1", "conv2", "fc1", "logits")}
    path = export_hub_style(model, tmp_path / "tiny", {
        "name": "tiny", "input": {"size": [8, 8], "channels": 1, "value_range": [0.0, 1.0]},
        "initializers": initializers, "recipe": {"architecture": "tiny", "learning_rate": 1e-3}})
    return path, model


@pytest.fixture
def images8():
    return np.random.default_rng(0).uniform(0, 1, size=(5, 8, 8, 1)).astype(np.float32)
