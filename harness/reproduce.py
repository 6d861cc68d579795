"""`make reproduce`: run the paper's experiments (experiments/*.yaml) and build the report.

    python -m harness.reproduce                      # all experiments -> results/reproduce/
    python -m harness.reproduce cascading_cnn        # one experiment
    python -m harness.reproduce --quick              # few images, few samples -> results/reproduce-quick/
    python -m harness.reproduce inception_cascading model.source=/path data=folder data.path=/imgs

Each experiment lands in `<out>/<experiment>/`; finished runs are not recomputed. An optional
experiment whose model cannot be had is written as `skipped.json` with the reason. A quick run has its
own folder: the report refuses a folder that mixes runs of one experiment with different settings.
An experiment file lists its runs, each a list of overrides (usually `experiment=<preset>`); its own
`title` / `optional` win over the preset's `experiment:` block; `kind: calibration` needs no model.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from harness.config import EXPERIMENTS_DIR, composed, group_defaults, model_defaults
from harness.errors import HarnessError
from harness.results import write_json

# --quick: the same experiments, shrunk (a test runs every experiment this way).
QUICK_OVERRIDES = ["data.count=2", "maps_to_keep=2"]
QUICK_METHOD_PARAMS = {"samples": 2, "steps": 3, "n_samples": 2}
QUICK_CALIBRATION_PAIRS = 2
QUICK_TRAINING_STEPS = 1_200  # a built-in step-budget model as its snapshot after this many steps
OUT = Path("results/reproduce")
QUICK_OUT = Path("results/reproduce-quick")


def definitions() -> dict[str, dict[str, Any]]:
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(EXPERIMENTS_DIR.glob("*.yaml"))}


def compose_run(overrides: list[str], results_dir: Path, quick: bool):
    """The run's config, and the preset's `experiment:` block (title, optional, how_to_provide) taken
    out of it: it describes the preset, so it stays out of the run's key."""
    extra = [f"results_dir={results_dir}"] + (QUICK_OVERRIDES if quick else [])
    cfg = composed([*overrides, *extra])
    with open_dict(cfg):
        preset = OmegaConf.to_container(cfg.pop("experiment", None) or OmegaConf.create({}), resolve=True)
    if not quick:
        return cfg, preset
    if cfg.get("methods"):
        cfg.methods = [_shrunk(name) for name in cfg.methods]
    schedule = cfg.get("schedule") or {}
    if "samples" in schedule:  # sMPRT's noisy copies
        schedule.samples = min(schedule.samples, QUICK_METHOD_PARAMS["samples"])
    if schedule.get("donor_model"):
        schedule.donor_model = _early_donor(str(schedule.donor_model))
    if cfg.get("model"):
        cfg.model.source = _early_snapshot(str(cfg.model.source))
    return cfg, preset


def about(definition: dict[str, Any]) -> dict[str, Any]:
    """Title, optional and how_to_provide of an experiment: its file's, else its first run's preset's."""
    described = {}
    if definition.get("runs"):
        _, described = compose_run(list(definition["runs"][0]), OUT, quick=False)
    return described | {k: definition[k] for k in ("title", "optional", "how_to_provide") if k in definition}


def _shrunk(entry: Any) -> dict[str, Any]:
    """A method entry (a name, or a mapping with `name`) with its sample / step counts cut down."""
    given = {"name": entry} if isinstance(entry, str) else OmegaConf.to_container(entry)
    params = group_defaults("method", given["name"]) | given
    return params | {k: min(v, QUICK_METHOD_PARAMS[k]) for k, v in params.items() if k in QUICK_METHOD_PARAMS}


def _early_snapshot(source: str) -> str:
    """A quick run's built-in model: a cheap snapshot of the same training (harness.zoo.quick_name)."""
    from harness import zoo

    if not source.startswith("builtin:"):
        return source
    return "builtin:" + zoo.quick_name(source.removeprefix("builtin:"), QUICK_TRAINING_STEPS)


def _early_donor(name: str) -> str:
    """A quick run's donor model config name (`mnist_cnn_randlabels_authors` -> `...@1200`)."""
    source = str(model_defaults(name).get("source") or "")
    early = _early_snapshot(source)
    return name if early == source else f"{name.partition('@')[0]}@{early.rpartition('@')[2]}"


def run_experiment(name: str, definition: dict[str, Any], out: Path, quick: bool, extra: list[str]) -> str:
    """Run one experiment into out/<name>/; returns 'done' or 'skipped'."""
    from harness import runner
    from harness.calibration import run_calibration

    folder = out / name
    if definition.get("kind") == "calibration":
        run_calibration(folder, pairs=QUICK_CALIBRATION_PAIRS if quick else int(definition.get("pairs", 50)))
        return "done"
    (folder / "skipped.json").unlink(missing_ok=True)
    for overrides in definition["runs"]:
        cfg, preset = compose_run([*overrides, *extra], folder, quick)
        described = preset | {k: definition[k] for k in ("optional", "how_to_provide") if k in definition}
        try:
            runner.run(cfg, log=print)
        except HarnessError as error:
            if not described.get("optional"):
                raise
            write_json(folder / "skipped.json", {"experiment": name, "reason": str(error),
                                                 "how_to_provide": described.get("how_to_provide", "")})
            return "skipped"
    if definition.get("segmentation_figures"):  # figures like MATLAB's gradCAM example, for the report
        _segmentation_figures(folder, cfg, definition["segmentation_figures"])
    return "done"


def _segmentation_figures(folder: Path, cfg, settings: dict[str, Any]) -> None:
    """`<folder>/segmentation-figures/explained.npz` for the last run's model and (at most data.count) images."""
    from harness.segmentation_figures import write

    model, data = (OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data"))
    count = min(int(settings.get("count", 4)), int(data.get("count") or settings.get("count", 4)))
    write(folder / "segmentation-figures", model, data, count, int(settings.get("classes", 2)))


def builtin_models(names: list[str], known: dict[str, dict[str, Any]], extra: list[str], quick: bool) -> list[str]:
    """The built-in models the experiments load, in run order (models and donor models); a run that does
    not compose is left out (its experiment reports it)."""
    found = []
    for name in names:
        for overrides in known[name].get("runs") or []:
            try:
                cfg, _ = compose_run([*overrides, *extra], OUT / name, quick)
                sources = [str((cfg.get("model") or {}).get("source") or "")]
                donor = (cfg.get("schedule") or {}).get("donor_model")
                if donor:
                    sources.append(str(model_defaults(str(donor)).get("source") or ""))
            except HarnessError:
                continue
            found += [s.removeprefix("builtin:") for s in sources if s.startswith("builtin:")]
    return found


def train_models(names: list[str], known: dict[str, dict[str, Any]], extra: list[str], quick: bool) -> None:
    """Train every built-in model the experiments need and the cache lacks (harness.zoo.prepare)."""
    from harness.zoo import prepare

    # Flushed: the estimate must come first even when stdout is a file or a pipe (block-buffered).
    prepare.train_all(builtin_models(names, known, extra, quick), log=functools.partial(print, flush=True),
                      quick_names=None if quick else lambda: builtin_models(names, known, extra, True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="*", help="experiment names (default: all), then Hydra overrides (key=value)")
    parser.add_argument("--quick", action="store_true", help="few images and samples: a smoke test of every experiment")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {OUT}, with --quick {QUICK_OUT})")
    # Intermixed: options may follow the experiment names and overrides (`cascading_cnn --out X a=b`).
    args = parser.parse_intermixed_args(argv)
    args.out = args.out or (QUICK_OUT if args.quick else OUT)
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()
    known = definitions()
    # `default: false` experiments (training_budget: hours of training) run only when named.
    names = [i for i in args.items if "=" not in i] or [n for n, d in known.items() if d.get("default", True)]
    extra = [i for i in args.items if "=" in i]
    try:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise HarnessError(f"unknown experiment {unknown[0]!r}; valid: {', '.join(known)}")
        train_models(names, known, extra, args.quick)
        durations = {}
        for name in names:
            began = time.perf_counter()
            print(f"== {name}: {about(known[name]).get('title', '')}", flush=True)
            status = run_experiment(name, known[name], args.out, args.quick, extra)
            durations[name] = time.perf_counter() - began
            print(f"== {name}: {status} in {durations[name]:.0f} s", flush=True)
        from harness.report import build_report

        report = build_report(args.out)
    except HarnessError as error:
        print(f"reproduce: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C, or `kill` while models train side by side
        print("reproduce: interrupted; run the same command again to continue (trainings resume from "
              "their checkpoints, finished runs are kept)", file=sys.stderr)
        sys.exit(130)
    print("durations: " + ", ".join(f"{n} {s:.0f} s" for n, s in durations.items()))
    print(f"report: {report}")


if __name__ == "__main__":
    main()
