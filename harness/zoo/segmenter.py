"""The built-in segmentation model `mnist_seg`: `deeplab.small_deeplab` trained on MNIST scenes.

Trained once, deterministically, on `scenes.make_scenes` training scenes, measured on held-out scenes
(mean and per-class IoU, pixel accuracy: in the model's metadata, so in every run.json of it), and
cached like the other built-ins (docs/segmentation.md). `mnist_seg@STEPS` is the same training stopped
at an epoch boundary (the learning-rate schedule spans the whole recipe); tests and `--quick` runs use
the recipe's `quick` snapshot.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.cache import built_once, cache_dir
from harness.errors import HarnessError
from harness.zoo import mnist, scenes
from harness.zoo.budget import check_step_limit


@dataclass(frozen=True)
class SegRecipe:
    scenes: int = 8000          # training scenes (fresh digit placements: more help than more epochs)
    held_out: int = 500         # held-out scenes for the IoU
    width: int = 32             # small_deeplab's base width
    learning_rate: float = 3e-3 # Adam, cosine decay to 0 over the whole training
    batch_size: int = 32
    epochs: int = 12
    seed: int = 0
    snapshots: tuple[int, ...] = (500,)  # exported on the way (optimizer steps, epoch boundaries)
    version: int = 1            # bump to invalidate caches when training code changes

    def key(self) -> str:
        """The trajectory's key: the snapshots exported on the way do not change the training."""
        fields = {k: v for k, v in asdict(self).items() if k != "snapshots"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.scenes // self.batch_size)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def quick(self) -> int:
        """The snapshot tests and `--quick` runs use: the first one declared."""
        return self.snapshots[0] if self.snapshots else self.steps


def parse_steps(name: str, recipe: SegRecipe) -> int:
    """The optimizer steps of `NAME` (the full recipe) or `NAME@STEPS` (an epoch boundary)."""
    base, at, given = name.partition("@")
    if not at:
        return recipe.steps
    valid = range(recipe.steps_per_epoch, recipe.steps + 1, recipe.steps_per_epoch)
    if not given.isdigit() or int(given) not in valid:
        raise HarnessError(f"{name!r}: a snapshot of {base} is taken at the end of an epoch; valid steps: "
                           f"multiples of {recipe.steps_per_epoch} up to {recipe.steps}")
    return int(given)


def snapshot_path(base: str, recipe: SegRecipe, steps: int) -> Path:
    """The full model keeps its historical folder name, so a cache of it stays valid."""
    at = "" if steps == recipe.steps else f"@{steps}"
    return cache_dir() / "zoo" / f"{base}{at}-{recipe.key()}"


def model_path(name: str, recipe: SegRecipe, log: Callable[[str], None] = print) -> Path:
    """The cached SavedModel of `NAME[@STEPS]`, trained first if needed (one trainer at a time)."""
    base = name.partition("@")[0]
    steps = parse_steps(name, recipe)
    check_step_limit(base, steps, quick=recipe.quick)

    def on_the_way(at: int, model, metrics: dict) -> None:
        if not (snapshot_path(base, recipe, at) / "saved_model.pb").is_file():
            export(model, snapshot_path(base, recipe, at), f"{base}@{at}", recipe, metrics)

    def build(path: Path) -> None:
        log(f"training built-in model {base}@{steps} (once; {steps} of its recipe's {recipe.steps} steps, "
            f"about {steps * 0.15 / 60:.0f} min on 2 cores; cached in {path.parent}) ...")
        model, metrics = train(recipe, steps, export_on_the_way=on_the_way)
        log(f"  {base}@{steps}: held-out mean IoU {metrics['mean_iou']:.3f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.3f}, {metrics['train_seconds']:.0f} s")
        export(model, path, base if steps == recipe.steps else f"{base}@{steps}", recipe, metrics)

    return built_once(snapshot_path(base, recipe, steps), f"{base}@{steps}", build)


def train(recipe: SegRecipe, steps: int, export_on_the_way: Callable[[int, object, dict], None]):
    """(Keras model, metrics) after `steps` (an epoch boundary). The learning rate decays over the
    whole recipe and an epoch's data order does not depend on how many follow, so a shorter training
    is the longer one's beginning. The recipe's snapshots before `steps` go to
    `export_on_the_way(steps, model, metrics)`."""
    import keras
    import tensorflow as tf

    from harness.zoo import deeplab

    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    x, y = scenes.make_scenes(recipe.scenes, "train")
    model = deeplab.small_deeplab(scenes.CLASSES, width=recipe.width)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, recipe.steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_held_out, y_held_out = scenes.make_scenes(recipe.held_out, "held_out")
    start = time.perf_counter()
    not_training = [0.0]  # seconds spent measuring and exporting snapshots, not in train_seconds

    def metrics_now(at: int) -> dict:
        """Held-out mean IoU, per-class IoU and pixel accuracy, and the training so far."""
        seconds = time.perf_counter() - start - not_training[0]
        predicted = np.argmax(model.predict(x_held_out, batch_size=100, verbose=0), axis=-1)
        mean, per_class = scenes.mean_iou(predicted, y_held_out)
        return {"mean_iou": mean, "class_iou": [None if np.isnan(v) else float(v) for v in per_class],
                "pixel_accuracy": float(np.mean(predicted == y_held_out)), "held_out_scenes": recipe.held_out,
                "train_seconds": seconds, "steps": at, "train_scenes": recipe.scenes}

    class Snapshots(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            at = (epoch + 1) * recipe.steps_per_epoch
            if at in recipe.snapshots and at < steps:
                paused = time.perf_counter()
                export_on_the_way(at, self.model, metrics_now(at))
                not_training[0] += time.perf_counter() - paused

    model.fit(x, y, batch_size=recipe.batch_size, epochs=steps // recipe.steps_per_epoch, shuffle=True,
              verbose=0, callbacks=[Snapshots()])
    return model, metrics_now(steps)


def export(model, path: Path, name: str, recipe: SegRecipe, metrics: dict) -> None:
    """Export hub-style with the harness's metadata, atomically (`mnist.export_atomically`)."""
    from harness.models.export import initializer_spec

    initializers = {}
    for layer in model.layers:
        for attribute in ("kernel", "bias", "gamma", "beta"):
            init = getattr(layer, f"{attribute}_initializer", None)
            spec = initializer_spec(init) if init is not None and getattr(layer, attribute, None) is not None else None
            if spec:
                initializers[f"{layer.name}/{attribute}"] = spec
    mnist.export_atomically(model, path, {
        "name": name, "input": {"size": [scenes.SIZE, scenes.SIZE], "channels": 1, "value_range": [0.0, 1.0]},
        "initializers": initializers, "recipe": asdict(recipe), "metrics": metrics,
        "segmentation": {"class_names": list(scenes.CLASS_NAMES), "colors": scenes.class_colors()}})
