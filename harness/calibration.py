"""Calibration (the paper's appendix): each metric's score for pairs of independent random masks,
its floor measured, not assumed (SSIM and HOG are not 0 for noise). Rows as the random_mask control's."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.results import (CONTROL_SCHEDULE, CONTROL_STEP, NO_CLASS, RECORD, SCORE_COLUMNS, SCORES, SUMMARY,
                             RunRecord, write_csv)
from harness.metrics import MetricSettings, compare, random_mask
from harness.summary import summarize

# (name, mask kind, shape): the paper's 299 px RGB maps and the MNIST track's 28 px maps.
MASKS = (("gaussian_299x299x3", "gaussian", (299, 299, 3)), ("uniform_299x299x1", "uniform", (299, 299, 1)),
         ("gaussian_28x28x1", "gaussian", (28, 28, 1)), ("uniform_28x28x1", "uniform", (28, 28, 1)))


def calibration_scores(pairs: int, settings: MetricSettings, seed: int = 0) -> pd.DataFrame:
    rows = []
    for name, kind, shape in MASKS:
        rng = np.random.default_rng([seed, len(rows)])
        for pair in range(pairs):
            for score in compare(random_mask(shape, rng, kind), random_mask(shape, rng, kind), settings):
                rows.append({"model": "none", "method": name, "variant": name, "schedule": CONTROL_SCHEDULE,
                             "step": CONTROL_STEP, "block": "random_mask", "image_id": f"pair_{pair:03d}",
                             "target_class": NO_CLASS, "reference_class": NO_CLASS,
                             "metric": score.metric, "value": score.value, "degenerate": score.degenerate,
                             "reason": score.reason, "seed": seed})
    return pd.DataFrame.from_records(rows, columns=SCORE_COLUMNS)


def run_calibration(out: Path, pairs: int = 50, metrics: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """Write a run folder (scores.csv, summary.csv, run.json) of random-mask pairs under `out`."""
    settings = MetricSettings.from_config(metrics or {})
    run_dir = Path(out) / "runs" / f"calibration-{pairs}pairs-seed{seed}"
    if (run_dir / RECORD).is_file():  # written last: the calibration finished
        return run_dir
    began = time.perf_counter()
    scores = calibration_scores(pairs, settings, seed)
    write_csv(run_dir / SCORES, scores)
    write_csv(run_dir / SUMMARY, summarize(scores, seed))
    RunRecord(config={"experiment_name": "calibration", "pairs": pairs, "masks": [m[0] for m in MASKS]},
              model={"name": "none"}, metrics=settings.to_record(), seed=seed,
              timings={"total_seconds": time.perf_counter() - began}).write(run_dir)
    return run_dir
