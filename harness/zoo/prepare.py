"""Train, before a run's experiments start, every built-in model they need that is not cached yet.

The whole list is known up front, so one line says what will be trained and about how long that
takes here (2 idle cores as the reference, scaled by a short measured warm-up), and independent
trainings run side by side in separate processes when the machine has the cores for it.

    python -m harness.zoo.prepare NAME [NAME ...] --threads N   # one worker: these models in order
    python -m harness.zoo.prepare --warm-up                     # seconds per step of the CNN here
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from harness import zoo
from harness.errors import HarnessError
from harness.zoo import budget, segmenter

# Seconds of training on 2 idle CPU cores (the reference; docs/training-budget.md): the authors' CNN
# and MLP (the random-label `*_randlabels_authors` run the same step), the shortcut fits, the
# segmenter's step.
CNN_STEPS_PER_SECOND = 26.0
MLP_STEPS_PER_SECOND = 39.0
FIT_SECONDS = {"cnn": 150.0, "mlp": 55.0}
SEG_STEP_SECONDS = 0.15
START_SECONDS = 15.0  # each training's own: TensorFlow's import, the digits' parsing, the export
MIN_THREADS = 2       # per training side by side: 1 thread each was slower on 2 shared cores
WARM_UP_STEPS = 60


def plan(names: list[str]) -> list[list[str]]:
    """The built-in models among `names` that must be trained, one list per trajectory (a worker
    trains it in order, each snapshot resuming from the one before), longest first. Names that
    cannot be trained here (unknown, past HARNESS_ZOO_MAX_STEPS) are left to the experiment that
    names them; with HARNESS_ZOO_TRAIN=0 nothing is trained ahead."""
    if os.environ.get("HARNESS_ZOO_TRAIN", "1") == "0":
        return []
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(zoo.canonical(n) for n in names):
        try:
            path = zoo.cached_path(name)
            budget.check_step_limit(name.partition("@")[0], _steps(name))
        except HarnessError:
            continue
        if not (path / "saved_model.pb").is_file():
            groups.setdefault(name.partition("@")[0], []).append(name)
    return sorted((sorted(g, key=_steps) for g in groups.values()), key=reference_seconds, reverse=True)


def _steps(name: str) -> int:
    """Optimizer steps of a (canonical) snapshot name; 0 for the shortcut fits."""
    recipe = zoo.recipe_of(name)
    if isinstance(recipe, segmenter.SegRecipe):
        return segmenter.parse_steps(name, recipe)
    if isinstance(recipe, budget.StepRecipe):
        return budget.parse_name(name, zoo.RECIPES)[2]
    return 0


def reference_seconds(group: list[str]) -> float:
    """Seconds one trajectory's training takes on the reference machine, from its best checkpoint."""
    recipe = zoo.recipe_of(group[-1])
    if isinstance(recipe, budget.StepRecipe):
        base, _, steps = budget.parse_name(zoo.canonical(group[-1]), zoo.RECIPES)
        done = budget.best_checkpoint(budget.state_dir(base, recipe), steps)
        left = steps - (budget.checkpoint_step(done) if done else 0)
        seconds = left / (CNN_STEPS_PER_SECOND if recipe.architecture == "cnn" else MLP_STEPS_PER_SECOND)
    elif isinstance(recipe, segmenter.SegRecipe):
        seconds = sum(_steps(name) for name in group) * SEG_STEP_SECONDS
    else:
        seconds = FIT_SECONDS[recipe.architecture]
    return START_SECONDS + seconds


def workers(count: int, cores: int | None = None, gpu: bool = False) -> int:
    """Trainings at once: one where a GPU trains them or on one core, else one per core at most."""
    cores = cores or len(os.sched_getaffinity(0))
    return 1 if gpu or cores < 2 else min(count, cores)


def threads(slots: int, cores: int | None = None) -> int:
    """TensorFlow's intra- and inter-op threads of each of `slots` trainings side by side."""
    return max(MIN_THREADS, (cores or len(os.sched_getaffinity(0))) // slots)


def wall_seconds(seconds: list[float], slots: int, cores: int | None = None) -> float:
    """Wall time at the reference machine's speed of trainings of these reference lengths: the
    busiest slot's, or all the work spread over the cores (the reference has 2), whichever is longer."""
    return max(makespan(seconds, slots), sum(seconds) * 2 / max(cores or len(os.sched_getaffinity(0)), 2))


def makespan(seconds: list[float], slots: int) -> float:
    """Wall time of jobs of these lengths, longest first, each to the slot that frees first."""
    ends = [0.0] * slots
    for s in sorted(seconds, reverse=True):
        ends[ends.index(min(ends))] += s
    return max(ends)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 90 else f"{max(1, round(seconds))} s"


def train_all(names: list[str], log: Callable[[str], None] = print,
              quick_names: Callable[[], list[str]] | None = None) -> None:
    """Train what `plan(names)` lists: one line up front (what, how long here, and the quick run's
    training if `quick_names` gives its models), then side by side where `workers` says."""
    import tensorflow as tf

    groups = plan(names)
    if not groups:
        return
    slots = workers(len(groups), gpu=bool(tf.config.list_physical_devices("GPU")))
    slowdown = warm_up() * CNN_STEPS_PER_SECOND
    models = [name for group in groups for name in group]
    seconds = wall_seconds([reference_seconds(g) for g in groups], slots) * slowdown
    line = (f"training {len(models)} model{'s' * (len(models) != 1)} ({', '.join(models)}), about "
            f"{_duration(seconds)} on this machine{f', {slots} at a time' if slots > 1 else ''}")
    quick = plan(quick_names()) if quick_names is not None else None
    if quick:
        quick_seconds = wall_seconds([reference_seconds(g) for g in quick], slots) * slowdown
        line += f"; `--quick` trains early snapshots instead ({_duration(quick_seconds)})"
    log(line)
    if slots > 1:
        _side_by_side(groups, slots, threads(slots))
        return
    for name in models:
        zoo.model_path(name, log=log)


def warm_up() -> float:
    """Seconds per optimizer step of the authors' CNN here, measured in a process of its own (its
    seeds and op determinism stay there)."""
    done = subprocess.run([sys.executable, "-m", "harness.zoo.prepare", "--warm-up"], capture_output=True,
                          text=True)
    if done.returncode:
        raise HarnessError(f"the training warm-up failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_step"])


def _measure() -> float:
    import numpy as np

    recipe = zoo.RECIPES["mnist_cnn_authors"]
    x, y, _, _ = zoo.mnist.load_split()
    budget.set_op_determinism(True)
    model, _, optimizer = budget.build(recipe)
    chunk = WARM_UP_STEPS // 3
    train = budget.make_train_fn(model, optimizer, x, y, chunk=chunk)
    steps = [budget.batch_indices(recipe.seed, len(x), recipe.batch_size, s, chunk)
             for s in range(0, WARM_UP_STEPS + 1, chunk)]
    float(train(steps[0], np.int32(chunk)))  # tracing
    began = time.perf_counter()
    for indices in steps[1:]:
        float(train(indices, np.int32(chunk)))
    return (time.perf_counter() - began) / WARM_UP_STEPS


def _side_by_side(groups: list[list[str]], slots: int, threads: int) -> None:
    """Each trajectory in a `python -m harness.zoo.prepare` process, `slots` at a time, longest first."""
    waiting, running = list(groups), []
    # `kill` stops the workers too (each writes its checkpoint), as Ctrl-C does, not only this process.
    main = threading.current_thread() is threading.main_thread()
    previous = budget.stop_on_sigterm() if main else None
    try:
        while waiting or running:
            while waiting and len(running) < slots:
                running.append(subprocess.Popen([sys.executable, "-m", "harness.zoo.prepare", *waiting.pop(0),
                                                 "--threads", str(threads)]))
            time.sleep(0.5)
            for process in [p for p in running if p.poll() is not None]:
                running.remove(process)
                if process.returncode:
                    raise HarnessError(f"training {' '.join(process.args[3:-2])} stopped (exit status "
                                       f"{process.returncode}); the same command resumes it")
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait()
        if main:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.zoo.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="built-in models of one trajectory, trained in this order")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow's intra- and inter-op threads")
    parser.add_argument("--warm-up", action="store_true", help="print the CNN's seconds per step here (JSON)")
    args = parser.parse_args(argv)
    from harness import progress
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.warm_up:
        print(json.dumps({"seconds_per_step": _measure()}), flush=True)
        return
    progress.LINES_ONLY = True  # bars of trainings side by side would overwrite each other's line
    budget.stop_on_sigterm()  # stopped by the parent: checkpoint, as on Ctrl-C
    try:
        for name in args.names:
            zoo.model_path(name, log=lambda line: print(line, flush=True))
    except HarnessError as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
