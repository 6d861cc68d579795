"""Scenario `overhead`: the runner's overhead on the paper's MNIST experiments.

`cascading_mlp` and `cascading_cnn` (conf/experiment/) run through `harness.runner.run` on the
1,200-step snapshots of the built-in models (the same kernels as the 55,000-step ones), the CNN on
fewer images than its 100, no map cache; the row is run.json's `timings`. Runner overhead is
everything in a run that is not a method kernel (scoring, split by metric; writing parts;
randomizing and restoring blocks; the target passes; assembling). Each run has a Python process of
its own, as an experiment does; between idle runs a share moves by about a point.
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

from harness.bench.common import Options, logged, markdown

EXPERIMENTS = {"cascading_mlp": "builtin:mnist_mlp@1200", "cascading_cnn": "builtin:mnist_cnn@1200"}
# The CNN at its 100 images takes ~6 min on 2 cores: 20, and the share projected to 100 (PER_IMAGE).
IMAGES = {"cascading_mlp": 100, "cascading_cnn": 20}
QUICK_IMAGES = 2
# Overhead parts that grow with the images (as the kernels do); the rest is per run. Scaling `assemble`
# with the images over-states it (its bootstrap is per group).
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
    by_metric = t.get("score_by_metric") or {}  # score's parts: each metric, and the rest (maps, rows)
    rest = t["overhead_parts"]["score"] - sum(by_metric.values())
    ranked = sorted(by_metric.items(), key=lambda kv: -kv[1])
    score_split = ", ".join([*(f"{name} {s / total:.1%}" for name, s in ranked), f"rest {rest / total:.1%}"])
    parts = ", ".join(f"{name} {s / total:.1%}" + (f" ({score_split})" if name == "score" else "")
                      for name, s in sorted(t["overhead_parts"].items(), key=lambda kv: -kv[1]))
    return {
        "model": "runner", "method": experiment, "images": images,
        "settings": f"{'quick' if quick else 'the experiment'}'s methods and controls; {cfg.model.source}",
        "harness_s": total, "limit_s": t["kernel_seconds"], "overhead_fraction": t["overhead_fraction"],
        "projected_fraction": projected, "experiment_images": full,
        "note": (f"overhead {t['overhead_seconds']:.3g} s = {t['overhead_fraction']:.1%} of the run ({parts}); "
                 f"loading the model and images {t['load_seconds']:.3g} s and the whole call {wall:.3g} s, outside it"
                 + (f"; at the experiment's {full} images (kernels and {', '.join(PER_IMAGE)} x{full / images:g}, "
                    f"the rest per run): {projected:.1%}" if full != images else "")),
    }


def projected_fraction(timings: dict, factor: float) -> float:
    """The overhead's share of a run with `factor` x the images: the kernels and the PER_IMAGE parts
    scaled, the rest kept."""
    parts = timings["overhead_parts"]
    overhead = sum(s * (factor if name in PER_IMAGE else 1.0) for name, s in parts.items())
    return overhead / (overhead + factor * timings["kernel_seconds"])


def section(frame) -> list[str]:
    return markdown(
        "## Runner overhead", " ".join(__doc__.split("\n\n", 1)[1].split()),
        "experiment | images: | settings | run s: | kernels s: | overhead: | at the experiment's images: | note",
        [[r.method, r.images, r.settings, f"{r.harness_s:.3g}", f"{r.limit_s:.3g}", f"{r.overhead_fraction:.1%}",
          f"{r.projected_fraction:.1%} ({r.experiment_images:.0f})", r.note] for r in frame.itertuples()])


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
