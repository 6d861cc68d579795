"""Speed benchmark: the harness's methods vs PAIR saliency's reference loop vs the raw-TF limit.

`python -m harness.bench` (`make bench`) times every method three ways on the same model and images
in one process, after a warm-up (tracing is not timed), the three in turn, best of a few rounds:
- harness: the registered method, all images in one call (batched kernels);
- reference: PAIR `saliency.core` called per image as its examples do (GetMask / GetSmoothedMask with
  the library's default batch_size=1), over the plain `call_model_function` a PAIR user writes
  (`harness.oracle`); "n/a" where PAIR has no such method;
- limit: the same number of rows as plain batched forward+backward passes (forward only for
  occlusion's windows and CAM) in raw TensorFlow, in chunks of the same `max_batch`.

Models: the built-in MNIST CNN (a SavedModel loaded through tensorflow_hub; Grad-CAM's reference
reads conv2 from a Keras twin with the same weights, since a hub model exposes no layers), and a
random-weight Keras InceptionV3 at 299x299 with fewer samples / steps (listed in the table) to keep
the run within minutes on a 2-core CPU. Writes results/bench/bench.csv and bench.md.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.oracle import Reference, mnist_keras_twin, pair_map

COLUMNS = ["model", "method", "images", "settings", "harness_s", "reference_s", "speedup", "limit_s",
           "limit_ratio", "rows", "forward_rows", "agreement", "reference", "note", "harness_rounds_s",
           "reference_rounds_s", "limit_rounds_s"]
# Settings that make a warm-up call cheap while tracing the same kernels.
WARM_UP = {"samples": 1, "steps": 2, "stride": 10 ** 6}
# Rounds per side, by its own first time: quicker sides are timed more often (best kept).
ROUNDS = ((2.0, 5), (10.0, 3))
PAIRED = 3  # rounds both sides need for their ratio to be the median of per-round ratios


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


def cnn_subject(count: int, quick: bool) -> Subject:
    from harness.data import load_images
    from harness.models import load_model
    from harness.models.keras_guided import keras_endpoint_model

    # The default CNN's early snapshot: the same network (timing does not depend on how long it was
    # trained), and `make bench` on a fresh machine trains it in a minute instead of most of an hour.
    model = load_model({"source": "builtin:mnist_cnn@1200", "gradcam_endpoint": "conv2"}, log=lambda _: None)
    x = model.input_spec.to_model_space(load_images({"source": "mnist", "count": count}, (28, 28), 1).images)
    reference = Reference(model.logits, model.tensor_spec(), keras_endpoint_model(mnist_keras_twin(model), "conv2"))
    return Subject("mnist_cnn", model, x, np.argmax(model.predict(x), 1).astype(np.int32), reference,
                   _with_endpoint(_quick() if quick else {}, "conv2"),
                   f"SavedModel through tensorflow_hub; {'quick' if quick else 'paper (method default)'} settings")


def inception_subject(count: int, quick: bool) -> Subject:
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
                   _with_endpoint(_quick() if quick else INCEPTION, "mixed10"),
                   f"Keras InceptionV3 (random weights) at 299x299; {'quick' if quick else 'fewer'} samples / "
                   "steps than the paper (settings column)")


def _with_endpoint(params: dict[str, dict], endpoint: str) -> dict[str, dict]:
    from harness import methods

    return {m: {**params.get(m, {}), **({"endpoint": endpoint} if "endpoint" in methods.defaults(m) else {})}
            for m in methods.names()}


def _quick() -> dict[str, dict]:
    """Every method's quick settings (its registration's)."""
    from harness import methods

    return {m: dict(methods.spec(m).quick) for m in methods.names()}


# Inception scale: 2-core CPU, ~0.1-0.3 s per forward+backward row.
INCEPTION = {"smoothgrad": {"samples": 8}, "vargrad": {"samples": 8}, "integrated_gradients": {"steps": 8},
             "ig_smoothgrad": {"samples": 4, "steps": 4}, "xrai": {"steps": 8}, "blur_ig": {"steps": 8},
             "guided_ig": {"steps": 8}, "occlusion": {"size": 294}}  # 6 x 6 window positions
SUBJECTS = {"cnn": cnn_subject, "inception": inception_subject}


# -- one measurement ---------------------------------------------------------------------------------
def measure(subject: Subject, method: str, repeats: int) -> dict:
    from harness import methods

    model, x, t = subject.model, subject.images, subject.targets
    params, fn = subject.params[method], methods.get(method)
    s = methods.defaults(method) | params
    try:
        fn(model, x[:1], t[:1], np.random.default_rng(0), params | {k: v for k, v in WARM_UP.items() if k in s})
    except Exception as error:  # noqa: BLE001 - e.g. CAM on a model without GAP: reported, not fatal
        return _row(subject, method, params, note=f"not run: {str(error).splitlines()[0]}")
    cmf = subject.reference.call_model_function
    rows, forward_rows = (len(x) * n for n in methods.spec(method).rows(s, x.shape[1:]))
    per_call = limit_rows_per_call(method, s, x)
    cold = COLD.get(method, lambda: None)
    work = LIMIT_WORK[method](subject) if method in LIMIT_WORK else None
    model_free = rows == forward_rows == 0  # a pseudo-method (harness.methods.baselines): no limit to reach
    timed = _rounds({
        "harness": lambda: cold() or fn(model, x, t, np.random.default_rng(0), params),
        "reference": lambda: _stack([pair_map(method, s, cmf, xi, ti) for xi, ti in zip(x, t)]),
        # value: (raw-TF seconds, seconds of the method's LIMIT_WORK) of the round
        **({} if model_free else {"limit": lambda: (raw_tf_limit(subject.reference, x, rows, forward_rows, per_call),
                                                    _timed(work) if work else 0.0)}),
    }, repeats)
    harness, reference, limit = timed["harness"], timed["reference"], timed.get("limit")
    note = (EXPLAIN[method](subject, params, harness.best, limit, repeats, reference.value)
            if method in EXPLAIN else "no model rows: no raw-TF limit" if model_free else "")
    in_pair = reference.value is not None
    return _row(subject, method, params, harness.best, reference.best if in_pair else None,
                limit.best if limit else None, ratio(reference, harness) if in_pair else None,
                ratio(harness, limit) if limit else None, rows, forward_rows,
                _agreement(method, harness.value, reference.value), note,
                {side: timing.seconds for side, timing in timed.items() if side != "reference" or in_pair})


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


def _cold_segments() -> None:
    from harness.methods import segments

    segments.cache_clear()


# Methods with a cache: emptied before each timed harness call, so harness_s is a cold call.
COLD = {"xrai": _cold_segments}


def felzenszwalb_work(subject: Subject) -> Callable[[], None]:
    """The segmentation in a cold XRAI call that no implementation of PAIR's XRAI can skip:
    skimage's Felzenszwalb on each image's 224 x 224 copy (made before the timer, normalized as
    PAIR's `_get_segments_felzenszwalb` does) at PAIR's six (scale, sigma) settings, the calls spread
    over the cores in threads (skimage releases the GIL), as the harness spreads them. Not in it:
    resizing to and from 224 x 224, one mask per segment and the masks' dilation, which PAIR does
    its own (slower) way and the harness its own (`harness.methods.segments`)."""
    from concurrent.futures import ThreadPoolExecutor

    from skimage import segmentation

    from harness.methods import segments

    normalized = [segments.normalized(image) for image in subject.images]
    calls = [(im, scale, sigma) for im in normalized for scale in segments.SCALES for sigma in segments.SIGMAS]

    def run() -> None:
        with ThreadPoolExecutor(min(len(calls), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda c: segmentation.felzenszwalb(c[0], scale=c[1], sigma=c[2],
                                                              min_size=segments.MIN_SIZE), calls))
    return run


# Image-only work a method's (cold) call cannot skip, timed as part of its limit after the raw-TF rows.
LIMIT_WORK = {"xrai": felzenszwalb_work}


def _xrai_note(subject: Subject, params: dict, harness_s: float, limit: Timing, repeats: int,
               reference: np.ndarray | None) -> str:
    """What XRAI's cold limit holds, the harness's own segmentation time, and the warm call's ratio
    to the raw-TF rows alone (segments cached: every later step of a cascading run)."""
    from harness import methods
    from harness.methods import segments

    model, x, t = subject.model, subject.images, subject.targets
    tf_s, felzenszwalb_s = limit.value
    segment_s = min(_timed(lambda: [segments.felzenszwalb_masks(image) for image in x])
                    for _ in range(max(repeats, 2)))
    for image in x:
        segments.masks_of(image)
    warm_s = min(_timed(lambda: methods.get("xrai")(model, x, t, np.random.default_rng(0), params))
                 for _ in range(max(repeats, 2)))
    return (f"cold call (timed); limit = raw TF {tf_s:.3g} s + skimage Felzenszwalb {felzenszwalb_s:.3g} s (PAIR's "
            f"{len(segments.SCALES) * len(segments.SIGMAS)} settings per image on its 224x224 copy, in threads); "
            f"the harness's whole segmentation (also resizing, masks, dilation): {segment_s:.3g} s; warm (segments "
            f"cached, as at every later step of a cascading run): {warm_s:.3g} s = {warm_s / tf_s:.3g}x raw TF")


def _guided_ig_note(subject: Subject, params: dict, harness_s: float, limit: Timing, repeats: int,
                    reference: np.ndarray) -> str:
    """The sequential limit's call shape, and what batching the images' gradients would save: by
    default each gradient call holds one image (an image's map must not depend on which images share
    its calls: which features a step moves flips with the last bits of a gradient)."""
    from harness import methods

    x = subject.images
    s = methods.defaults("guided_ig") | params
    per_call = limit_rows_per_call("guided_ig", s, x)
    calls = int(s["steps"]) * -(-len(x) // per_call)
    batched_s = min(_timed(lambda: raw_tf_limit(subject.reference, x, len(x) * int(s["steps"]), 0, len(x)))
                    for _ in range(max(repeats, 2)))
    return (f"sequential steps: limit = {calls} raw-TF calls of {per_call} row(s) (`max_batch: {s['max_batch']}`; "
            f"the per-step path search, NumPy on the host, is outside it); all "
            f"{len(x)} images in one call per step instead (faster, but maps then depend on the group): "
            f"{batched_s:.3g} s = {harness_s / batched_s:.3g}x")


def _timed(fn: Callable) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


EXPLAIN = {"xrai": _xrai_note, "guided_ig": _guided_ig_note}


@dataclass
class Timing:
    """One side's seconds in each round it ran (in order), and the result of its fastest round."""
    seconds: list[float]
    value: object

    @property
    def best(self) -> float:
        return min(self.seconds)


def _rounds(sides: dict[str, Callable], repeats: int) -> dict[str, Timing]:
    """Each side's time over rounds that take the sides in turn (a burst of load from other
    processes hits them alike), rotating which goes first (what ran just before affects a side:
    allocator and cache state). A side that is quick gets more rounds (ROUNDS, by its own first
    time), however slow the others are."""
    timed: dict[str, Timing] = {}
    rounds: dict[str, int] = {}
    done, names = 0, list(sides)
    while done < max(rounds.values(), default=1):
        for name in names[done % len(names):] + names[:done % len(names)]:
            if done >= rounds.get(name, 1):
                continue
            began = time.perf_counter()
            value = sides[name]()
            seconds = time.perf_counter() - began
            if name not in timed:
                timed[name] = Timing([seconds], value)
                rounds[name] = max([repeats] + [n for below, n in ROUNDS if seconds < below])
                continue
            if seconds < timed[name].best:
                timed[name].value = value
            timed[name].seconds.append(seconds)
        done += 1
    return timed


def ratio(a: Timing, b: Timing) -> float:
    """a's time over b's: the median of the per-round ratios where both ran at least PAIRED rounds
    (the two ran back to back, so a burst of load slows both, and the median drops the first round,
    which pays for batch shapes the warm-up did not use); else the ratio of their best times."""
    common = min(len(a.seconds), len(b.seconds))
    if common >= PAIRED:
        return float(np.median(np.divide(a.seconds[:common], b.seconds[:common])))
    return a.best / b.best


def _stack(maps: list) -> np.ndarray | None:
    return None if maps[0] is None else np.stack(maps).astype(np.float32)


def _agreement(method: str, maps: np.ndarray, reference: np.ndarray | None) -> float:
    """max |harness - PAIR| / max |PAIR| on the same images (NaN: no PAIR map, or other noise)."""
    from harness import methods

    if reference is None or methods.spec(method).stochastic:
        return float("nan")
    reference = np.broadcast_to(reference, maps.shape)
    return float(np.abs(maps - reference).max() / max(np.abs(reference).max(), 1e-30))


def _row(subject: Subject, method: str, params: dict, harness_s=None, reference_s=None, limit_s=None,
         speedup=None, limit_ratio=None, rows=0, forward_rows=0, agreement=float("nan"), note: str = "",
         rounds: dict[str, list[float]] | None = None) -> dict:
    nan = float("nan")
    shown = {k: v for k, v in params.items() if k != "endpoint"}
    return {
        "model": subject.name, "method": method, "images": len(subject.images),
        "settings": " ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "defaults",
        "harness_s": harness_s if harness_s is not None else nan,
        "reference_s": reference_s if reference_s is not None else nan,
        "speedup": speedup if speedup is not None else nan,
        "limit_s": limit_s if limit_s is not None else nan,
        "limit_ratio": limit_ratio if limit_ratio is not None else nan,
        "rows": rows, "forward_rows": forward_rows, "agreement": agreement,
        "reference": "PAIR saliency.core" if reference_s is not None else "n/a (not in PAIR saliency.core)",
        "note": note,
        **{f"{side}_rounds_s": " ".join(f"{t:.6g}" for t in (rounds or {}).get(side, []))
           for side in ("harness", "reference", "limit")},
    }


# -- report ------------------------------------------------------------------------------------------
HEADER = """# Saliency methods: harness vs PAIR saliency vs raw TensorFlow

{when} · {cpu} · {cores} CPU cores · TensorFlow {tf} · PAIR saliency {pair}. Seconds for all images of a row,
tracing not timed. The three sides are timed in turn, rotating which goes first, and each side's
best round is kept ({rounds}, by the side's own first time; at least {repeats}): the machine may be
shared.

- *PAIR*: one `GetMask` / `GetSmoothedMask` per image as PAIR's examples call them, library defaults
  (`batch_size=1`) except the settings shown; VarGrad's reference is `GetMask` over noisy copies.
  Empty: PAIR `saliency.core` has no such method.
- *speedup* = PAIR / harness and *harness/limit* are medians of the per-round ratios where both
  sides ran {paired}+ rounds (back to back, so a burst of load slows both), else ratios of best times.
- *limit* = the same number of plain batched forward+backward rows
  (forward only for occlusion windows and CAM) in raw TensorFlow, `max_batch` rows per call (a
  chunk of 2-4 rows as one-row calls where the harness's kernels measured that faster:
  `harness.methods.kernels`);
  *harness/limit* near 1 means no overhead beyond the model itself (Blur IG's blurring and Guided
  IG's per-step path search are CPU work outside that limit). Guided IG's steps
  are sequential (each step's path needs the last step's gradient) and its gradients come one image
  per call by default (as PAIR's), so its limit makes the same calls; its note compares with one
  call of all images per step. XRAI is timed cold (its
  per-image segment cache emptied before each call), so its limit also holds skimage's Felzenszwalb
  calls on every image (PAIR's segmentation without its resizing and masks); its note gives the
  split and the warm time against the raw-TF rows alone. The path
  methods run 8 steps at Inception scale; segmentation is a fixed cost per image, so its share of
  a cold XRAI call shrinks at the paper's 100 steps.
- *agreement* = max |harness - PAIR| / max |PAIR| on the same images (empty for stochastic methods,
  which draw their own noise; the tests replay the harness's noise into PAIR instead). Two methods
  amplify float32 rounding, so their agreement is no better than PAIR's with itself: Guided IG
  (whose maps equal PAIR's only with gradients in PAIR's batches of one image) and Blur IG on the random-weight InceptionV3, whose map moves by ~1e-2 when its
  path points move by float32 rounding: PAIR's own Blur IG in float32 and in float64 differ by
  5.7e-3 there, while the harness's path points match scipy's blur to 1.3e-6 (measured once,
  2026-11-23).
"""
CNN_TARGET = ("smoothgrad", "integrated_gradients", "occlusion")  # >= 5x PAIR on the MNIST CNN


def markdown(frame, subjects: dict[str, str], repeats: int) -> str:
    import tensorflow as tf

    rounds = ", ".join(f"{n} rounds where a side takes < {below:g} s" for below, n in ROUNDS)
    lines = [HEADER.format(when=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_model(), cores=os.cpu_count(),
                           tf=tf.__version__,
                           pair=_version("saliency"), rounds=rounds, repeats=repeats, paired=PAIRED)]
    for name, note in subjects.items():
        part = frame[frame["model"] == name]
        lines += [f"## {name}", "", note, "",
                  "| method | images | settings | harness s | PAIR s | speedup | limit s | harness/limit "
                  "| agreement | note |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r.method} | {r.images} | {r.settings} | {_f(r.harness_s)} | {_f(r.reference_s)} | "
                  f"{_f(r.speedup, 'x')} | {_f(r.limit_s)} | {_f(r.limit_ratio)} | {_g(r.agreement)} | {r.note} |"
                  for r in part.itertuples()]
        lines += ["", *_target_lines(part), ""]
    for scenario in _scenarios().values():
        lines += scenario.section(frame)
    return "\n".join(lines)


def _target_lines(part) -> list[str]:
    """The speed targets, checked on this run's rows: on every model, no slower than PAIR and within
    1.3x of the raw-TensorFlow limit; on the MNIST CNN also >= 5x PAIR for CNN_TARGET."""
    timed = part[part["harness_s"].notna()]
    if timed.empty:
        return []
    name = timed["model"].iloc[0]
    repaired = timed[timed["method"].str.startswith(("smprt", "emprt"))]
    timed = timed.drop(repaired.index)
    return _method_target_lines(timed, name) + [
        "Target sMPRT and eMPRT within 1.3x of the raw-TF limit: "
        + ", ".join(f"{r.method} {_f(r.limit_ratio)}x {'met' if r.limit_ratio <= 1.3 else 'MISSED'}"
                    for r in repaired.itertuples())] * (not repaired.empty)


def _method_target_lines(timed, name: str) -> list[str]:
    with_pair = timed[timed["reference_s"].notna()]
    slower = [f"{r.method} {_f(r.speedup, 'x')} ({_slower_cause(r)})" for r in with_pair.itertuples() if r.speedup < 1]
    over = [f"{r.method} {_f(r.limit_ratio)}x" for r in timed.itertuples() if r.limit_ratio > 1.3]
    lines = [f"Target no slower than PAIR: {'met' if not slower else 'MISSED by ' + ', '.join(slower)}. "
             "Target within 1.3x of the raw-TF limit: "
             + ("met." if not over else f"MISSED by {', '.join(over)} (harness overhead beyond the model's rows).")]
    wanted = timed[timed["method"].isin(CNN_TARGET)]
    if name == "mnist_cnn" and not wanted.empty:
        lines.insert(0, "Target >= 5x PAIR for SmoothGrad, IG, Occlusion: "
                     + ", ".join(f"{r.method} {_f(r.speedup, 'x')} {'met' if r.speedup >= 5 else 'MISSED'}"
                                 for r in wanted.itertuples()))
    return lines


def _slower_cause(r) -> str:
    """Why a row is slower than PAIR, from its own times: the raw-TF rows themselves (the model's
    batched calls slower here than PAIR's one-image calls), or the harness's overhead beyond them."""
    if r.limit_s == r.limit_s and r.limit_s >= r.reference_s:
        return (f"the raw-TF limit {_f(r.limit_s)} s is itself slower than PAIR's one-image calls "
                f"{_f(r.reference_s)} s on this CPU")
    return f"harness overhead: {_f(r.limit_ratio)}x the raw-TF limit {_f(r.limit_s)} s"


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


def _f(value: float, suffix: str = "") -> str:
    return "" if value != value else f"{value:.3g}{suffix}"


def _g(value: float) -> str:
    return "" if value != value else f"{value:.1e}"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# -- command line ------------------------------------------------------------------------------------
def _scenarios() -> dict:
    """Scenarios beyond the method rows, each a module with `measure_all(quick, ..., log)`, its extra
    `COLUMNS` and its bench.md `section`: the runner's overhead on the paper's MNIST experiments, the
    paper's Inception protocol end to end."""
    from harness import bench_overhead, bench_protocol

    return {"overhead": bench_overhead, "protocol": bench_protocol}


def run(models: Sequence[str], methods: Sequence[str], out: Path, quick: bool = False, repeats: int = 1,
        log: Callable[[str], None] = print, repairs: bool = True, scenarios: dict[str, dict] | None = None) -> Path:
    """`scenarios`: name (see _scenarios) -> the keyword arguments of its measure_all."""
    import pandas as pd

    from harness import bench_repairs
    from harness.results import atomic_write, write_csv

    rows, notes = [], {}
    for key in models:
        subject = SUBJECTS[key](1 if quick else {"cnn": 3, "inception": 2}[key], quick)
        subject.reference.warm_up(subject.images)
        notes[subject.name] = subject.note
        for method in methods:
            rows.append(_logged(measure(subject, method, repeats), log))
        if repairs:
            rows += [_logged(row, log) for row in bench_repairs.measure_all(subject, repeats, quick)]
    extra = []
    for name, options in (scenarios or {}).items():
        scenario = _scenarios()[name]
        rows += [_logged(row, log) for row in scenario.measure_all(quick, **options, log=log)]
        extra += scenario.COLUMNS
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *extra])
    write_csv(out / "bench.csv", frame)
    atomic_write(out / "bench.md", lambda tmp: tmp.write_text(markdown(frame, notes, repeats)))
    return out / "bench.csv"


def _protocol_steps(value: str) -> str:
    """`--protocol-steps`: 'all' or a positive number, checked before anything is measured."""
    if value != "all" and not (value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"{value!r}: valid: a positive number of cascade steps, or 'all'")
    return value


def _logged(row: dict, log: Callable[[str], None]) -> dict:
    log(f"{row['model']:>12} {row['method']:<21} harness {_f(row['harness_s']):>7} s  "
        f"PAIR {_f(row['reference_s']):>7} s  limit {_f(row['limit_s']):>7} s  {row['note']}")
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,inception", help="comma list of: cnn, inception")
    parser.add_argument("--methods", default="all", help="comma list of method names (default: all registered)")
    parser.add_argument("--quick", action="store_true", help="1 image, few samples / steps (smoke run)")
    parser.add_argument("--repeats", type=int, default=1, help="time each side this often, keep the best")
    parser.add_argument("--no-repairs", dest="repairs", action="store_false",
                        help="leave out the sMPRT and eMPRT rows (harness.bench_repairs)")
    parser.add_argument("--scenarios", default="overhead,protocol",
                        help="comma list of: overhead (the runner's, on cascading_mlp / cascading_cnn), protocol "
                             "(the paper's Inception cascade end to end); 'none' for neither")
    parser.add_argument("--protocol-images", type=int, default=1, help="protocol: images in the timed run")
    parser.add_argument("--protocol-steps", default=None, type=_protocol_steps,
                        help="protocol: cascade steps timed, a number or 'all' (default: all on a GPU, 1 on a CPU)")
    parser.add_argument("--protocol-settings", choices=("paper", "scaled"), default=None,
                        help="protocol: the methods' samples / steps (default: paper on a GPU, scaled on a CPU)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()  # the method registry below imports TensorFlow
    from harness.methods import names

    models = args.models.split(",")
    methods = names() if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in models if m not in SUBJECTS] + [m for m in methods if m not in names()]
    if unknown:
        parser.error(f"unknown model / method: {', '.join(unknown)}")
    scenarios = {name: {} for name in args.scenarios.split(",") if name and name != "none"}
    if set(scenarios) - set(_scenarios()):
        parser.error(f"unknown scenario: {', '.join(sorted(set(scenarios) - set(_scenarios())))}")
    if "protocol" in scenarios:
        steps = args.protocol_steps
        scenarios["protocol"] = {"images": args.protocol_images, "settings": args.protocol_settings,
                                 "steps": None if steps in (None, "all") else int(steps),
                                 "every_step": steps == "all"}
    run(models, methods, args.out, quick=args.quick, repeats=args.repeats, log=lambda line: print(line, flush=True),
        repairs=args.repairs, scenarios=scenarios)


if __name__ == "__main__":
    main()
