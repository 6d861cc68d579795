"""Benchmarks: `python -m harness.bench [--scenarios methods,repairs,...]` (`make bench`: all of them).

Scenarios: methods (vs PAIR saliency and the raw-TensorFlow limit), repairs (sMPRT, eMPRT), protocol
(the paper's Inception cascade), overhead (the runner's), sweep (launchers), training. Each is a
module here with `measure_all(options, log) -> rows` and `section(frame) -> lines`, sharing `common`.
A run writes results/bench/bench.csv and bench.md and, when it runs every scenario at full size (or
with `--docs PATH`), docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path

SCENARIOS = ("methods", "repairs", "protocol", "overhead", "sweep", "training")
DOCS = Path("docs/benchmarks.md")


def run(scenarios: Sequence[str], options, out: Path = Path("results/bench"), docs: Path | None = None,
        log: Callable[[str], None] = print) -> Path:
    """Measure `scenarios` (in that order) with `options` (common.Options); returns bench.csv's path."""
    import pandas as pd

    from harness.bench import common

    frames, sections = [], []
    for name in scenarios:
        scenario = importlib.import_module(f"harness.bench.{name}")
        frame = pd.DataFrame(scenario.measure_all(options, log))
        sections += scenario.section(frame)
        frame.insert(0, "scenario", name)
        frames.append(frame)
    return common.write(pd.concat(frames, ignore_index=True), sections, list(scenarios), out, docs)[0]


def _protocol_steps(value: str) -> int | None:
    """`--protocol-steps`: 'all' (None) or a positive number, checked before anything is measured."""
    if value != "all" and not (value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"{value!r}: valid: a positive number of cascade steps, or 'all'")
    return None if value == "all" else int(value)


def _names(value: str) -> list[str]:
    return [name for name in value.split(",") if name]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=_names, default=list(SCENARIOS),
                        help=f"comma list of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--models", type=_names, default=["cnn", "inception"],
                        help="methods / repairs: comma list of: cnn, inception")
    parser.add_argument("--methods", default="all", help="methods: comma list of method names (default: all)")
    parser.add_argument("--quick", action="store_true", help="1 image, few samples / steps, small runs (smoke run)")
    parser.add_argument("--repeats", type=int, default=1, help="time each side at least this often, keep the best")
    parser.add_argument("--protocol-images", type=int, default=1, help="protocol: images in the timed run")
    parser.add_argument("--protocol-steps", type=_protocol_steps, default=argparse.SUPPRESS,
                        help="protocol: cascade steps timed, a number or 'all' (default: all on a GPU, 1 on a CPU)")
    parser.add_argument("--protocol-settings", choices=("paper", "scaled"),
                        help="protocol: the methods' samples / steps (default: paper on a GPU, scaled on a CPU)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--docs", type=Path, default=None,
                        help=f"also write the page here (default: {DOCS} when every scenario runs, not --quick)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown or not args.scenarios:
        parser.error(f"unknown scenario: {', '.join(unknown) or 'none given'}; valid: {', '.join(SCENARIOS)}")
    from harness.tf_logging import import_tensorflow_quietly

    import_tensorflow_quietly()  # the method registry below imports TensorFlow
    from harness.bench.common import Options
    from harness.methods import names

    methods = names() if args.methods == "all" else _names(args.methods)
    unknown = [m for m in args.models if m not in ("cnn", "inception")] + [m for m in methods if m not in names()]
    if unknown:
        parser.error(f"unknown model / method: {', '.join(unknown)}")
    protocol = {"images": args.protocol_images, "settings": args.protocol_settings}
    if hasattr(args, "protocol_steps"):  # given: a number, or None for every step
        protocol["steps"] = args.protocol_steps
    docs = args.docs or (DOCS if set(args.scenarios) == set(SCENARIOS) and not args.quick else None)
    options = Options(quick=args.quick, repeats=args.repeats, models=tuple(args.models), methods=tuple(methods),
                      protocol=protocol)
    run(args.scenarios, options, args.out, docs, log=lambda line: print(line, flush=True))
