"""Train (or resume) a step-budget built-in model up to a step count, exporting snapshots on the way.

    python -m harness.zoo.train mnist_cnn                         # the default CNN: 55,000 steps
    python -m harness.zoo.train mnist_cnn_authors --until 15000   # stop at 15,000 (resume later)
    python -m harness.zoo.train --list                            # recipes, snapshots and checkpoints

Stopping it (Ctrl-C, kill) loses at most the steps since the last checkpoint; the next invocation
continues from there and ends with the same weights as an uninterrupted training. Models and
checkpoints go to the harness's cache (`$HARNESS_CACHE_DIR`, else ~/.cache/saliency-harness).
"""
from __future__ import annotations

import argparse
import sys
import time

from harness import zoo
from harness.errors import HarnessError
from harness.zoo import budget


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.zoo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="a step-budget built-in model (e.g. mnist_cnn_authors)")
    parser.add_argument("--until", type=int, default=None, help="last step (default: the recipe's budget)")
    parser.add_argument("--checkpoint-seconds", type=float, default=None,
                        help="rewrite the rolling checkpoint at most this often (default 120)")
    parser.add_argument("--jit", action="store_true",
                        help="XLA-compile the training steps (about 20x slower than without on 2 CPU cores)")
    parser.add_argument("--list", action="store_true", help="list the step-budget recipes and what is cached")
    args = parser.parse_args(argv)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()
    budget.stop_on_sigterm()
    try:
        if args.list or not args.name:
            for name, recipe in sorted(zoo.RECIPES.items()):
                if isinstance(recipe, budget.StepRecipe):
                    latest = budget.best_checkpoint(budget.state_dir(name, recipe), 10**12)
                    print(f"{name}: budget {recipe.steps} steps, checkpoint at "
                          f"{budget.checkpoint_step(latest) if latest else 0}, snapshots "
                          f"{budget.available_snapshots(name, recipe) or 'none'}")
            return
        base, recipe, steps = budget.parse_name(zoo.canonical(args.name), zoo.RECIPES)
        options = {"jit_compile": args.jit}
        if args.checkpoint_seconds is not None:
            options["checkpoint_seconds"] = args.checkpoint_seconds
        began = time.perf_counter()
        with budget.trainer_lock(base, print):
            _, step, history = budget.train_until(base, recipe, steps if args.until is None else args.until,
                                                  log=print, **options)
        segment = history[-1] if history and history[-1]["to"] == step else None
        rate = (f", {(segment['to'] - segment['from']) / segment['seconds']:.2f} steps/s in this run"
                if segment and segment["seconds"] else "")
        print(f"{base}: at step {step} of {recipe.steps} ({time.perf_counter() - began:.0f} s{rate}); "
              f"snapshots: {budget.available_snapshots(base, recipe)}", flush=True)
    except HarnessError as error:
        print(f"train: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("train: interrupted; run the same command again to continue", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
