"""Step-budget training: the authors' recipes, trained for a number of optimizer steps, resumable.

A `StepRecipe` follows the authors' `src/train_cnn_models.py` / `src/train_mlp_models.py` (with
`labels="permuted"` their `--randlabels`): docs/training-budget.md, docs/random-labels.md. One recipe
is one trajectory: the batches of step s depend only on (seed, s), so `NAME@N` (exported on the way)
is the N-step model whatever the budget, and a stopped training resumes from its last checkpoint
bit-identically (weights, Adam moments and iteration count restored exactly).

Cache layout, under `harness.cache.cache_dir()/zoo` (beside the other built-ins):

    NAME@STEPS-<trajectory key>/        exported snapshot (SavedModel + harness.json)
    .train/NAME-<trajectory key>/       checkpoints: latest.npz (rolling), step-<N>.npz (kept at snapshots)
    .NAME.lock                          one trainer per trajectory
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from harness.cache import cache_dir
from harness.errors import HarnessError
from harness.zoo import mnist


@dataclass(frozen=True)
class StepRecipe:
    architecture: str                 # "cnn" or "mlp"
    learning_rate: float = 1e-4
    batch_size: int = 50
    steps: int = 55_000               # optimizer updates (the full budget; `NAME@N` stops at N)
    weight_decay: float = 0.0         # coefficient of sum of tf.nn.l2_loss(kernel) over conv1, conv2, fc1
    adam_epsilon: float = 1e-8        # tf.train.AdamOptimizer's default (Keras' is 1e-7)
    snapshots: tuple[int, ...] = (1_200, 5_000, 15_000, 30_000, 55_000)
    seed: int = 0
    version: int = 1                  # bump to invalidate caches when this training code changes
    labels: str = "true"              # "true", or "permuted" (the data randomization test's training set)

    def trajectory_key(self) -> str:
        """Everything that changes the weights after a given step: not the budget nor the snapshots.
        `labels="true"` is left out, so the true-label recipes keep their cached models' key."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("steps", "snapshots")}
        if fields["labels"] == "true":
            del fields["labels"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def training_labels(recipe: StepRecipe, y: np.ndarray) -> np.ndarray:
    """The true labels, or their permutation drawn from the seed alone (the same for every snapshot)."""
    if recipe.labels == "true":
        return y
    if recipe.labels == "permuted":
        return mnist.permuted_labels(y, recipe.seed)
    raise HarnessError(f"labels {recipe.labels!r}: valid are 'true' and 'permuted'")


def parse_name(name: str, recipes: dict) -> tuple[str, StepRecipe, int]:
    """`NAME` or `NAME@STEPS` -> (NAME, recipe, steps). Raises HarnessError on anything else."""
    match = re.fullmatch(r"([^@]+)@(\d+)", name)
    base, steps = (match.group(1), int(match.group(2))) if match else (name, None)
    recipe = recipes.get(base)
    if not isinstance(recipe, StepRecipe):
        if match:
            raise HarnessError(f"{name!r}: only step-budget models have snapshots (NAME@STEPS); "
                               f"valid: {', '.join(k for k, r in recipes.items() if isinstance(r, StepRecipe))}")
        raise HarnessError(f"{name!r} is not a step-budget model")
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise HarnessError(f"{name!r}: the number of steps must be at least 1")
    return base, recipe, steps


def snapshot_path(base: str, recipe: StepRecipe, steps: int) -> Path:
    return cache_dir() / "zoo" / f"{base}@{steps}-{recipe.trajectory_key()}"


def state_dir(base: str, recipe: StepRecipe) -> Path:
    return cache_dir() / "zoo" / ".train" / f"{base}-{recipe.trajectory_key()}"


def available_snapshots(base: str, recipe: StepRecipe) -> list[int]:
    """Steps of this trajectory's exported snapshots, ascending."""
    key = recipe.trajectory_key()
    steps = [p.name[len(base) + 1:-len(key) - 1] for p in (cache_dir() / "zoo").glob(f"{base}@*-{key}")
             if (p / "saved_model.pb").is_file()]
    return sorted(int(s) for s in steps if s.isdigit())


POLL_SECONDS = 10.0


@contextmanager
def trainer_lock(base: str, log: Callable[[str], None], ready: Callable[[], bool] | None = None):
    """One trainer per trajectory: yields True once the lock is held. With `ready`, a waiting process
    yields False (the lock not taken) as soon as `ready()` holds: a snapshot the running trainer
    exports on its way is used at once, not after the whole budget."""
    folder = cache_dir() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{base}.lock", "w") as lock:
        if not _locked(lock):
            log(f"waiting for another process training {base} ...")
            while not _locked(lock):
                if ready is not None and ready():
                    yield False
                    return
                time.sleep(POLL_SECONDS)
        yield True


def _locked(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def model_path(name: str, recipes: dict, log: Callable[[str], None] = print) -> Path:
    """The exported SavedModel of `NAME` / `NAME@STEPS`, trained (or resumed) first if needed.

    With `HARNESS_ZOO_TRAIN=0` a snapshot that is not in the cache is a HarnessError instead (the
    training-budget experiment then runs the snapshots at hand and reports the rest as skipped).
    """
    base, recipe, steps = parse_name(name, recipes)
    check_step_limit(base, steps)
    path = snapshot_path(base, recipe, steps)
    if not (path / "saved_model.pb").is_file():
        if os.environ.get("HARNESS_ZOO_TRAIN", "1") == "0":
            raise HarnessError(f"{base}@{steps} is not trained yet (HARNESS_ZOO_TRAIN=0); trained snapshots: "
                               f"{available_snapshots(base, recipe) or 'none'}; train with "
                               f"`python -m harness.zoo.train {base} --until {steps}`")
        with trainer_lock(base, log, ready=lambda: (path / "saved_model.pb").is_file()) as free:
            if free and not (path / "saved_model.pb").is_file():
                train_until(base, recipe, steps, log=log, progress=True)
    return path


def check_step_limit(base: str, steps: int, quick: int = 1200) -> None:
    """`HARNESS_ZOO_MAX_STEPS=N`: any built-in model of more than N steps is an error, cached or not
    (the test suite's guard against starting, or quietly using, a full-budget training)."""
    limit = os.environ.get("HARNESS_ZOO_MAX_STEPS")
    if limit is not None and steps > int(limit):
        raise HarnessError(f"{base}@{steps}: more steps than HARNESS_ZOO_MAX_STEPS={limit} allows; "
                           f"use a snapshot such as {base}@{min(int(limit), quick)}")


# -- checkpoints: w<i> the model's weights, o<i> the optimizer's variables, meta {step, history} ------
def save_checkpoint(path: Path, model, optimizer, step: int, history: list[dict]) -> None:
    """Written beside and renamed into place, so a kill never leaves half a checkpoint."""
    arrays = {f"w{i}": v.numpy() for i, v in enumerate(model.weights)}
    arrays |= {f"o{i}": v.numpy() for i, v in enumerate(optimizer.variables)}
    arrays["meta"] = np.array(json.dumps({"step": step, "history": history}))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_step(path: Path) -> int:
    with np.load(path) as data:
        return int(json.loads(str(data["meta"]))["step"])


def load_checkpoint(path: Path, model, optimizer) -> tuple[int, list[dict]]:
    with np.load(path) as data:
        for i, v in enumerate(model.weights):
            v.assign(data[f"w{i}"])
        for i, v in enumerate(optimizer.variables):
            v.assign(data[f"o{i}"])
        meta = json.loads(str(data["meta"]))
    if int(optimizer.iterations.numpy()) != meta["step"]:
        raise HarnessError(f"checkpoint {path} is inconsistent: step {meta['step']}, "
                           f"optimizer iterations {int(optimizer.iterations.numpy())}")
    return meta["step"], meta["history"]


def best_checkpoint(folder: Path, until: int) -> Path | None:
    """The checkpoint with the most steps not beyond `until` (latest.npz or a kept step-N.npz)."""
    best, best_step = None, -1
    for path in sorted(folder.glob("*.npz")):
        try:
            step = checkpoint_step(path)
        except Exception:  # noqa: BLE001 - a damaged file is skipped, never trusted
            continue
        if best_step < step <= until:
            best, best_step = path, step
    return best


def batch_indices(seed: int, n_train: int, batch_size: int, first_step: int, count: int) -> np.ndarray:
    """[count, batch_size] training-set indices of steps first_step .. first_step + count - 1.

    Epoch e visits a permutation drawn from (seed, e) in consecutive batches (as the authors'
    `shuffle_batch`; a remainder smaller than a batch is not used): a pure function of the step.
    """
    per_epoch = n_train // batch_size
    rows, epoch, order = [], None, None
    for step in range(first_step, first_step + count):
        e, b = divmod(step, per_epoch)
        if e != epoch:
            epoch, order = e, np.random.default_rng([seed, e]).permutation(n_train)
        rows.append(order[b * batch_size:(b + 1) * batch_size])
    return np.asarray(rows, dtype=np.int32).reshape(count, batch_size)


# -- the model, the optimizer, the compiled steps ----------------------------------------------------
def build(recipe: StepRecipe):
    """(model, initializer specs, optimizer) with freshly initialized weights and built optimizer."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    if recipe.architecture == "cnn":
        # Keras L2(c) adds c * sum(w^2); tf.nn.l2_loss is sum(w^2) / 2.
        model, initializers = mnist.build_cnn(l2=recipe.weight_decay / 2, dropout=0.0)
    elif recipe.weight_decay:
        raise HarnessError("weight decay is defined for the CNN only (the authors' MLP has none)")
    else:
        model, initializers = mnist.build_mlp()
    optimizer = keras.optimizers.Adam(recipe.learning_rate, epsilon=recipe.adam_epsilon)
    optimizer.build(model.trainable_variables)
    return model, initializers, optimizer


def make_train_fn(model, optimizer, x, y, chunk: int, jit_compile: bool = False):
    """A compiled `fn(indices [chunk, batch] int32, n) -> last loss` running n <= chunk steps.

    The images live in the graph's variables (no per-step host copy); each step gathers its batch.
    """
    import keras
    import tensorflow as tf

    images = tf.Variable(x, trainable=False, name="train_images")
    labels = tf.Variable(y.astype(np.int32), trainable=False, name="train_labels")
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables

    def one_step(idx):
        with tf.GradientTape() as tape:
            logits = model(tf.gather(images, idx), training=True)
            loss = cross_entropy(tf.gather(labels, idx), logits)
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def run(indices, n):
        loss = tf.constant(0.0)
        for i in tf.range(n):
            loss = one_step(indices[i])
        return loss

    run.keep_alive = (images, labels)  # the variables must outlive the function's graph captures
    return run


def set_op_determinism(on: bool) -> None:
    """TensorFlow's deterministic kernels (the default path). XLA has no deterministic MaxPool
    gradient, so `jit_compile=True` trains without them (harness.bench.training times both)."""
    from tensorflow.python.framework import config

    (config.enable_op_determinism if on else config.disable_op_determinism)()


def device_name() -> str:
    """The GPU's name when TensorFlow sees one (it then trains there), else the CPU model and cores."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name") or gpus[0].name)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return f"CPU ({model or 'unknown'}, {len(os.sched_getaffinity(0))} cores)"


# -- training ----------------------------------------------------------------------------------------
def stop_on_sigterm():
    """`kill` stops training as Ctrl-C does (a KeyboardInterrupt: the checkpoint is written); returns
    the previous handler. Signal handlers live in the main thread only."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


CHUNK = 100                  # steps per compiled call (one Python round trip per chunk)
CHECKPOINT_SECONDS = 120.0   # the rolling checkpoint is rewritten at most this often (and at the end)


def train_until(base: str, recipe: StepRecipe, until: int, log: Callable[[str], None] = print,
                progress: bool = True, export: bool = True, jit_compile: bool = False,
                checkpoint_seconds: float = CHECKPOINT_SECONDS, stop_after: int | None = None):
    """Train (resuming from the best checkpoint) up to step `until`; export snapshots on the way.

    The caller holds `trainer_lock(base)`. Exports every recipe snapshot in [start, until] that is
    missing, and the model at `until`. `stop_after` (tests) stops after that many steps of this
    invocation, as a kill would, after writing the checkpoint. Returns (model, step, history).
    """
    import tensorflow as tf

    from harness.progress import progress_bar

    x_train, y_train, _, _ = mnist.load_split()
    y_train = training_labels(recipe, y_train)
    set_op_determinism(not jit_compile)
    model, initializers, optimizer = build(recipe)
    folder = state_dir(base, recipe)
    step, history = 0, []
    resume = best_checkpoint(folder, until)
    if resume is not None:
        step, history = load_checkpoint(resume, model, optimizer)
        log(f"{base}: resuming at step {step} from {resume}")
    elif until:
        log(f"{base}: training from scratch to step {until} (checkpoints in {folder})")
    train = make_train_fn(model, optimizer, x_train, y_train, CHUNK, jit_compile=jit_compile)
    device = device_name()
    # The resumed step too (a kill during its export leaves its checkpoint and no snapshot); a
    # snapshot exported on an earlier pass is not exported again.
    pending = [s for s in sorted({s for s in recipe.snapshots if step <= s <= until} | {until})
               if not (snapshot_path(base, recipe, s) / "saved_model.pb").is_file()]
    if export and step in pending:
        export_snapshot(base, recipe, step, model, initializers, history, log)
    # A rolling checkpoint beyond `until` (an earlier snapshot rebuilt from a kept step-N.npz) stays.
    latest = folder / "latest.npz"
    keep_latest = latest.is_file() and resume != latest and checkpoint_step(latest) > until
    start, seconds, last_saved = step, 0.0, time.perf_counter()
    stop_at = until if stop_after is None else min(until, step + stop_after)
    began = time.perf_counter()

    def record() -> list[dict]:
        segment = {"from": start, "to": step, "seconds": round(seconds, 3), "device": device}
        return history + [segment] if step > start else history

    with progress_bar(total=until, initial=step, desc=f"training {base}", unit="step", disable=not progress,
                      mininterval=2.0, smoothing=0.05) as bar:
        try:
            while step < stop_at:
                n = min([s for s in pending if s > step] + [stop_at, step + CHUNK]) - step
                indices = np.zeros((CHUNK, recipe.batch_size), np.int32)
                indices[:n] = batch_indices(recipe.seed, len(x_train), recipe.batch_size, step, n)
                began = time.perf_counter()
                loss = float(train(indices, tf.constant(n, tf.int32)))  # waits for the chunk
                seconds += time.perf_counter() - began
                step += n
                bar.update(n)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if not np.isfinite(loss):
                    raise HarnessError(f"{base}: loss is {loss} at step {step}")
                snapshot = step in pending
                if snapshot and step in recipe.snapshots:
                    save_checkpoint(folder / f"step-{step}.npz", model, optimizer, step, record())
                due = step == stop_at or time.perf_counter() - last_saved > checkpoint_seconds
                if (snapshot or due) and not keep_latest:
                    save_checkpoint(latest, model, optimizer, step, record())
                    last_saved = time.perf_counter()
                if snapshot and export:
                    bar.clear()
                    export_snapshot(base, recipe, step, model, initializers, record(), log)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the train command: keep what was done
            # TensorFlow finishes a running call before Python sees the signal, so the optimizer's
            # count is the step the weights are at.
            if int(optimizer.iterations.numpy()) != step:  # the interrupted call had finished
                seconds += time.perf_counter() - began
                step = int(optimizer.iterations.numpy())
            if step > start and not keep_latest:
                save_checkpoint(latest, model, optimizer, step, record())
                log(f"{base}: interrupted; checkpoint at step {step}")
            raise
    return model, step, record()


def training_metrics(model, recipe: StepRecipe, step: int, history: list[dict]) -> dict:
    """`train_accuracy` on the labels trained on (for a random-label recipe: how far it memorized
    them, with `train_accuracy_true_labels` beside it); `test_accuracy` on the held-out digits."""
    x_train, y_true, x_test, y_test = mnist.load_split()
    predicted = np.argmax(model.predict(x_train, batch_size=500, verbose=0), axis=1)
    seconds = sum(h["seconds"] for h in history)
    devices = sorted({h["device"] for h in history})
    extra = {} if recipe.labels == "true" else {
        "labels": recipe.labels, "train_accuracy_true_labels": float(np.mean(predicted == y_true))}
    return {
        "train_accuracy": float(np.mean(predicted == training_labels(recipe, y_true))),
        "test_accuracy": mnist.accuracy(model, x_test, y_test),
        **extra,
        "steps": int(step),
        "epochs": step * recipe.batch_size / len(x_train),
        "train_seconds": seconds,
        "steps_per_second": step / seconds if seconds else None,
        "device": " + ".join(devices) if devices else None,
        "segments": history,           # one entry per invocation that trained part of the budget
        "train_size": int(len(x_train)),
        "test_size": int(len(x_test)),
    }


def export_snapshot(base: str, recipe: StepRecipe, step: int, model, initializers, history, log) -> Path:
    path = snapshot_path(base, recipe, step)
    metrics = training_metrics(model, recipe, step, history)
    name = f"{base}@{step}"
    log(f"  {name}: train accuracy {metrics['train_accuracy']:.4f}, held-out accuracy "
        f"{metrics['test_accuracy']:.4f}, {metrics['train_seconds']:.0f} s of training on {metrics['device']}")
    mnist.export_model(model, path, name, initializers, asdict(replace(recipe, steps=step)), metrics)
    return path
