"""Scenario `overhead`: the runner's overhead on the paper's MNIST experiments.

Runs `cascading_mlp` and `cascading_cnn` (conf/experiment/: their methods, settings, controls and
metrics) through `harness.runner.run` on the 1,200-step snapshots of the built-in models (the same
networks as the 55,000-step ones, so the same kernels) and fewer images than the experiments' 100
for the CNN, the original maps computed (no map cache), and reports run.json's `timings`: the run's
wall time, the kernels' share and the overhead's parts. Runner overhead is everything in a run that
is not a method kernel: scoring, writing the parts, randomizing and restoring blocks, the forward
passes that pick targets, assembling the run's files.

Each run is measured in a Python process of its own, as `harness` runs an experiment, so that its
figure does not depend on what the bench ran before it. Between runs on idle cores the kernels' time
moves most, so a share moves by about a point from run to run. `score`'s part is split by metric
(run.json's `score_by_metric`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.bench.common import Options, logged

EXPERIMENTS = {"cascading_mlp": "builtin:mnist_mlp@1200", "cascading_cnn": "builtin:mnist_cnn@1200"}
# Images per run: the CNN's run at the experiment's 100 images takes ~6 min on 2 cores, too long for
# `make bench`: it runs 20 and its row also gives the share projected to 100 (PER_IMAGE).
IMAGES = {"cascading_mlp": 100, "cascading_cnn": 20}
QUICK_IMAGES = 2
# Parts of a run that grow with the images (kernels, scoring, the targets' forward passes, the rows of
# scores.csv and summary.csv); the rest is per run (randomizing, one part file per unit, controls'
# bookkeeping). Scaling `assemble` with the images over-states it (its bootstrap is per group).
PER_IMAGE = ("score", "targets", "assemble")


def measure_all(options: Options, log: Callable[[str], None] = print) -> list[dict]:
    return [logged(measure_apart(name, QUICK_IMAGES if options.quick else IMAGES[name], options.quick), log)
            for name in EXPERIMENTS]


def measure_apart(experiment: str, images: int, quick: bool = False) -> dict:
    """`measure` in a new Python process (see the module's docstring); its row comes back as JSON
    in a file, its output (a model's training progress, an error) goes to the bench's."""
    with tempfile.TemporaryDirectory(prefix="bench-overhead-row-") as folder:
        row_file = Path(folder) / "row.json"
        command = [sys.executable, "-m", "harness.bench.overhead", experiment, str(images), str(row_file)]
        done = subprocess.run(command + (["--quick"] if quick else []))
        if done.returncode != 0 or not row_file.exists():
            raise RuntimeError(f"bench overhead: measuring {experiment} in its own process failed "
                               f"(exit {done.returncode}; its error is above): {' '.join(command)}")
        return json.loads(row_file.read_text())


def measure(experiment: str, images: int, quick: bool = False) -> dict:
    from harness import runner
    from harness.models import load_model
    from harness.reproduce import compose_run

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        cfg, _ = compose_run([f"experiment={experiment}", f"model.source={EXPERIMENTS[experiment]}",
                              "map_cache=false", "progress=false"], Path(folder), quick)
        full = int(cfg.data.count)  # the experiment's own image count
        cfg.data.count = images
        load_model(cfg.model, log=lambda _: None)  # trained and cached before the timed run, if it is not yet
        began = time.perf_counter()
        run_dir = runner.run(cfg, log=lambda _: None)
        wall = time.perf_counter() - began
        record = json.loads((run_dir / "run.json").read_text())
    t = record["timings"]
    projected = projected_fraction(t, full / images)
    total = t["total_seconds"]
    parts = ", ".join(f"{name} {s / total:.1%}" + (f" ({_score_split(t, total)})" if name == "score" else "")
                      for name, s in sorted(t["overhead_parts"].items(), key=lambda kv: -kv[1]))
    return {
        "model": "runner", "method": experiment, "images": images,
        "settings": f"{'quick' if quick else 'the experiment'}'s methods and controls; {cfg.model.source}",
        "harness_s": t["total_seconds"], "limit_s": t["kernel_seconds"], "overhead_fraction": t["overhead_fraction"], "projected_fraction": projected,
        "experiment_images": full,
        "note": (f"overhead {t['overhead_seconds']:.3g} s = {t['overhead_fraction']:.1%} of the run "
                 f"({parts}); "
                 f"loading the model and images {t['load_seconds']:.3g} s and the whole call {wall:.3g} s, outside it"
                 + (f"; at the experiment's {full} images (kernels and {', '.join(PER_IMAGE)} x{full / images:g}, "
                    f"the rest per run): {projected:.1%}" if full != images else "")),
    }




def _score_split(timings: dict, total: float) -> str:
    """`score`'s parts: each metric with the forms it is the first to read (run.json's
    score_by_metric), and the rest (preparing the maps, building the rows)."""
    by_metric = timings.get("score_by_metric") or {}
    rest = timings["overhead_parts"]["score"] - sum(by_metric.values())
    ranked = sorted(by_metric.items(), key=lambda kv: -kv[1])
    return ", ".join([*(f"{name} {s / total:.1%}" for name, s in ranked), f"rest {rest / total:.1%}"])


def projected_fraction(timings: dict, factor: float) -> float:
    """The overhead's share of a run with `factor` x the images: the kernels and the PER_IMAGE parts
    scaled, the rest kept."""
    parts = timings["overhead_parts"]
    overhead = sum(s * (factor if name in PER_IMAGE else 1.0) for name, s in parts.items())
    return overhead / (overhead + factor * timings["kernel_seconds"])


def section(frame) -> list[str]:
    """bench.md's section of the overhead rows."""
    about = [line for p in __doc__.split("\n\n")[1:3] for line in (p.replace("\n", " "), "")]  # what and how
    lines = ["## Runner overhead", "", *about,
             "| experiment | images | settings | run s | kernels s | overhead | at the experiment's images | note |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r.method} | {r.images} | {r.settings} | {r.harness_s:.3g} | {r.limit_s:.3g} | "
              f"{r.overhead_fraction:.1%} | {r.projected_fraction:.1%} ({r.experiment_images:.0f}) | {r.note} |"
              for r in frame.itertuples()]
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m harness.bench.overhead EXPERIMENT IMAGES ROW_FILE [--quick]`: one `measure`, its
    row written to ROW_FILE as JSON (what `measure_apart` runs)."""
    parser = argparse.ArgumentParser(prog="python -m harness.bench.overhead", description=main.__doc__)
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("images", type=int)
    parser.add_argument("row_file", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()  # the run below imports TensorFlow: without its start-up lines
    row = measure(args.experiment, args.images, args.quick)
    args.row_file.write_text(json.dumps(row))


if __name__ == "__main__":
    main()
