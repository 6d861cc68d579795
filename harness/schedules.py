"""Layer randomization: schedules of steps and re-initialization schemes, applied in place, self-checked.

Step 0 is always the unrandomized model. A step assigns new values to the existing variables of its
blocks (no rebuild, so compiled functions do not retrace), proves that exactly those blocks changed,
and afterwards restores them bit for bit from the trained snapshot (and proves that too).
"""
from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.bitwise import same_bits
from harness.rules import NULL, TEXT, check, number, one_of, whole
from harness.errors import HarnessError
from harness.results import ORIGINAL, RANDOM_LABELS
from harness.models.wrapper import Block, ModelUnderTest, ModelVariable, variable_role

SCHEMES = ("auto", "own", "he_truncated_normal", "truncated_normal", "glorot_uniform", "uniform", "permute",
           "donor")
BN_STATS = ("keep", "reset")
DRAWS = ("per_step", "nested")


class RandomizationCheckError(RuntimeError):
    """The self-check found a variable that should (not) have changed: the run must not go on."""


@dataclass(frozen=True)
class Step:
    index: int
    block: str                       # the block this step adds ("original" at step 0)
    randomized: tuple[str, ...]      # every block randomized at this step


def _accumulating(names: list[str]) -> list[Step]:
    return [Step(i, block, tuple(names[:i])) for i, block in enumerate(names, start=1)]


# name -> the steps after step 0, over block names in execution order (input -> output); a new
# schedule is one entry here plus conf/schedule/<name>.yaml.
SCHEDULES: dict[str, Callable[[list[str]], list[Step]]] = {
    "cascading": lambda names: _accumulating(names[::-1]),  # top block first (the paper's Figure 2)
    "bottom_up": _accumulating,  # from the input upward (Hedström et al.)
    "smprt": _accumulating,  # sMPRT (Hedström et al. 2024): bottom-up, every map denoised (Smoothing)
    "independent": lambda names: [Step(i, block, (block,)) for i, block in enumerate(names[::-1], start=1)],
    # the paper's data randomization test: every block from the random-label model (scheme `donor`)
    "data_randomization": lambda names: [Step(1, RANDOM_LABELS, tuple(names))],
}
# Schedules whose every map is averaged over noisy copies of the input (`Smoothing`).
SMOOTHED = {"smprt"}


def schedule_steps(kind: str, block_names: Sequence[str]) -> list[Step]:
    if kind not in SCHEDULES:
        raise HarnessError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    return [Step(0, ORIGINAL, ()), *SCHEDULES[kind](list(block_names))]


def rules() -> dict:
    """What each schedule setting may be (checked by harness.checks.check_config)."""
    return {
        "name": one_of(*SCHEDULES),
        "scheme": one_of(*SCHEMES),
        "std": number(above=0),          # truncated_normal: 0 would leave every kernel at zero
        "low": number(),                 # uniform, with high: low < high
        "high": number(),
        "bn_stats": one_of(*BN_STATS),
        "draws": one_of(*DRAWS),
        "donor_model": NULL | TEXT,
        "samples": whole(1),             # smoothed schedules (Smoothing)
        "spread": number(0),
    }


def check_settings(cfg: Mapping[str, Any]) -> None:
    check(cfg, rules(), prefix="schedule.")
    if "low" in cfg and "high" in cfg and not cfg["low"] < cfg["high"]:
        raise HarnessError(f"schedule.low must be below schedule.high, got low {cfg['low']!r}, high {cfg['high']!r}")
    Smoothing.from_config(cfg)


@dataclass(frozen=True)
class Smoothing:
    """sMPRT's denoising (Hedström et al. 2024): each map of a smoothed schedule is the mean of the
    method's maps over `samples` copies of the image with Gaussian noise of sigma = spread x (max - min
    of the image), the last copy noise-free (harness.methods.smoothgrad.denoised). The runner draws the
    same copies for every model state, so maps differ by the model, not by the noise."""
    samples: int = 50
    spread: float = 0.1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Smoothing | None":
        """None for a schedule without smoothing, whose smoothing settings are an error (else ignored)."""
        given = [k for k in ("samples", "spread") if cfg.get(k) is not None]
        if cfg["name"] not in SMOOTHED:
            if given:
                raise HarnessError(f"schedule.{given[0]} belongs to a smoothed schedule "
                                   f"({', '.join(sorted(SMOOTHED))}); schedule {cfg['name']!r} has no such setting")
            return None
        return cls(int(cfg.get("samples", cls.samples)), float(cfg.get("spread", cls.spread)))


@dataclass(frozen=True)
class Reinit:
    """How a block is re-initialized."""
    scheme: str = "auto"             # see SCHEMES; "auto" = own initializer if known, else He
    std: float = 0.01                # truncated_normal
    low: float = -0.05               # uniform
    high: float = 0.05
    bn_stats: str = "keep"           # batch-norm moving statistics: keep (authors' code) or reset
    draws: str = "per_step"          # fresh draws every step (paper) or once per block (nested)
    seed: int = 0
    # scheme "donor": each variable takes the value of the same-named variable of another model of the
    # same architecture (the random-label model of the data randomization test).
    donor: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for value, valid, what in ((self.scheme, SCHEMES, "re-initialization scheme"),
                                   (self.bn_stats, BN_STATS, "bn_stats"), (self.draws, DRAWS, "draws")):
            if value not in valid:
                raise HarnessError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], seed: int = 0) -> "Reinit":
        keys = {"scheme", "std", "low", "high", "bn_stats", "draws"}
        return cls(seed=seed, **{k: cfg[k] for k in keys if k in cfg and cfg[k] is not None})

    def with_donor(self, model: ModelUnderTest, donor: ModelUnderTest) -> "Reinit":
        """Scheme `donor` with the values of `donor`, checked to match `model` name by name."""
        values = {v.name: v.variable.numpy() for v in donor.variables}
        # Only block variables are copied: state outside blocks (a dropout seed) may differ.
        for v in (v for block in model.blocks for v in block.variables):
            if v.name not in values or values[v.name].shape != v.shape:
                raise HarnessError(f"donor model {donor.name} does not match {model.name}: variable {v.name} "
                                   f"{list(v.shape)} has no same-named, same-shaped counterpart")
        return dataclasses.replace(self, donor=values)


# kernel | bias | gamma | moving_stat | other, from the variable's name, shape and dtype (not its
# trainability: a frozen kernel is still randomized).
role = variable_role


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


# Standard deviation of a unit normal truncated at +-2 standard deviations.
TRUNCATED_STD = 0.87962566103423978
# Values drawn at a time by _truncated_normal: a float64 scratch of 512 KiB that stays in the CPU's
# caches (a whole kernel drawn in float64 first was slow to fault in on some machines).
DRAW_CHUNK = 1 << 16
# Threads drawing a step's variables side by side (draw_blocks): one per core this process may use.
DRAW_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _truncated_normal(rng, shape, std, mean=0.0, dtype=np.float64) -> np.ndarray:
    """Normal truncated at two standard deviations, as keras TruncatedNormal(stddev) draws it: `std` is
    the std before truncation. Rejection sampling, bit for bit the values of drawing the whole array in
    float64, redrawing every value outside +-2 until none is, scaling (`mean + std * value`) and
    casting to `dtype` (tests/test_schedules.py); drawn DRAW_CHUNK values at a time (a generator's
    stream does not depend on how its draws are split), and only the values just redrawn tested again.
    """
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)  # a view: `out` is contiguous
    scratch = np.empty(min(flat.size, DRAW_CHUNK))
    outside = []
    for start in range(0, flat.size, DRAW_CHUNK):
        chunk = scratch[: min(DRAW_CHUNK, flat.size - start)]
        rng.standard_normal(out=chunk)
        outside.append(np.flatnonzero(np.abs(chunk) > 2.0) + start)
        chunk *= std  # mean + std * value, as two in-place steps (the rounding of the redraws below)
        chunk += mean
        flat[start:start + chunk.size] = chunk
    redraw = np.concatenate(outside) if outside else np.empty(0, np.intp)
    while redraw.size:
        drawn = rng.standard_normal(redraw.size)
        flat[redraw] = drawn * std + mean
        redraw = redraw[np.abs(drawn) > 2.0]
    return out


def _from_spec(spec: Mapping[str, Any], shape, rng, dtype=np.float64) -> np.ndarray:
    kind = spec["kind"]
    if kind == "truncated_normal":
        return _truncated_normal(rng, shape, spec["std"], spec.get("mean", 0.0), dtype)
    if kind == "normal":
        return rng.normal(spec.get("mean", 0.0), spec["std"], size=shape)
    if kind == "uniform":
        return rng.uniform(spec["low"], spec["high"], size=shape)
    if kind == "constant":
        return np.full(shape, spec["value"])
    if kind == "variance_scaling":
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[spec["mode"]]
        if spec["distribution"] == "uniform":
            limit = np.sqrt(3.0 * spec["scale"] / fan)
            return rng.uniform(-limit, limit, size=shape)
        # Keras divides by .87962566 so that the *truncated* normal has the wanted variance.
        return _truncated_normal(rng, shape, np.sqrt(spec["scale"] / fan) / TRUNCATED_STD, dtype=dtype)
    raise HarnessError(f"unknown initializer kind {kind!r} in model metadata")


def draw(v: ModelVariable, reinit: Reinit, rng: np.random.Generator, current: np.ndarray) -> np.ndarray | None:
    """New value for one variable, or None when the scheme leaves it alone. A truncated normal is drawn
    in the variable's dtype when NumPy has it (the float64 values cast, as assigning them would)."""
    kind, shape = role(v), v.shape
    scheme = ("own" if v.initializer else "he_truncated_normal") if reinit.scheme == "auto" else reinit.scheme
    floats = (np.float16, np.float32, np.float64)
    dtype = current.dtype if current is not None and current.dtype in floats else np.dtype(np.float64)
    if scheme == "donor":
        return reinit.donor[v.name]
    if kind == "moving_stat":
        if reinit.bn_stats == "keep":
            return None
        return np.zeros(shape) if "mean" in v.name.rsplit("/", 1)[-1] else np.ones(shape)
    if kind == "other":
        return None
    if scheme == "permute":
        return rng.permutation(current.ravel()).reshape(shape)
    if scheme == "own":
        if not v.initializer:
            raise HarnessError(f"scheme 'own': variable {v.name} has no recorded initializer; use scheme "
                               f"auto or one of {', '.join(SCHEMES[2:])}")
        return _from_spec(v.initializer, shape, rng, dtype)
    if kind in ("bias", "gamma"):
        # Biases and batch-norm beta go back to their initial constant; gamma to one.
        if v.initializer and v.initializer["kind"] == "constant":
            return np.full(shape, v.initializer["value"])
        return np.full(shape, 1.0 if kind == "gamma" else 0.0)
    fan_in, fan_out = _fans(shape)
    if scheme == "he_truncated_normal":
        # The values drawn have std sqrt(2 / fan_in), as keras HeNormal and slim's
        # variance_scaling_initializer give; so the pre-truncation std is larger.
        return _truncated_normal(rng, shape, np.sqrt(2.0 / fan_in) / TRUNCATED_STD, dtype=dtype)
    if scheme == "truncated_normal":
        # schedule.std is the pre-truncation std, as keras TruncatedNormal(stddev) and
        # tf.truncated_normal_initializer take it (the paper's "truncated normal").
        return _truncated_normal(rng, shape, reinit.std, dtype=dtype)
    if scheme == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)
    return rng.uniform(reinit.low, reinit.high, size=shape)  # "uniform"


def stable_hash(text: str) -> int:
    """A name as a seed component: the same in every process (unlike hash())."""
    return zlib.crc32(text.encode())


def block_rng(reinit: Reinit, block: str, step: int, variable: str) -> np.random.Generator:
    """Seeded from the run seed, the block and variable names, and (per_step draws) the step."""
    step_part = step if reinit.draws == "per_step" else 0
    return np.random.default_rng([reinit.seed, stable_hash(block), stable_hash(variable), step_part])


def draw_blocks(blocks: Sequence[Block], reinit: Reinit, step: int) -> list[list[np.ndarray | None]]:
    """New values for every variable of each block (None: left alone), drawn in threads, largest first.
    Each variable has its own generator (block_rng), so the values are those of drawing them one after
    another; NumPy lets go of the GIL while it fills arrays, so large kernels draw on every core."""
    jobs = [(block.name, v, v.read()) for block in blocks for v in block.variables]

    def new_value(job) -> np.ndarray | None:
        name, v, current = job
        return draw(v, reinit, block_rng(reinit, name, step, v.name), current)

    largest_first = sorted(range(len(jobs)), key=lambda k: -jobs[k][1].size)  # threads that end together
    drawn: list[np.ndarray | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=DRAW_THREADS) as pool:
        for k, value in zip(largest_first, pool.map(new_value, [jobs[k] for k in largest_first])):
            drawn[k] = value
    in_order = iter(drawn)
    return [[next(in_order) for _ in block.variables] for block in blocks]


def randomize_block(block: Block, values: Sequence[np.ndarray | None]) -> list[str]:
    """Assign a block's new values (draw_blocks) in place; returns the names assigned."""
    assigned = []
    for v, value in zip(block.variables, values, strict=True):
        if value is not None:
            v.variable.assign(np.asarray(value, v.variable.dtype.as_numpy_dtype))  # no copy when drawn in its dtype
            assigned.append(v.name)
    return assigned


@dataclass
class Randomizer:
    """Applies schedule steps to a model in place; proves each step and the final restore."""
    model: ModelUnderTest
    reinit: Reinit
    trained: list = field(default_factory=list)  # the trained values (ModelUnderTest.snapshot)
    assigned: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        self.trained = self.model.snapshot()

    @contextmanager
    def step(self, step: Step) -> Iterator[None]:
        self.assigned = {}
        # Only the step's blocks are assigned back; the check after restoring proves every other
        # variable is still the trained one.
        touched = {v.name for name in step.randomized for v in self.model.block(name).variables}
        try:
            blocks = [self.model.block(name) for name in step.randomized]
            for block, values in zip(blocks, draw_blocks(blocks, self.reinit, step.index)):
                self.assigned[block.name] = randomize_block(block, values)
            self.check(step.randomized)
            yield
        finally:
            self.model.restore(self.trained, touched)
        self.check(())

    def check(self, randomized: Sequence[str]) -> None:
        """Untouched variables bit-identical to the trained ones; each randomized block changed."""
        # A block of constants (an untrained batch-norm beta) may be re-assigned the same values, so
        # "changed" is demanded of kernels only; every block must be assigned.
        for name in randomized:
            if not self.assigned.get(name):
                raise RandomizationCheckError(f"self-check failed: nothing in block {name} was re-initialized")
        expected = {v.name for name in randomized for v in self.model.block(name).variables}
        for v, trained in zip(self.model.variables, self.trained, strict=True):
            same = same_bits(v.read(), np.asarray(trained))
            if v.name not in expected and not same:
                raise RandomizationCheckError(
                    f"self-check failed: {v.name} changed but is not in the randomized blocks {list(randomized)}")
            if v.name in expected and same and role(v) == "kernel":
                raise RandomizationCheckError(f"self-check failed: kernel {v.name} was not re-initialized")
