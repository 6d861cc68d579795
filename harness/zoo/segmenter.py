"""The built-in segmentation model `mnist_seg`: `deeplab.small_deeplab` trained on MNIST scenes.

Trained once, deterministically, on `scenes.make_scenes` training scenes (digits of the MNIST training
split), measured on held-out scenes (digits of the held-out split), exported as a TF-Hub-style
SavedModel like the other built-ins and cached under `harness.cache.cache_dir()/zoo`. Its metrics
(`mean_iou`, per-class IoU, pixel accuracy, training seconds) travel in the model's metadata, so
every run.json of it carries them (`model.metrics`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.cache import built_once, cache_dir


@dataclass(frozen=True)
class SegRecipe:
    scenes: int = 8000          # training scenes (fresh digit placements: more help than more epochs)
    held_out: int = 500         # held-out scenes for the IoU
    width: int = 32             # small_deeplab's base width
    learning_rate: float = 3e-3 # Adam, cosine decay to 0 over the whole training
    batch_size: int = 32
    epochs: int = 12
    seed: int = 0
    version: int = 1            # bump to invalidate caches when training code changes

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.scenes // self.batch_size)


def model_path(name: str, recipe: SegRecipe, log: Callable[[str], None] = print) -> Path:
    """The cached SavedModel of `name`, trained first if needed (one trainer at a time)."""
    def build(path: Path) -> None:
        log(f"training built-in model {name} (once; {recipe.steps} steps, a few minutes on 2 cores; "
            f"cached in {path.parent}) ...")
        model, metrics = train(recipe)
        log(f"  {name}: held-out mean IoU {metrics['mean_iou']:.3f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.3f}, {metrics['train_seconds']:.0f} s")
        export(model, path, name, recipe, metrics)

    return built_once(cache_dir() / "zoo" / f"{name}-{recipe.key()}", name, build)


def train(recipe: SegRecipe):
    """(trained Keras model, metrics) of a recipe."""
    import keras
    import tensorflow as tf

    from harness.zoo import deeplab, scenes

    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    x, y = scenes.make_scenes(recipe.scenes, "train")
    model = deeplab.small_deeplab(scenes.CLASSES, width=recipe.width)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, recipe.steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, batch_size=recipe.batch_size, epochs=recipe.epochs, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    return model, evaluate(model, recipe.held_out) | {"train_seconds": seconds, "steps": recipe.steps,
                                                      "train_scenes": recipe.scenes}


def evaluate(model, count: int) -> dict:
    """Mean IoU, per-class IoU and pixel accuracy of a Keras segmenter on `count` held-out scenes."""
    from harness.zoo import scenes

    x, y = scenes.make_scenes(count, "held_out")
    predicted = np.argmax(model.predict(x, batch_size=100, verbose=0), axis=-1)
    mean, per_class = scenes.mean_iou(predicted, y)
    return {"mean_iou": mean, "class_iou": [None if np.isnan(v) else float(v) for v in per_class],
            "pixel_accuracy": float(np.mean(predicted == y)), "held_out_scenes": count}


def export(model, path: Path, name: str, recipe: SegRecipe, metrics: dict) -> None:
    """Export hub-style with the harness's metadata, atomically (written beside, then renamed)."""
    from harness.models.export import export_hub_style
    from harness.models.sources import initializer_spec
    from harness.zoo import scenes

    initializers = {}
    for layer in model.layers:
        for attribute in ("kernel", "bias", "gamma", "beta"):
            init = getattr(layer, f"{attribute}_initializer", None)
            spec = initializer_spec(init) if init is not None and getattr(layer, attribute, None) is not None else None
            if spec:
                initializers[f"{layer.name}/{attribute}"] = spec
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
    try:
        export_hub_style(model, tmp / "model", {
            "name": name, "input": {"size": [scenes.SIZE, scenes.SIZE], "channels": 1, "value_range": [0.0, 1.0]},
            "initializers": initializers, "recipe": asdict(recipe), "metrics": metrics,
            "segmentation": {"class_names": list(scenes.CLASS_NAMES), "colors": scenes.class_colors()}})
        if path.exists():
            shutil.rmtree(path)
        (tmp / "model").rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
