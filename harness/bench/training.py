"""Scenario `training`: optimizer steps per second of the built-in CNN's step-budget recipe
(`harness.zoo.budget`), trained several ways.

The ways are timed in turn, round after round, after a warm-up, in one process (timings from
separate runs on a shared machine do not compare); each row is a way's median and its ratio to
`fit`. The trainer's own way is `loop100` (100 steps a tf.function call, op determinism on: resumable
bit for bit). XLA is not timed: it cannot keep that determinism for MaxPool's gradient.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from harness import zoo
from harness.bench.common import Options, markdown
from harness.zoo import budget, mnist

RECIPE = "mnist_cnn_authors"
# name -> (how, steps per compiled call, op determinism)
CONFIGS = {
    "fit": ("fit", None, True),           # keras model.fit, batch 50, shuffled NumPy arrays
    "loop1": ("loop", 1, True),           # custom tf.function step, one step a call
    "loop10": ("loop", 10, True),         # ... 10 steps a call (tf.while_loop)
    "loop100": ("loop", 100, True),       # ... 100 steps a call: the trainer's setting
    "loop1-nondet": ("loop", 1, False),   # one step a call, op determinism off
}
STEPS, ROUNDS = 160, 3  # steps per timing (fit: whole epochs), rounds
QUICK_STEPS, QUICK_CONFIGS = 10, ("fit", "loop1")


class _Trainer:
    def __init__(self, recipe, how: str, chunk: int | None, deterministic: bool):
        import keras

        self.how, self.chunk, self.recipe, self.deterministic = how, chunk, recipe, deterministic
        budget.set_op_determinism(deterministic)
        self.x, self.y, _, _ = mnist.load_split()
        self.model, _, self.optimizer = budget.build(recipe)
        self.step = 0
        if how == "fit":
            self.model.compile(optimizer=self.optimizer,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        else:
            self.fn = budget.make_train_fn(self.model, self.optimizer, self.x, self.y, chunk)

    def seconds_per_step(self, steps: int) -> float:
        budget.set_op_determinism(self.deterministic)
        began, before = time.perf_counter(), int(self.optimizer.iterations.numpy())
        if self.how == "fit":  # whole epochs: a partial one would restart the dataset iterator
            epochs = max(1, steps // (len(self.x) // self.recipe.batch_size))
            self.model.fit(self.x, self.y, batch_size=self.recipe.batch_size, epochs=epochs, shuffle=True, verbose=0)
        else:
            while int(self.optimizer.iterations.numpy()) - before < steps:
                idx = budget.batch_indices(self.recipe.seed, len(self.x), self.recipe.batch_size, self.step, self.chunk)
                float(self.fn(idx, np.int32(self.chunk)))
                self.step += self.chunk
        return (time.perf_counter() - began) / (int(self.optimizer.iterations.numpy()) - before)


def measure_all(options: Options, log: Callable[[str], None] = print) -> list[dict]:
    steps, names = (QUICK_STEPS, QUICK_CONFIGS) if options.quick else (STEPS, tuple(CONFIGS))
    trainers = {name: _Trainer(zoo.RECIPES[RECIPE], *CONFIGS[name]) for name in names}
    for trainer in trainers.values():
        trainer.seconds_per_step(min(steps, 100))  # warm-up: tracing, compilation
    times = {name: [] for name in names}
    for _ in range(1 if options.quick else max(ROUNDS, options.repeats)):
        for name, trainer in trainers.items():
            times[name].append(trainer.seconds_per_step(steps))
    base = 1 / statistics.median(times[names[0]])
    rows = [{"model": RECIPE, "method": name, "steps_per_s": 1 / statistics.median(t),
             "vs_fit": 1 / statistics.median(t) / base, "rounds_s_per_step": " ".join(f"{x:.5g}" for x in t)}
            for name, t in times.items()]
    for r in rows:
        log(f"training {r['method']:<13} {r['steps_per_s']:7.2f} steps/s  x{r['vs_fit']:.2f}")
    return rows


def section(frame) -> list[str]:
    return markdown("## Training speed", " ".join(__doc__.split("\n\n", 1)[1].split())
                    + f"\n\nRecipe `{RECIPE}`; the configurations: {', '.join(f'`{n}`' for n in CONFIGS)} "
                    "(`harness/bench/training.py`).",
                    "configuration | steps/s: | x fit: | s per step, each round",
                    [[r.method, f"{r.steps_per_s:.3g}", f"{r.vs_fit:.2f}", r.rounds_s_per_step]
                     for r in frame.itertuples()])
