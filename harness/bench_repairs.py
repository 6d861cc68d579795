"""`make bench` rows for the repaired tests (Hedström et al. 2024, "A Fresh Look at Sanity Checks
for Saliency Maps"), whose costs are multiples of a method's:

- sMPRT: one model state's maps, each the mean over N noisy copies of its image
  (`harness.methods.smoothgrad.denoised`, the runner's sMPRT path): N x the method's rows;
- eMPRT: the maps on the trained and on the fully randomized model (every block re-initialized, the
  last step of `bottom_up`, with the randomizer's self-checks) and each map's histogram entropy
  (`harness.metrics.entropy`): 2 x the method's rows.

The limit is the same number of plain batched forward+backward rows in raw TensorFlow
(`bench.raw_tf_limit`), so harness/limit is what the test's bookkeeping costs beyond the model.
PAIR has neither test: its column stays empty.
"""
from __future__ import annotations

import numpy as np

from harness import bench

SMPRT_SAMPLES = {"mnist_cnn": 50, "inception_v3": 4}  # Hedström et al.'s N = 50; fewer at 299 px on CPU
QUICK_SAMPLES = 3
EMPRT_BINS = 100
METHOD = "gradient"  # the method whose batched kernel the repaired tests wrap


def measure_all(subject: bench.Subject, repeats: int, quick: bool) -> list[dict]:
    return [measure_smprt(subject, repeats, QUICK_SAMPLES if quick else SMPRT_SAMPLES[subject.name]),
            measure_emprt(subject, repeats)]


def measure_smprt(subject: bench.Subject, repeats: int, samples: int) -> dict:
    from harness import methods
    from harness.methods.smoothgrad import denoised

    x, t, params = subject.images, subject.targets, subject.params[METHOD]
    explain = denoised(methods.get(METHOD), samples, 0.1, np.random.default_rng(0))
    rows = samples * _rows_per_image(params, x) * len(x)
    timed = bench._rounds({
        "harness": lambda: explain(subject.model, x, t, np.random.default_rng(0), params),
        "limit": lambda: bench.raw_tf_limit(subject.reference, x, rows, 0, _per_call(params, x)),
    }, repeats)
    return _row(subject, f"smprt ({METHOD})", {"samples": samples}, timed, rows,
                f"one model state: {samples} noisy copies of each image, averaged")


def measure_emprt(subject: bench.Subject, repeats: int) -> dict:
    from harness import methods
    from harness.metrics.entropy import histogram_entropy
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

    rows = 2 * _rows_per_image(params, x) * len(x)
    timed = bench._rounds({
        "harness": emprt,
        "limit": lambda: bench.raw_tf_limit(subject.reference, x, rows, 0, _per_call(params, x)),
        "reinit": reinit,
    }, repeats)
    weights = sum(v.size for v in model.variables)
    harness, limit, drawn = (timed[side].best for side in ("harness", "limit", "reinit"))
    # The randomization is a cost of the test, not of the method: any implementation draws new weights.
    # The harness draws them from a seeded NumPy generator (the same weights on every machine), so it
    # is stated apart from the ratio.
    return _row(subject, f"emprt ({METHOD})", {"bins": EMPRT_BINS}, timed, rows,
                f"2 model states, entropy of every map; of its time, re-initializing {len(model.blocks)} blocks "
                f"({weights:,} weights, seeded NumPy draws, self-checked) and restoring them: {drawn:.3g} s; "
                f"without that {(harness - drawn) / limit:.3g}x limit")


def _rows_per_image(params: dict, x: np.ndarray) -> int:
    from harness import methods

    return methods.spec(METHOD).rows(methods.defaults(METHOD) | params, x.shape[1:])[0]


def _per_call(params: dict, x: np.ndarray) -> int:
    from harness import methods

    return bench.limit_rows_per_call(METHOD, methods.defaults(METHOD) | params, x)


def _row(subject: bench.Subject, name: str, settings: dict, timed: dict, rows: int, note: str) -> dict:
    harness, limit = timed["harness"], timed["limit"]
    return bench._row(subject, name, settings, harness.best, None, limit.best, None, bench.ratio(harness, limit),
                      rows, 0, note=note, rounds={side: timed[side].seconds for side in ("harness", "limit")})
