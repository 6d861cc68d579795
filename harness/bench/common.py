"""What the scenarios share: the models and images they time (`Subject`), rounds that take the sides
in turn, the raw-TensorFlow limit, the rows and tables, and the writer of bench.csv, bench.md and
the generated docs/benchmarks.md."""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np

from harness import methods
from harness.data import load_images
from harness.oracle import Reference, mnist_keras_twin
from harness.results import atomic_write, write_csv

# Settings that make a warm-up call cheap while tracing the same kernels.
WARM_UP = {"samples": 1, "steps": 2, "stride": 10 ** 6}
# Rounds per side by its own first time, (under this many seconds, rounds): quicker sides run more often.
ROUNDS = ((2.0, 5), (10.0, 3))
PAIRED = 3  # rounds both sides need for their ratio to be the median of per-round ratios
# Inception scale: 2-core CPU, ~0.1-0.3 s per forward+backward row.
INCEPTION = {"smoothgrad": {"samples": 8}, "vargrad": {"samples": 8}, "integrated_gradients": {"steps": 8},
             "ig_smoothgrad": {"samples": 4, "steps": 4}, "xrai": {"steps": 8}, "blur_ig": {"steps": 8},
             "guided_ig": {"steps": 8}, "occlusion": {"size": 294}}  # 6 x 6 window positions
MODELS = ("cnn", "inception")
LIMIT_TARGET = 1.3  # the harness within 1.3x of the raw-TF limit (methods and repaired tests)


@dataclass
class Options:
    """A bench run's settings (the command line's)."""
    quick: bool = False                       # 1 image, few samples / steps: a smoke run
    repeats: int = 1                          # rounds per side at the least
    models: tuple[str, ...] = MODELS          # the method and repaired-test rows' models
    methods: tuple[str, ...] | None = None    # None: every registered method
    protocol: dict = field(default_factory=dict)  # protocol.measure_all's keyword arguments


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
    """The `cnn` or `inception` subject, built once a process (methods and repairs time the same
    one), its reference warmed up."""
    import keras

    from harness.models import load_model
    from harness.models.keras_guided import keras_endpoint_model

    if key == "cnn":
        # The default CNN's early snapshot: the same network (timing does not depend on how long it was
        # trained), and `make bench` on a fresh machine trains it in a minute instead of most of an hour.
        model = load_model({"source": "builtin:mnist_cnn@1200", "gradcam_endpoint": "conv2"}, log=lambda _: None)
        data, size, channels = {"source": "mnist", "count": 1 if quick else 3}, (28, 28), 1
        logits, twin, layer = model.logits, mnist_keras_twin(model), "conv2"
        name, params = "mnist_cnn", _with_endpoint(quick_settings() if quick else {}, layer)
        note = f"SavedModel through tensorflow_hub; {'quick' if quick else 'paper (method default)'} settings"
    else:
        keras.utils.set_random_seed(0)
        model = load_model({"source": "keras_applications:InceptionV3", "weights": None,
                            "input": {"size": [299, 299], "channels": 3, "value_range": [-1.0, 1.0]}},
                           log=lambda _: None)
        data, size, channels = {"source": "skimage", "names": ["chelsea", "coffee"][:1 if quick else 2]}, (299, 299), 3
        logits, twin, layer = (lambda v: model.keras_model(v, training=False)), model.keras_model, "mixed10"
        name, params = "inception_v3", inception_params(quick)
        note = (f"Keras InceptionV3 (random weights) at 299x299; {'quick' if quick else 'fewer'} samples / "
                "steps than the paper (settings column)")
    x = model.input_spec.to_model_space(load_images(data, size, channels).images)
    reference = Reference(logits, model.tensor_spec(), keras_endpoint_model(twin, layer))
    made = Subject(name, model, x, np.argmax(model.predict(x), 1).astype(np.int32), reference, params, note)
    made.reference.warm_up(made.images)
    return made


def inception_params(quick: bool) -> dict[str, dict]:
    """INCEPTION's settings, or the quick ones but for occlusion's window: its registered quick
    window (21 px) means ~77,000 positions for PAIR's stride-1 loop on 299 x 299, hours on a CPU."""
    return _with_endpoint(quick_settings() | {"occlusion": INCEPTION["occlusion"]} if quick else INCEPTION, "mixed10")


def _with_endpoint(params: dict[str, dict], endpoint: str) -> dict[str, dict]:
    return {m: {**params.get(m, {}), **({"endpoint": endpoint} if "endpoint" in methods.defaults(m) else {})}
            for m in methods.names()}


def quick_settings() -> dict[str, dict]:
    """Every method's quick settings (its registration's)."""
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
    """Each side's time over rounds that take the sides in turn (a burst of load hits them alike),
    rotating which goes first (allocator and cache state depend on what ran just before). A quick
    side gets more rounds (ROUNDS, by its own first time), however slow the others are."""
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
    """a's time over b's: the median of the per-round ratios where both ran PAIRED rounds or more
    (back to back, a burst of load slows both; the median drops the first round, which pays for
    batch shapes the warm-up did not use); else the ratio of their best times."""
    common = min(len(a.seconds), len(b.seconds))
    if common >= PAIRED:
        return float(np.median(np.divide(a.seconds[:common], b.seconds[:common])))
    return a.best / b.best


def raw_tf_limit(reference: Reference, x: np.ndarray, rows: int, forward_rows: int, max_batch: int) -> float:
    """Seconds for `rows` forward+backward and `forward_rows` forward rows through the reference's
    plain tf.functions, `max_batch` per call, split into calls as the harness's kernels do
    (`kernels.call_rows`)."""
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
    per_call = methods.rows_per_call(s.get("max_batch", "auto"), x.shape[1:])
    return min(per_call, len(x)) if methods.spec(method).sequential else per_call


# -- rows and tables ---------------------------------------------------------------------------------
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


def markdown(heading: str, text: str, columns: str, rows, *after: str) -> list[str]:
    """A part of bench.md: a heading, a paragraph, a table (`columns`: the titles split by ' | ', a ':'
    after one right-aligns it; `rows`: each a sequence of cells), then the lines `after`."""
    titles = columns.split(" | ")
    return [heading, "", text, "", "| " + " | ".join(t.removesuffix(":") for t in titles) + " |",
            "|" + "".join("---:|" if t.endswith(":") else "---|" for t in titles),
            *("| " + " | ".join(str(cell) for cell in r) + " |" for r in rows), "", *after]


# -- the written results -----------------------------------------------------------------------------
GENERATED = ("<!-- Generated by `make bench` (python -m harness.bench): edit harness/bench/, not this page. "
             "Text after the line 'KEPT' below is kept by the next run. -->")
KEPT = "<!-- KEPT: hand-written, kept by `make bench` -->"


def cpu_model() -> str:
    """The CPU's model name: Linux /proc/cpuinfo, macOS sysctl, else `platform.processor()`."""
    import platform
    import subprocess

    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def write(frame, sections: list[str], scenarios: list[str], out: Path, docs: Path | None) -> list[Path]:
    """bench.csv and bench.md (where and when, then each scenario's section) in `out`; with `docs`,
    the same page there under a generated-file header, keeping what a person wrote after its KEPT line."""
    import tensorflow as tf

    text = "\n".join([
        "# Benchmarks", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} · {cpu_model()} · {os.cpu_count()} CPU cores · "
        f"TensorFlow {tf.__version__} · PAIR saliency {version('saliency')} · scenarios: {', '.join(scenarios)}. "
        "Timings from one run on a machine that may be shared: compare ratios within it.", "", *sections])
    written = [write_csv(out / "bench.csv", frame), atomic_write(out / "bench.md", lambda tmp: tmp.write_text(text))]
    if docs is not None:
        old = docs.read_text() if docs.exists() else ""
        kept = old[old.index(KEPT):] if KEPT in old else f"{KEPT}\n"
        written.append(atomic_write(docs, lambda tmp: tmp.write_text(f"{GENERATED}\n\n{text}\n\n{kept}")))
    return written
