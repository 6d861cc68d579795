"""Scenario `methods`: every method timed three ways on the same model and images, after a warm-up:
the harness (all images in one call), PAIR `saliency.core` per image as its examples call it (over
the plain `call_model_function` of `harness.oracle`), and the raw-TensorFlow limit (ABOUT below).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skimage import segmentation

from harness import methods
from harness.bench.common import (LIMIT_TARGET, WARM_UP, Options, Subject, f, g, limit_rows_per_call, logged, ratio,
                                  raw_tf_limit, rounds, row, subject, markdown, timed)
from harness.methods import segments
from harness.oracle import pair_map

CNN_TARGET = ("smoothgrad", "integrated_gradients", "occlusion")  # >= 5x PAIR on the MNIST CNN


def measure_all(options: Options, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for key in options.models:
        made = subject(key, options.quick)
        rows += [logged(measure(made, m, options.repeats), log) | {"subject_note": made.note}
                 for m in options.methods or methods.names()]
    return rows


def measure(subject: Subject, method: str, repeats: int) -> dict:
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
    # XRAI is timed cold, so its limit also holds the segmentation no implementation can skip.
    work = felzenszwalb_work(subject) if method == "xrai" else None
    model_free = n_rows == forward_rows == 0  # a pseudo-method (harness.methods.baselines): no limit to reach

    def harness_side():
        if method == "xrai":
            segments.cache_clear()
        return fn(model, x, t, np.random.default_rng(0), params)

    sides = rounds({
        "harness": harness_side,
        "reference": lambda: _stack([pair_map(method, s, cmf, xi, ti) for xi, ti in zip(x, t)]),
        # value: (raw-TF seconds, seconds of the segmentation work) of the round
        **({} if model_free else {"limit": lambda: (raw_tf_limit(subject.reference, x, n_rows, forward_rows, per_call),
                                                    timed(work) if work else 0.0)}),
    }, repeats)
    if sides["reference"].value is None:
        del sides["reference"]
    harness, reference, limit = sides["harness"], sides.get("reference"), sides.get("limit")
    note = "no model rows: no raw-TF limit" if model_free else ""
    if method == "xrai":  # and the warm call's ratio to the raw-TF rows alone (every later cascade step)
        tf_s, felzenszwalb_s = limit.value
        for image in x:
            segments.masks_of(image)
        warm_s = min(timed(lambda: fn(model, x, t, np.random.default_rng(0), params)) for _ in range(max(repeats, 2)))
        note = (f"cold call (timed); limit = raw TF {tf_s:.3g} s + skimage Felzenszwalb {felzenszwalb_s:.3g} s "
                f"(PAIR's {len(segments.SCALES) * len(segments.SIGMAS)} settings per image on its 224x224 copy, "
                f"in threads); warm (segments cached, as at every later step of a cascading run): {warm_s:.3g} s = "
                f"{warm_s / tf_s:.3g}x raw TF")
    elif method == "guided_ig":  # by default one image per gradient call: a map must not depend on its batch
        calls = int(s["steps"]) * -(-len(x) // per_call)
        note = (f"sequential steps: limit = {calls} raw-TF calls of {per_call} row(s) (`max_batch: "
                f"{s['max_batch']}`; the per-step path search, NumPy on the host, is outside it)")
    return row(subject, method, params, sides, ratio(reference, harness) if reference else None,
               ratio(harness, limit) if limit else None, n_rows, forward_rows,
               _agreement(method, harness.value, reference.value if reference else None), note)


def felzenszwalb_work(subject: Subject) -> Callable[[], None]:
    """The segmentation in a cold XRAI call that no implementation of PAIR's XRAI can skip:
    skimage's Felzenszwalb on each image's 224 x 224 copy (made before the timer, normalized as
    PAIR's `_get_segments_felzenszwalb`) at PAIR's six settings, spread over the cores in threads as
    the harness spreads them. Not in it: resizing, the masks and their dilation, which PAIR and the
    harness (`harness.methods.segments`) each do their own way."""
    normalized = [segments.normalized(image) for image in subject.images]
    calls = [(im, scale, sigma) for im in normalized for scale in segments.SCALES for sigma in segments.SIGMAS]

    def run() -> None:
        with ThreadPoolExecutor(min(len(calls), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda c: segmentation.felzenszwalb(c[0], scale=c[1], sigma=c[2],
                                                              min_size=segments.MIN_SIZE), calls))
    return run


def _stack(maps: list) -> np.ndarray | None:
    return None if maps[0] is None else np.stack(maps).astype(np.float32)


def _agreement(method: str, maps: np.ndarray, reference: np.ndarray | None) -> float:
    """max |harness - PAIR| / max |PAIR| on the same images (NaN: no PAIR map, or other noise)."""
    if reference is None or methods.spec(method).stochastic:
        return float("nan")
    reference = np.broadcast_to(reference, maps.shape)
    return float(np.abs(maps - reference).max() / max(np.abs(reference).max(), 1e-30))


ABOUT = """## Saliency methods: harness vs PAIR saliency vs raw TensorFlow

Seconds for all images of a row, tracing not timed. The sides run in turn, rotating which goes
first; each keeps its best round (5 rounds under 2 s, 3 under 10 s, else `--repeats`).

- *PAIR*: `GetMask` / `GetSmoothedMask` per image with `batch_size=1`, as PAIR's examples call them;
  empty: PAIR `saliency.core` has no such method.
- *limit*: as many plain batched forward+backward rows (forward only for occlusion and CAM) in raw
  TensorFlow, `max_batch` rows per call; Guided IG's are its one-image sequential calls, cold XRAI's
  add skimage's Felzenszwalb at PAIR's settings. Near 1: no overhead beyond the model itself.
- *speedup* = PAIR / harness and *harness/limit*: medians of per-round ratios where both sides ran
  3+ rounds, else ratios of best times.
- *agreement* = max |harness - PAIR| / max |PAIR| (empty for stochastic methods).
"""


def section(frame) -> list[str]:
    """The method rows of each model, with the speed targets checked."""
    lines = [ABOUT]
    for name, part in frame.groupby("model", sort=False):
        lines += markdown(
            f"### {name}", part["subject_note"].iloc[0],
            "method | images: | settings | harness s: | PAIR s: | speedup: | limit s: | harness/limit: | agreement: "
            "| note",
            [[r.method, r.images, r.settings, f(r.harness_s), f(r.reference_s), f(r.speedup, "x"), f(r.limit_s),
              f(r.limit_ratio), g(r.agreement), r.note] for r in part.itertuples()], *target_lines(part), "")
    return lines


def target_lines(part) -> list[str]:
    """The speed targets on one model's rows: no slower than PAIR, within LIMIT_TARGET of the
    raw-TF limit; on the MNIST CNN also >= 5x PAIR for CNN_TARGET."""
    timed_rows = part[part["harness_s"].notna()]
    if timed_rows.empty:
        return []
    with_pair = timed_rows[timed_rows["reference_s"].notna()]
    # The cause of a row slower than PAIR, from its own times (a NaN limit compares False).
    slower = [f"{r.method} {f(r.speedup, 'x')} ("
              + (f"the raw-TF limit {f(r.limit_s)} s is itself slower than PAIR's one-image calls {f(r.reference_s)} s "
                 "on this CPU)" if r.limit_s >= r.reference_s
                 else f"harness overhead: {f(r.limit_ratio)}x the raw-TF limit {f(r.limit_s)} s)")
              for r in with_pair.itertuples() if r.speedup < 1]
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
