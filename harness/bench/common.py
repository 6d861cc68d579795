"""What the bench's scenarios share: the models and images they time (`Subject`), rounds that take
the sides in turn, the raw-TensorFlow limit, the row every timing becomes, and the writer of
results/bench/bench.md and the generated docs/benchmarks.md."""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.oracle import Reference, mnist_keras_twin

# Settings that make a warm-up call cheap while tracing the same kernels.
WARM_UP = {"samples": 1, "steps": 2, "stride": 10 ** 6}
# Rounds per side, by its own first time: quicker sides are timed more often (best kept).
ROUNDS = ((2.0, 5), (10.0, 3))
PAIRED = 3  # rounds both sides need for their ratio to be the median of per-round ratios
# Inception scale: 2-core CPU, ~0.1-0.3 s per forward+backward row.
INCEPTION = {"smoothgrad": {"samples": 8}, "vargrad": {"samples": 8}, "integrated_gradients": {"steps": 8},
             "ig_smoothgrad": {"samples": 4, "steps": 4}, "xrai": {"steps": 8}, "blur_ig": {"steps": 8},
             "guided_ig": {"steps": 8}, "occlusion": {"size": 294}}  # 6 x 6 window positions
MODELS = ("cnn", "inception")


@dataclass
class Options:
    """A bench run's settings (the command line's)."""
    quick: bool = False                       # 1 image, few samples / steps: a smoke run
    repeats: int = 1                          # rounds per side at the least
    models: tuple[str, ...] = MODELS          # the method and repaired-test rows' models
    methods: tuple[str, ...] | None = None    # None: every registered method
    protocol: dict = field(default_factory=dict)  # protocol.measure_all's keyword arguments


# -- subjects ----------------------------------------------------------------------------------------
@dataclass
class Subject:
    """A model, its images (model space), targets, the PAIR user's reference, and method settings."""
    name: str
    model: object
    images: np.ndarray
    targets: np.ndarray
    reference: Reference
    params: dict[str, dict]
    note: str = ""


@functools.cache
def subject(key: str, quick: bool) -> Subject:
    """The `cnn` or `inception` subject, built once a process (the methods and the repaired tests
    time the same one), its reference warmed up."""
    made = {"cnn": _cnn, "inception": _inception}[key](1 if quick else {"cnn": 3, "inception": 2}[key], quick)
    made.reference.warm_up(made.images)
    return made


def _cnn(count: int, quick: bool) -> Subject:
    from harness.data import load_images
    from harness.models import load_model
    from harness.models.keras_guided import keras_endpoint_model

    # The default CNN's early snapshot: the same network (timing does not depend on how long it was
    # trained), and `make bench` on a fresh machine trains it in a minute instead of most of an hour.
    model = load_model({"source": "builtin:mnist_cnn@1200", "gradcam_endpoint": "conv2"}, log=lambda _: None)
    x = model.input_spec.to_model_space(load_images({"source": "mnist", "count": count}, (28, 28), 1).images)
    reference = Reference(model.logits, model.tensor_spec(), keras_endpoint_model(mnist_keras_twin(model), "conv2"))
    return Subject("mnist_cnn", model, x, np.argmax(model.predict(x), 1).astype(np.int32), reference,
                   _with_endpoint({} if not quick else _quick(), "conv2"),
                   f"SavedModel through tensorflow_hub; {'quick' if quick else 'paper (method default)'} settings")


def _inception(count: int, quick: bool) -> Subject:
    import keras

    from harness.data import load_images
    from harness.models import load_model
    from harness.models.keras_guided import keras_endpoint_model

    keras.utils.set_random_seed(0)
    model = load_model({"source": "keras_applications:InceptionV3", "weights": None,
                        "input": {"size": [299, 299], "channels": 3, "value_range": [-1.0, 1.0]}},
                       log=lambda _: None)
    photos = ["chelsea", "coffee", "astronaut", "rocket"][:count]
    x = model.input_spec.to_model_space(load_images({"source": "skimage", "names": photos}, (299, 299), 3).images)
    reference = Reference(lambda v: model.keras_model(v, training=False), model.tensor_spec(),
                          keras_endpoint_model(model.keras_model, "mixed10"))
    return Subject("inception_v3", model, x, np.argmax(model.predict(x), 1).astype(np.int32), reference,
                   inception_params(quick),
                   f"Keras InceptionV3 (random weights) at 299x299; {'quick' if quick else 'fewer'} samples / "
                   "steps than the paper (settings column)")


def inception_params(quick: bool) -> dict[str, dict]:
    """INCEPTION's settings, or the quick ones but for occlusion's window: its registered quick
    window (21 px) means ~77,000 positions for PAIR's stride-1 loop on 299 x 299, hours on a CPU."""
    return _with_endpoint(_quick() | {"occlusion": INCEPTION["occlusion"]} if quick else INCEPTION, "mixed10")


def _with_endpoint(params: dict[str, dict], endpoint: str) -> dict[str, dict]:
    from harness import methods

    return {m: {**params.get(m, {}), **({"endpoint": endpoint} if "endpoint" in methods.defaults(m) else {})}
            for m in methods.names()}


def _quick() -> dict[str, dict]:
    """Every method's quick settings (its registration's)."""
    from harness import methods

    return {m: dict(methods.spec(m).quick) for m in methods.names()}


# -- timing ------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """One side's seconds in each round it ran (in order), and the result of its fastest round."""
    seconds: list[float]
    value: object

    @property
    def best(self) -> float:
        return min(self.seconds)


def timed(fn: Callable) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def rounds(sides: dict[str, Callable], repeats: int) -> dict[str, Timing]:
    """Each side's time over rounds that take the sides in turn (a burst of load from other
    processes hits them alike), rotating which goes first (what ran just before affects a side:
    allocator and cache state). A side that is quick gets more rounds (ROUNDS, by its own first
    time), however slow the others are."""
    done_by: dict[str, Timing] = {}
    wanted: dict[str, int] = {}
    done, names = 0, list(sides)
    while done < max(wanted.values(), default=1):
        for name in names[done % len(names):] + names[:done % len(names)]:
            if done >= wanted.get(name, 1):
                continue
            began = time.perf_counter()
            value = sides[name]()
            seconds = time.perf_counter() - began
            if name not in done_by:
                done_by[name] = Timing([seconds], value)
                wanted[name] = max([repeats] + [n for below, n in ROUNDS if seconds < below])
                continue
            if seconds < done_by[name].best:
                done_by[name].value = value
            done_by[name].seconds.append(seconds)
        done += 1
    return done_by


def ratio(a: Timing, b: Timing) -> float:
    """a's time over b's: the median of the per-round ratios where both ran at least PAIRED rounds
    (the two ran back to back, so a burst of load slows both, and the median drops the first round,
    which pays for batch shapes the warm-up did not use); else the ratio of their best times."""
    common = min(len(a.seconds), len(b.seconds))
    if common >= PAIRED:
        return float(np.median(np.divide(a.seconds[:common], b.seconds[:common])))
    return a.best / b.best


def raw_tf_limit(reference: Reference, x: np.ndarray, rows: int, forward_rows: int, max_batch: int) -> float:
    """Seconds for `rows` forward+backward and `forward_rows` forward rows in raw TensorFlow (the
    reference's plain tf.functions), `max_batch` per call, a chunk of a few rows as one call or one
    call per row as the harness's kernels choose (`kernels.call_rows`: whichever is faster here)."""
    from harness.methods import kernels

    batch = np.resize(np.asarray(x, np.float32), (max_batch, *x.shape[1:]))
    targets = np.zeros([max_batch], np.int32)
    began = time.perf_counter()
    for fn, count in ((reference.gradient, rows), (reference.values, forward_rows)):
        for start in range(0, count, max_batch):
            n = min(max_batch, count - start)
            for out in kernels.call_rows(fn, batch[:n], targets[:n]):
                out.numpy()
    return time.perf_counter() - began


def limit_rows_per_call(method: str, s: dict, x: np.ndarray) -> int:
    """Rows per raw-TF call in the limit: `max_batch`, or one per image for a sequential path (step
    k + 1 needs step k's gradient, so no implementation can put more rows of an image into a call)."""
    from harness import methods

    per_call = methods.rows_per_call(s.get("max_batch", "auto"), x.shape[1:])
    return min(per_call, len(x)) if methods.spec(method).sequential else per_call


# -- rows --------------------------------------------------------------------------------------------
def row(subject: Subject, method: str, params: dict, sides: dict[str, Timing] | None = None,
        speedup: float | None = None, limit_ratio: float | None = None, rows: int = 0, forward_rows: int = 0,
        agreement: float = float("nan"), note: str = "") -> dict:
    """A method's (or a repaired test's) row: each side's best seconds, the ratios, its rounds."""
    nan, sides = float("nan"), sides or {}
    shown = {k: v for k, v in params.items() if k != "endpoint"}
    best = {side: sides[side].best if side in sides else nan for side in ("harness", "reference", "limit")}
    return {
        "model": subject.name, "method": method, "images": len(subject.images),
        "settings": " ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "defaults",
        "harness_s": best["harness"], "reference_s": best["reference"],
        "speedup": nan if speedup is None else speedup, "limit_s": best["limit"],
        "limit_ratio": nan if limit_ratio is None else limit_ratio,
        "rows": rows, "forward_rows": forward_rows, "agreement": agreement,
        "reference": "PAIR saliency.core" if "reference" in sides else "n/a (not in PAIR saliency.core)",
        "note": note,
        **{f"{side}_rounds_s": " ".join(f"{t:.6g}" for t in sides[side].seconds) if side in sides else ""
           for side in ("harness", "reference", "limit")},
    }


def logged(row: dict, log: Callable[[str], None]) -> dict:
    log(f"{row.get('model', ''):>12} {row.get('method', ''):<21} harness {f(row.get('harness_s', np.nan)):>7} s  "
        f"PAIR {f(row.get('reference_s', np.nan)):>7} s  limit {f(row.get('limit_s', np.nan)):>7} s  "
        f"{row.get('note', '')}")
    return row


def f(value: float, suffix: str = "") -> str:
    return "" if value != value else f"{value:.3g}{suffix}"


def g(value: float) -> str:
    return "" if value != value else f"{value:.1e}"


# -- the written results -----------------------------------------------------------------------------
GENERATED = ("<!-- Generated by `make bench` (python -m harness.bench): edit harness/bench/, not this page. "
             "Text after the line 'KEPT' below is kept by the next run. -->")
KEPT = "<!-- KEPT: hand-written, kept by `make bench` -->"


def cpu_model() -> str:
    """The CPU's model name: Linux /proc/cpuinfo, macOS sysctl, else `platform.processor()`."""
    import platform
    import subprocess

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def page(sections: list[str], scenarios: list[str]) -> str:
    """bench.md: where and when it was measured, then each scenario's section."""
    from importlib.metadata import version

    import tensorflow as tf

    return "\n".join([
        "# Benchmarks", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} · {cpu_model()} · {os.cpu_count()} CPU cores · "
        f"TensorFlow {tf.__version__} · PAIR saliency {version('saliency')} · scenarios: {', '.join(scenarios)}. "
        "Timings from one run on a machine that may be shared: compare ratios within it.", "", *sections])


def write(frame, sections: list[str], scenarios: list[str], out: Path, docs: Path | None) -> list[Path]:
    """bench.csv and bench.md in `out`; with `docs`, the same page there under a generated-file
    header, keeping what a person wrote after its KEPT line."""
    from harness.results import atomic_write, write_csv

    text = page(sections, scenarios)
    written = [write_csv(out / "bench.csv", frame), atomic_write(out / "bench.md", lambda tmp: tmp.write_text(text))]
    if docs is not None:
        old = docs.read_text() if docs.exists() else ""
        kept = old[old.index(KEPT):] if KEPT in old else f"{KEPT}\n"
        written.append(atomic_write(docs, lambda tmp: tmp.write_text(f"{GENERATED}\n\n{text}\n\n{kept}")))
    return written
