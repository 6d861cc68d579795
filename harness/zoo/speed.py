"""Steps per second of a step-budget recipe's training, configurations alternated in one process.

    python -m harness.zoo.speed mnist_cnn_authors --steps 200 --rounds 3
    python -m harness.zoo.speed mnist_cnn_authors --threads     # thread settings, one process each

A shared, noisy machine makes timings from separate runs incomparable, so every configuration is
timed in turn, round after round, after a warm-up, and the report gives each one's median and its
ratio to the first (the baseline: `model.fit` on numpy arrays, as the default recipes train).
Thread settings fix TensorFlow's pools at start-up, so `--threads` alternates child processes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name -> (how, steps per compiled call, XLA)
CONFIGS = {
    "fit": ("fit", None, False),          # baseline: keras model.fit, batch 50, shuffled numpy arrays
    "loop1": ("loop", 1, False),          # custom tf.function step, one step a call
    "loop100": ("loop", 100, False),      # ... 100 steps a call (tf.while_loop)
    "loop10": ("loop", 10, False),        # ... 10 steps a call
    "loop1-nondet": ("loop", 1, False),   # one step a call, TensorFlow's op determinism off
    "xla1": ("loop", 1, True),            # jit_compile=True, one step a call
    "xla100": ("loop", 100, True),        # jit_compile=True, 100 steps a call (the trainer's setting)
}


def _set_determinism(on: bool) -> None:
    from tensorflow.python.framework import config

    # XLA refuses MaxPool's gradient under op determinism; determinism of the XLA path is checked
    # by the resume test instead (same state + same batches -> same bytes).
    (config.enable_op_determinism if on else config.disable_op_determinism)()


class _Trainer:
    def __init__(self, recipe, how, chunk, jit, deterministic):
        import keras

        from harness.zoo import budget, mnist

        self.how, self.chunk, self.recipe = how, chunk, recipe
        self.deterministic = deterministic and not jit
        _set_determinism(self.deterministic)
        self.x, self.y, _, _ = mnist.load_split()
        self.model, _, self.optimizer = budget.build(recipe)
        _set_determinism(self.deterministic)
        self.step = 0
        if how == "fit":
            self.model.compile(optimizer=self.optimizer,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        else:
            self.fn = budget.make_train_fn(self.model, self.optimizer, self.x, self.y, chunk, jit_compile=jit)

    def run(self, steps: int) -> float:
        """Seconds for `steps` optimizer steps (a whole number of calls/epochs)."""
        import numpy as np

        from harness.zoo import budget

        _set_determinism(self.deterministic)
        began = time.perf_counter()
        if self.how == "fit":
            per_epoch = len(self.x) // self.recipe.batch_size
            epochs = max(1, steps // per_epoch)
            # steps_per_epoch < a full pass would restart the dataset iterator each epoch: use whole
            # epochs, counted exactly by the optimizer.
            before = int(self.optimizer.iterations.numpy())
            self.model.fit(self.x, self.y, batch_size=self.recipe.batch_size, epochs=epochs, shuffle=True, verbose=0)
            done = int(self.optimizer.iterations.numpy()) - before
        else:
            done = 0
            while done < steps:
                idx = budget.batch_indices(self.recipe.seed, len(self.x), self.recipe.batch_size, self.step, self.chunk)
                float(self.fn(idx, np.int32(self.chunk)))
                done += self.chunk
                self.step += self.chunk
        return (time.perf_counter() - began) / done  # seconds per step


def measure(name: str, configs: list[str], steps: int, rounds: int) -> dict:
    from harness import zoo

    recipe = zoo.RECIPES[name]
    trainers = {c: _Trainer(recipe, *CONFIGS[c], deterministic="nondet" not in c) for c in configs}
    for trainer in trainers.values():
        trainer.run(min(steps, 100))  # warm-up: tracing, compilation
    times = {c: [] for c in configs}
    for _ in range(rounds):
        for c, trainer in trainers.items():
            times[c].append(trainer.run(steps))
    return {c: {"steps_per_second": 1 / statistics.median(t), "seconds_per_step": [round(x, 5) for x in t]}
            for c, t in times.items()}


def _child(args) -> None:
    import tensorflow as tf

    if args.intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    print("RESULT " + json.dumps(measure(args.name, args.configs, args.steps, args.rounds)), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.zoo.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="mnist_cnn_authors")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=160, help="steps per timing (fit: whole epochs of 80)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", action="store_true", help="alternate thread settings in child processes")
    parser.add_argument("--settings", nargs="+", default=None, help="with --threads: which thread settings")
    parser.add_argument("--intra", type=int, default=None)
    parser.add_argument("--inter", type=int, default=None)
    args = parser.parse_args(argv)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()
    if not args.threads:
        result = measure(args.name, args.configs, args.steps, args.rounds) if args.intra is None and args.inter is None \
            else None
        if result is None:
            return _child(args)
        base = result[args.configs[0]]["steps_per_second"]
        for c, r in result.items():
            print(f"{c:8s} {r['steps_per_second']:6.2f} steps/s  x{r['steps_per_second'] / base:.2f}  {r['seconds_per_step']}")
        return
    settings = [("default", []), ("intra2-inter1", ["--intra", "2", "--inter", "1"]),
                ("intra1-inter2", ["--intra", "1", "--inter", "2"]), ("intra1-inter1", ["--intra", "1", "--inter", "1"])]
    settings = [s for s in settings if not args.settings or s[0] in args.settings]
    rates = {s: [] for s, _ in settings}
    for _ in range(args.rounds):
        for label, extra in settings:
            out = subprocess.run([sys.executable, "-m", "harness.zoo.speed", args.name, "--configs", args.configs[0],
                                  "--steps", str(args.steps), "--rounds", "1", *extra,
                                  *([] if extra else ["--intra", "0"])],
                                 capture_output=True, text=True, env=os.environ, check=True).stdout
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            rates[label].append(json.loads(line[7:])[args.configs[0]]["steps_per_second"])
    base = statistics.median(rates["default"])
    for label, r in rates.items():
        print(f"{label:14s} {statistics.median(r):6.2f} steps/s  x{statistics.median(r) / base:.2f}  {[round(x, 2) for x in r]}")


if __name__ == "__main__":
    main()
