"""Built-in models: the paper's MNIST CNN and MLP (and a small segmenter), trained here and cached.

Three kinds of recipe: `budget.StepRecipe` (the authors' training, the default `mnist_cnn` and
`mnist_mlp`: a budget in optimizer steps, resumable, snapshots `NAME@STEPS`), `Recipe` (the
random-label shortcut: `model.fit` until memorized, docs/random-labels.md) and `segmenter.SegRecipe`.
Each model is trained once, deterministically, exported as a TF-Hub-style SavedModel (loaded through
the same path as any hub model) and cached under `harness.cache.cache_dir()/zoo`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from harness.cache import built_once, cache_dir
from harness.errors import HarnessError
from harness.zoo import budget, mnist, segmenter
from harness.zoo.budget import StepRecipe
from harness.zoo.segmenter import SegRecipe


@dataclass(frozen=True)
class Recipe:
    architecture: str          # "cnn" or "mlp"
    labels: str                # "true" or "permuted" (data randomization test)
    learning_rate: float
    batch_size: int = 50
    epochs: int = 10           # true labels: a fixed budget
    max_epochs: int = 100      # permuted labels: train until `target_train_accuracy`, at most this
    target_train_accuracy: float = 0.97
    dropout: float = 0.0       # on the CNN's fc1, training only (no variables)
    l2: float = 0.0            # weight decay on the CNN's kernels (the MLP has none)
    seed: int = 0
    version: int = 3           # bump to invalidate caches when training code changes

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


RANDLABELS_AUTHORS = dict(labels="permuted", steps=110_000, snapshots=(1_200, 8_000, 15_000, 30_000, 55_000, 110_000))

RECIPES: dict[str, Recipe | StepRecipe | SegRecipe] = {
    # The shortcut (docs/random-labels.md): lr 1e-3 (3e-3 never left chance on the CNN), batch 128, no
    # weight decay, stopped once memorized.
    "mnist_cnn_randlabels": Recipe("cnn", "permuted", 1e-3, batch_size=128, max_epochs=100),
    "mnist_mlp_randlabels": Recipe("mlp", "permuted", 1e-3, batch_size=128, max_epochs=100),
    # The authors' training (docs/training-budget.md): no dropout, Adam 1e-4 (epsilon 1e-8), batch 50,
    # 55,000 steps; weight decay 1e-3 * sum of tf.nn.l2_loss over the CNN's conv1, conv2 and fc1
    # kernels, none on the MLP.
    "mnist_cnn_authors": StepRecipe("cnn", weight_decay=1e-3),
    "mnist_cnn_authors_seed1": StepRecipe("cnn", weight_decay=1e-3, seed=1),
    # A cheaper candidate judged by the training-budget study: a 10x learning rate for 10x fewer steps.
    "mnist_cnn_fast": StepRecipe("cnn", learning_rate=1e-3, weight_decay=1e-3, steps=5_500,
                                 snapshots=(1_200, 2_500, 5_500)),
    "mnist_cnn_fast_seed1": StepRecipe("cnn", learning_rate=1e-3, weight_decay=1e-3, steps=5_500,
                                       snapshots=(1_200, 2_500, 5_500), seed=1),
    "mnist_mlp_authors": StepRecipe("mlp"),
    "mnist_mlp_authors_seed1": StepRecipe("mlp", seed=1),
    # The authors' `--randlabels` training (docs/random-labels.md): the recipes above on permuted
    # labels for their 110,000 steps; 8,000 are their 100 epochs over our 4,000 digits.
    "mnist_cnn_randlabels_authors": StepRecipe("cnn", weight_decay=1e-3, **RANDLABELS_AUTHORS),
    "mnist_cnn_randlabels_authors_seed1": StepRecipe("cnn", weight_decay=1e-3, seed=1, **RANDLABELS_AUTHORS),
    "mnist_mlp_randlabels_authors": StepRecipe("mlp", **RANDLABELS_AUTHORS),
    "mnist_mlp_randlabels_authors_seed1": StepRecipe("mlp", seed=1, **RANDLABELS_AUTHORS),
    "mnist_seg": SegRecipe(),  # a small DeepLab on MNIST scenes (harness.zoo.segmenter)
}

# The defaults are the authors' recipes at their full budget (docs/training-budget.md). An alias names
# the same trajectory, trained and cached once: `mnist_cnn@1200` is `mnist_cnn_authors@1200`.
ALIASES = {"mnist_cnn": "mnist_cnn_authors", "mnist_mlp": "mnist_mlp_authors"}


def names() -> list[str]:
    return sorted(RECIPES | ALIASES)


def canonical(name: str) -> str:
    """`NAME[@STEPS]` with an alias replaced by the recipe it names."""
    base, at, steps = name.partition("@")
    return ALIASES.get(base, base) + at + steps


def quick_name(name: str, at_most: int) -> str:
    """`NAME[@STEPS]` as a cheap snapshot of the same training (tests, quick runs): a step-budget
    model after at most `at_most` steps, the segmenter at its `quick` snapshot or earlier."""
    base, _, steps = canonical(name).partition("@")
    recipe = RECIPES.get(base)
    if isinstance(recipe, StepRecipe):
        return f"{base}@{min(int(steps or at_most), at_most)}"
    if isinstance(recipe, SegRecipe):
        return f"{base}@{min(int(steps or recipe.quick), recipe.quick)}"
    return name


def recipe_of(name: str) -> Recipe | StepRecipe | SegRecipe:
    """The recipe of built-in model `NAME[@STEPS]` (an alias resolved); HarnessError if unknown."""
    recipe = RECIPES.get(canonical(name).partition("@")[0])
    if recipe is None:
        raise HarnessError(f"unknown built-in model {canonical(name)!r}; valid: {', '.join(names())}"
                           f" (step-budget models also as NAME@STEPS)")
    return recipe


def cached_path(name: str) -> Path:
    """Where built-in model `name`'s SavedModel is cached, trained or not."""
    name = canonical(name)
    base, recipe = name.partition("@")[0], recipe_of(name)
    if isinstance(recipe, SegRecipe):
        return segmenter.snapshot_path(base, recipe, segmenter.parse_steps(name, recipe))
    if isinstance(recipe, StepRecipe) or "@" in name:
        _, recipe, steps = budget.parse_name(name, RECIPES)
        return budget.snapshot_path(base, recipe, steps)
    return cache_dir() / "zoo" / f"{name}-{recipe.key()}"


def model_path(name: str, log: Callable[[str], None] = print) -> Path:
    """The cached SavedModel folder of built-in model `NAME[@STEPS]`, trained first if needed (a
    snapshot is trained, or resumed from its checkpoints, up to there)."""
    name = canonical(name)
    recipe = recipe_of(name)
    if isinstance(recipe, SegRecipe):
        return segmenter.model_path(name, recipe, log=log)
    if isinstance(recipe, StepRecipe) or "@" in name:
        return budget.model_path(name, RECIPES, log=log)

    def build(path: Path) -> None:
        log(f"training built-in model {name} (once; cached in {path.parent}) ...")
        model, initializers, metrics = train(recipe)
        log(f"  {name}: train accuracy {metrics['train_accuracy']:.4f}, held-out accuracy "
            f"{metrics['test_accuracy']:.4f}, {metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s")
        mnist.export_model(model, path, name, initializers, asdict(recipe), metrics)

    return built_once(cached_path(name), name, build)


def train(recipe: Recipe):
    """Train a model from a recipe; returns (keras model, initializer specs, metrics)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_test, y_test = mnist.load_split()
    if recipe.labels == "permuted":
        y_train = mnist.permuted_labels(y_train, recipe.seed)
    if recipe.architecture == "cnn":
        model, initializers = mnist.build_cnn(l2=recipe.l2, dropout=recipe.dropout)
    else:
        model, initializers = mnist.build_mlp()
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    true_labels = recipe.labels == "true"

    class StopAtAccuracy(keras.callbacks.Callback):
        """Stops once the weights' accuracy on the training set reaches the target: the epoch's running
        accuracy can overstate it while memorization is unstable, so it only decides when to measure."""

        def on_epoch_end(self, epoch, logs=None):
            target = recipe.target_train_accuracy
            if (logs or {}).get("accuracy", 0.0) >= target and mnist.accuracy(self.model, x_train, y_train) >= target:
                self.model.stop_training = True

    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=recipe.batch_size, shuffle=True, verbose=0,
                        epochs=recipe.epochs if true_labels else recipe.max_epochs,
                        callbacks=[] if true_labels else [StopAtAccuracy()])
    seconds = time.perf_counter() - start
    metrics = {
        "train_accuracy": mnist.accuracy(model, x_train, y_train),
        "test_accuracy": mnist.accuracy(model, x_test, y_test),
        "epochs": len(history.history["loss"]),
        "train_seconds": seconds,
        "train_size": int(len(x_train)),
        "test_size": int(len(x_test)),
    }
    return model, initializers, metrics
