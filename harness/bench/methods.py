"""Scenario `methods`: every method timed three ways on the same model and images, after a warm-up
(tracing is not timed), the three in turn, best of a few rounds:
- harness: the registered method, all images in one call (batched kernels);
- reference: PAIR `saliency.core` called per image as its examples do (GetMask / GetSmoothedMask with
  the library's default batch_size=1), over the plain `call_model_function` a PAIR user writes
  (`harness.oracle`); "n/a" where PAIR has no such method;
- limit: the same number of rows as plain batched forward+backward passes (forward only for
  occlusion's windows and CAM) in raw TensorFlow, in chunks of the same `max_batch`.
On the built-in MNIST CNN (Grad-CAM's reference reads conv2 from a Keras twin with the same weights)
and a random-weight Keras InceptionV3 at 299 x 299 with fewer samples / steps (common.INCEPTION).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from harness.bench.common import (WARM_UP, Options, Subject, Timing, f, g, limit_rows_per_call, logged, ratio,
                                  raw_tf_limit, rounds, row, subject, timed)
from harness.oracle import pair_map

CNN_TARGET = ("smoothgrad", "integrated_gradients", "occlusion")  # >= 5x PAIR on the MNIST CNN
LIMIT_TARGET = 1.3  # harness within 1.3x of the raw-TF limit


def measure_all(options: Options, log: Callable[[str], None]) -> list[dict]:
    from harness import methods

    rows = []
    for key in options.models:
        made = subject(key, options.quick)
        rows += [logged(measure(made, m, options.repeats), log) | {"subject_note": made.note}
                 for m in options.methods or methods.names()]
    return rows


def measure(subject: Subject, method: str, repeats: int) -> dict:
    from harness import methods

    model, x, t = subject.model, subject.images, subject.targets
    params, fn = subject.params[method], methods.get(method)
    s = methods.defaults(method) | params
    try:
        fn(model, x[:1], t[:1], np.random.default_rng(0), params | {k: v for k, v in WARM_UP.items() if k in s})
    except Exception as error:  # noqa: BLE001 - e.g. CAM on a model without GAP: reported, not fatal
        return row(subject, method, params, note=f"not run: {str(error).splitlines()[0]}")
    cmf = subject.reference.call_model_function
    n_rows, forward_rows = (len(x) * n for n in methods.spec(method).rows(s, x.shape[1:]))
    per_call = limit_rows_per_call(method, s, x)
    work = LIMIT_WORK[method](subject) if method in LIMIT_WORK else None
    model_free = n_rows == forward_rows == 0  # a pseudo-method (harness.methods.baselines): no limit to reach
    sides = rounds({
        "harness": lambda: COLD.get(method, lambda: None)() or fn(model, x, t, np.random.default_rng(0), params),
        "reference": lambda: _stack([pair_map(method, s, cmf, xi, ti) for xi, ti in zip(x, t)]),
        # value: (raw-TF seconds, seconds of the method's LIMIT_WORK) of the round
        **({} if model_free else {"limit": lambda: (raw_tf_limit(subject.reference, x, n_rows, forward_rows, per_call),
                                                    timed(work) if work else 0.0)}),
    }, repeats)
    if sides["reference"].value is None:
        del sides["reference"]
    harness, reference, limit = sides["harness"], sides.get("reference"), sides.get("limit")
    note = (EXPLAIN[method](subject, params, limit, repeats) if method in EXPLAIN
            else "no model rows: no raw-TF limit" if model_free else "")
    return row(subject, method, params, sides, ratio(reference, harness) if reference else None,
               ratio(harness, limit) if limit else None, n_rows, forward_rows,
               _agreement(method, harness.value, reference.value if reference else None), note)


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


def _xrai_note(subject: Subject, params: dict, limit: Timing, repeats: int) -> str:
    """What XRAI's cold limit holds, and the warm call's ratio to the raw-TF rows alone (segments
    cached: every later step of a cascading run)."""
    from harness import methods
    from harness.methods import segments

    model, x, t = subject.model, subject.images, subject.targets
    tf_s, felzenszwalb_s = limit.value
    for image in x:
        segments.masks_of(image)
    warm_s = min(timed(lambda: methods.get("xrai")(model, x, t, np.random.default_rng(0), params))
                 for _ in range(max(repeats, 2)))
    return (f"cold call (timed); limit = raw TF {tf_s:.3g} s + skimage Felzenszwalb {felzenszwalb_s:.3g} s (PAIR's "
            f"{len(segments.SCALES) * len(segments.SIGMAS)} settings per image on its 224x224 copy, in threads); "
            f"warm (segments cached, as at every later step of a cascading run): {warm_s:.3g} s = "
            f"{warm_s / tf_s:.3g}x raw TF")


def _guided_ig_note(subject: Subject, params: dict, limit: Timing, repeats: int) -> str:
    """The sequential limit's call shape: by default each gradient call holds one image (an image's
    map must not depend on which images share its calls: which features a step moves flips with the
    last bits of a gradient)."""
    from harness import methods

    s = methods.defaults("guided_ig") | params
    per_call = limit_rows_per_call("guided_ig", s, subject.images)
    calls = int(s["steps"]) * -(-len(subject.images) // per_call)
    return (f"sequential steps: limit = {calls} raw-TF calls of {per_call} row(s) (`max_batch: {s['max_batch']}`; "
            "the per-step path search, NumPy on the host, is outside it)")


EXPLAIN = {"xrai": _xrai_note, "guided_ig": _guided_ig_note}


def _stack(maps: list) -> np.ndarray | None:
    return None if maps[0] is None else np.stack(maps).astype(np.float32)


def _agreement(method: str, maps: np.ndarray, reference: np.ndarray | None) -> float:
    """max |harness - PAIR| / max |PAIR| on the same images (NaN: no PAIR map, or other noise)."""
    from harness import methods

    if reference is None or methods.spec(method).stochastic:
        return float("nan")
    reference = np.broadcast_to(reference, maps.shape)
    return float(np.abs(maps - reference).max() / max(np.abs(reference).max(), 1e-30))


# -- bench.md ----------------------------------------------------------------------------------------
ABOUT = """## Saliency methods: harness vs PAIR saliency vs raw TensorFlow

Seconds for all images of a row, tracing not timed. The three sides are timed in turn, rotating
which goes first, and each side's best round is kept (5 rounds where a side takes < 2 s, 3 where
< 10 s, else the `--repeats`).

- *PAIR*: one `GetMask` / `GetSmoothedMask` per image as PAIR's examples call them, library defaults
  (`batch_size=1`) except the settings shown; VarGrad's reference is `GetMask` over noisy copies.
  Empty: PAIR `saliency.core` has no such method.
- *speedup* = PAIR / harness and *harness/limit* are medians of the per-round ratios where both
  sides ran 3+ rounds (back to back, so a burst of load slows both), else ratios of best times.
- *limit* = the same number of plain batched forward+backward rows (forward only for occlusion
  windows and CAM) in raw TensorFlow, `max_batch` rows per call (`harness.methods.kernels`);
  *harness/limit* near 1 means no overhead beyond the model itself (Blur IG's blurring and Guided
  IG's per-step path search are CPU work outside it). Guided IG's steps are sequential and its
  gradients come one image per call (as PAIR's), so its limit makes the same calls. XRAI is timed
  cold (its segment cache emptied before each call), so its limit also holds skimage's Felzenszwalb
  calls on every image (PAIR's segmentation without its resizing and masks).
- *agreement* = max |harness - PAIR| / max |PAIR| on the same images (empty for stochastic methods;
  the tests replay the harness's noise into PAIR instead). Guided IG and Blur IG amplify float32
  rounding, so their agreement is no better than PAIR's with itself.
"""


def section(frame) -> list[str]:
    """The method rows of each model, with the speed targets checked."""
    lines = [ABOUT]
    for name, part in frame.groupby("model", sort=False):
        lines += [f"### {name}", "", part["subject_note"].iloc[0], "",
                  "| method | images | settings | harness s | PAIR s | speedup | limit s | harness/limit "
                  "| agreement | note |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r.method} | {r.images} | {r.settings} | {f(r.harness_s)} | {f(r.reference_s)} | "
                  f"{f(r.speedup, 'x')} | {f(r.limit_s)} | {f(r.limit_ratio)} | {g(r.agreement)} | {r.note} |"
                  for r in part.itertuples()]
        lines += ["", *target_lines(part), ""]
    return lines


def target_lines(part) -> list[str]:
    """The speed targets, checked on one model's rows: no slower than PAIR and within 1.3x of the
    raw-TensorFlow limit; on the MNIST CNN also >= 5x PAIR for CNN_TARGET."""
    timed_rows = part[part["harness_s"].notna()]
    if timed_rows.empty:
        return []
    with_pair = timed_rows[timed_rows["reference_s"].notna()]
    slower = [f"{r.method} {f(r.speedup, 'x')} ({_slower_cause(r)})" for r in with_pair.itertuples() if r.speedup < 1]
    over = [f"{r.method} {f(r.limit_ratio)}x" for r in timed_rows.itertuples() if r.limit_ratio > LIMIT_TARGET]
    lines = [f"Target no slower than PAIR: {'met' if not slower else 'MISSED by ' + ', '.join(slower)}. "
             f"Target within {LIMIT_TARGET}x of the raw-TF limit: "
             + ("met." if not over else f"MISSED by {', '.join(over)} (harness overhead beyond the model's rows).")]
    wanted = timed_rows[timed_rows["method"].isin(CNN_TARGET)]
    if timed_rows["model"].iloc[0] == "mnist_cnn" and not wanted.empty:
        lines.insert(0, "Target >= 5x PAIR for SmoothGrad, IG, Occlusion: "
                     + ", ".join(f"{r.method} {f(r.speedup, 'x')} {'met' if r.speedup >= 5 else 'MISSED'}"
                                 for r in wanted.itertuples()))
    return lines


def _slower_cause(r) -> str:
    """Why a row is slower than PAIR, from its own times: the raw-TF rows themselves (the model's
    batched calls slower here than PAIR's one-image calls), or the harness's overhead beyond them."""
    if r.limit_s == r.limit_s and r.limit_s >= r.reference_s:
        return (f"the raw-TF limit {f(r.limit_s)} s is itself slower than PAIR's one-image calls "
                f"{f(r.reference_s)} s on this CPU")
    return f"harness overhead: {f(r.limit_ratio)}x the raw-TF limit {f(r.limit_s)} s"
