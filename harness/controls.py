"""Controls: each curve's ceiling and floors, scored beside the schedule (rows with schedule
`control`, step -1) against the run's original maps unless a control brings its own reference.

A control is one registered function: given the runner (trained model in place) and the method
entries still to do, it returns each entry's maps, the classes they explain and its seconds.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from harness.errors import HarnessError
from harness.schedules import Randomizer, Step, stable_hash
from harness.results import CONTROL_STEP, NO_CLASS
from harness.metrics import random_mask

# harness.runner's Runner and MethodSpec, named, not imported: the runner imports the controls.
Runner = Any
MethodSpec = Any

# Draw indices of the random_model control's two models: past any schedule's step, so neither
# model repeats a schedule step's draws.
RANDOM_MODEL_DRAWS = (10_001, 10_002)


@dataclass
class ControlMaps:
    maps: np.ndarray                          # the maps scored
    targets: np.ndarray                       # the classes they explain (NO_CLASS: none)
    seconds: float
    reference: np.ndarray | None = None       # None: the run's original maps
    reference_targets: np.ndarray | None = None


def _trained_maps(run: Runner, methods: list[MethodSpec], name: str, targets: np.ndarray) -> dict[str, ControlMaps]:
    """Each entry's maps of the trained model for `targets`, seeded as the control `name`."""
    out = {}
    for method in methods:
        began = time.perf_counter()
        maps = run.maps(method, Step(CONTROL_STEP, name, ()), targets)
        out[method.label] = ControlMaps(maps, targets, time.perf_counter() - began)
    return out


def ceiling(run: Runner, methods: list[MethodSpec]) -> dict[str, ControlMaps]:
    """A second, independent noise draw on the trained model: how high a stochastic method can get
    against itself (a deterministic one gets 1)."""
    return _trained_maps(run, methods, "ceiling", run.reference_targets)


def random_model(run: Runner, methods: list[MethodSpec]) -> dict[str, ControlMaps]:
    """Two differently drawn, fully randomized models against each other: the floor of 'no trained
    weights'. Each model state is visited once for all methods; model A's maps are the reference."""
    reinit = run.plan.reinit
    # Fresh draws per step index even when the schedule nests its draws: two different models. A
    # donor is one model, not random ones: the control draws from the model's own initializers.
    scheme = "auto" if reinit.scheme == "donor" else reinit.scheme
    randomizer = Randomizer(run.model, dataclasses.replace(reinit, draws="per_step", scheme=scheme, donor=None))
    every_block = tuple(b.name for b in run.model.blocks)
    maps: dict[str, list[np.ndarray]] = {m.label: [] for m in methods}
    seconds = dict.fromkeys(maps, 0.0)
    targets = []
    for index in RANDOM_MODEL_DRAWS:
        step = Step(index, f"random_model_{index}", every_block)
        with run.at_step(randomizer, step) as step_targets:  # a whole model drawn: the run's randomize time
            targets.append(step_targets)
            for method in methods:
                began = time.perf_counter()
                maps[method.label].append(run.maps(method, step, targets[-1]))
                seconds[method.label] += time.perf_counter() - began
    return {label: ControlMaps(b, targets[1], seconds[label], reference=a, reference_targets=targets[0])
            for label, (a, b) in maps.items()}


def random_mask_control(run: Runner, methods: list[MethodSpec]) -> dict[str, ControlMaps]:
    """Each original map against Gaussian noise of its shape: the floor of 'nothing in common'."""
    out = {}
    for method in methods:
        began = time.perf_counter()
        rng = np.random.default_rng([run.plan.seed, stable_hash(method.label), stable_hash("random_mask")])
        maps = np.stack([random_mask(m.shape, rng) for m in run.original_maps[method.label]])
        no_class = np.full(len(maps), NO_CLASS, np.int32)  # noise explains no class
        out[method.label] = ControlMaps(maps, no_class, time.perf_counter() - began)
    return out


def random_other_classes(explained: np.ndarray, image_ids, num_classes: int, seed: int) -> np.ndarray:
    """For each image, a class drawn uniformly from the `num_classes - 1` classes other than the one
    explained, from a generator seeded by the run's seed and the image's id (the same image gets the
    same class in any image set)."""
    if num_classes < 2:
        raise HarnessError(f"control random_logit needs a model with at least 2 classes; this one has {num_classes}")
    out = np.empty(len(explained), np.int32)
    for i, (cls, image_id) in enumerate(zip(explained, image_ids)):
        draw = int(np.random.default_rng([seed, stable_hash("random_logit"), stable_hash(str(image_id))])
                   .integers(num_classes - 1))
        out[i] = draw + (draw >= cls)  # skip the explained class
    return out


def random_logit(run: Runner, methods: list[MethodSpec]) -> dict[str, ControlMaps]:
    """Sixt et al.: each map of the trained model for a random other class against its map for the
    explained class; a method whose map hardly changes with the class does not explain the class."""
    num_classes = run.model.num_classes or int(run.model.predict(run.x[:1]).shape[1])
    others = random_other_classes(run.reference_targets, run.images.ids, num_classes, run.plan.seed)
    return _trained_maps(run, methods, "random_logit", others)


CONTROLS: dict[str, Callable[[Runner, list[MethodSpec]], dict[str, ControlMaps]]] = {
    "ceiling": ceiling, "random_model": random_model, "random_mask": random_mask_control, "random_logit": random_logit}
