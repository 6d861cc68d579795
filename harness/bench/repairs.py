"""Scenario `repairs`: the repaired tests of Hedström et al. 2024 ("A Fresh Look at Sanity Checks
for Saliency Maps") over the Gradient's batched kernel, against the raw-TF limit of the same rows:
sMPRT's maps on one model state, each the mean over N noisy copies of its image (the runner's sMPRT
path: N x the method's rows); eMPRT's maps on the trained and the fully randomized model (every
block re-initialized, with the randomizer's self-checks) and their histogram entropies (2 x the
rows). harness/limit is what a test's bookkeeping costs beyond the model; PAIR has neither test.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness import methods
from harness.bench.common import (LIMIT_TARGET, Options, Subject, f, limit_rows_per_call, logged, ratio, raw_tf_limit,
                                  markdown, rounds, row, subject)
from harness.metrics.entropy import histogram_entropy

SMPRT_SAMPLES = {"mnist_cnn": 50, "inception_v3": 4}  # Hedström et al.'s N = 50; fewer at 299 px on CPU
QUICK_SAMPLES = 3
EMPRT_BINS = 100
METHOD = "gradient"  # the method whose batched kernel the repaired tests wrap


def measure_all(options: Options, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for key in options.models:
        made = subject(key, options.quick)
        samples = QUICK_SAMPLES if options.quick else SMPRT_SAMPLES[made.name]
        rows.append(logged(measure_smprt(made, options.repeats, samples), log))
        rows.append(logged(measure_emprt(made, options.repeats), log))
    return rows


def measure_smprt(subject: Subject, repeats: int, samples: int) -> dict:
    from harness.methods.smoothgrad import denoised

    x, t, params = subject.images, subject.targets, subject.params[METHOD]
    explain = denoised(methods.get(METHOD), samples, 0.1, np.random.default_rng(0))
    sides, n_rows = _rounds(subject, samples, lambda: explain(subject.model, x, t, np.random.default_rng(0), params),
                            {}, repeats)
    return _row(subject, f"smprt ({METHOD})", {"samples": samples}, sides, n_rows,
                f"one model state: {samples} noisy copies of each image, averaged")


def measure_emprt(subject: Subject, repeats: int) -> dict:
    from harness.schedules import Randomizer, Reinit, schedule_steps

    model, x, t, params = subject.model, subject.images, subject.targets, subject.params[METHOD]
    fn = methods.get(METHOD)
    randomizer = Randomizer(model, Reinit())
    everything = schedule_steps("bottom_up", [b.name for b in model.blocks])[-1]

    def emprt() -> list[float]:
        trained = fn(model, x, t, np.random.default_rng(0), params)
        with randomizer.step(everything):
            randomized = fn(model, x, t, np.random.default_rng(0), params)
        return [(histogram_entropy(r, EMPRT_BINS) - h) / h for r, h in
                zip(randomized, (histogram_entropy(m, EMPRT_BINS) for m in trained))]

    def reinit() -> None:
        with randomizer.step(everything):
            pass

    sides, n_rows = _rounds(subject, 2, emprt, {"reinit": reinit}, repeats)
    weights = sum(v.size for v in model.variables)
    harness, limit, drawn = (sides[side].best for side in ("harness", "limit", "reinit"))
    # Drawing new weights is a cost of the test, not of the method (any implementation draws them): apart.
    return _row(subject, f"emprt ({METHOD})", {"bins": EMPRT_BINS}, sides, n_rows,
                f"2 model states, entropy of every map; of its time, re-initializing {len(model.blocks)} blocks "
                f"({weights:,} weights, seeded NumPy draws, self-checked) and restoring them: {drawn:.3g} s; "
                f"without that {(harness - drawn) / limit:.3g}x limit")


def _rounds(subject: Subject, times: int, harness: Callable, others: dict, repeats: int) -> tuple[dict, int]:
    """Rounds of `harness`, the raw-TF limit of `times` x the method's rows, and `others`; those rows."""
    s = methods.defaults(METHOD) | subject.params[METHOD]
    n_rows = times * methods.spec(METHOD).rows(s, subject.images.shape[1:])[0] * len(subject.images)
    per_call = limit_rows_per_call(METHOD, s, subject.images)
    return rounds({"harness": harness, "limit": lambda: raw_tf_limit(subject.reference, subject.images, n_rows, 0,
                                                                     per_call), **others}, repeats), n_rows


def _row(subject: Subject, name: str, settings: dict, sides: dict, n_rows: int, note: str) -> dict:
    sides = {side: sides[side] for side in ("harness", "limit")}
    return row(subject, name, settings, sides, limit_ratio=ratio(sides["harness"], sides["limit"]), rows=n_rows,
               note=note)


def section(frame) -> list[str]:
    verdicts = ", ".join(f"{r.model} {r.method} {f(r.limit_ratio)}x "
                         f"{'met' if r.limit_ratio <= LIMIT_TARGET else 'MISSED'}" for r in frame.itertuples())
    return markdown("## The repaired tests: sMPRT and eMPRT", "The" + __doc__.removeprefix("Scenario `repairs`: the"),
                    "model | test | images: | settings | harness s: | limit s: | harness/limit: | note",
                    [[r.model, r.method, r.images, r.settings, f(r.harness_s), f(r.limit_s), f(r.limit_ratio), r.note]
                     for r in frame.itertuples()],
                    f"Target sMPRT and eMPRT within {LIMIT_TARGET}x of the raw-TF limit: {verdicts}", "")
