"""Where the configs live, and reading one group's config outside a Hydra run.

`conf/` (the Hydra config groups) and `experiments/` (what `make reproduce` runs) are top-level
folders of the repository, the one copy anyone edits. A built wheel carries them inside the package,
as `harness/conf/` and `harness/experiments/` (pyproject.toml maps the folders there), so an
installed harness finds them next to this file; a source checkout (or an editable install) finds
them beside the package.

A config file whose name starts with `_` is a building block, not a choice: a base that other files
of its group extend (`defaults: [_base, _self_]`) or a shared piece (the paper's method list). It is
never listed as an option, and the command line rejects it as one.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

PACKAGE_DIR = Path(__file__).resolve().parent
PARTIAL_PREFIX = "_"


def _shipped(folder: str) -> Path:
    """`harness/<folder>` in an installed wheel, else `<checkout>/<folder>`."""
    inside = PACKAGE_DIR / folder
    return inside if inside.is_dir() else PACKAGE_DIR.parent / folder


CONFIG_DIR = _shipped("conf")
EXPERIMENTS_DIR = _shipped("experiments")


def group_options(group: str) -> list[str]:
    """The choices of a config group (`model` -> mnist_cnn, hub, ...), building blocks left out."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith(PARTIAL_PREFIX))


def group_defaults(group: str, name: str) -> dict[str, Any]:
    """The settings conf/<group>/<name>.yaml gives, with the files it extends merged in as Hydra
    composes them (`harness <group>=<name>` yields the same `<group>` node; a test checks every file).
    For what a run names without choosing it: the entries of a method list, the donor model."""
    from omegaconf import OmegaConf

    if name.startswith(PARTIAL_PREFIX) or not (CONFIG_DIR / group / f"{name}.yaml").is_file():
        raise HarnessError(f"unknown {group} {name!r}; valid: {', '.join(group_options(group))}")
    return OmegaConf.to_container(_composed(group, name, ()), resolve=True)


def model_defaults(name: str) -> dict[str, Any]:
    """conf/model/<name>.yaml; `NAME@STEPS` is that config's built-in model at snapshot STEPS of its
    training (a step-budget built-in, docs/random-labels.md), e.g. a donor
    `schedule.donor_model=mnist_cnn_randlabels_authors@8000`."""
    base, at, steps = name.partition("@")
    config = group_defaults("model", base)
    if not at:
        return config
    source = str(config.get("source") or "")
    if not (source.startswith("builtin:") and steps.isdigit() and int(steps) > 0):
        raise HarnessError(f"model {name!r}: `@STEPS` (a positive integer) names a snapshot of a built-in "
                           f"model's training; conf/model/{base}.yaml has source {source!r}")
    return config | {"source": f"{source.partition('@')[0]}@{int(steps)}"}


def _composed(group: str, name: str, seen: tuple[str, ...]):
    """One group file merged over the files its defaults list names (same group only): each entry in
    order, the file itself where `_self_` stands (last when it is not listed, as Hydra does)."""
    from omegaconf import OmegaConf

    if name in seen:
        raise HarnessError(f"conf/{group}/{name}.yaml extends itself ({' -> '.join([*seen, name])})")
    node = OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")
    entries = list(node.pop("defaults", None) or [])
    if "_self_" not in entries:
        entries.append("_self_")
    parts = []
    for entry in entries:
        if entry == "_self_":
            parts.append(node)
        elif isinstance(entry, str) and entry.isidentifier() and (CONFIG_DIR / group / f"{entry}.yaml").is_file():
            parts.append(_composed(group, entry, (*seen, name)))
        else:
            raise HarnessError(f"conf/{group}/{name}.yaml: defaults entry {entry!r} is not a file of the same group "
                               "(a group file may only extend others of its group)")
    return OmegaConf.merge(*parts)


# -- what a config value may be ------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What one config value may be: `test(value)` says whether it is, `valid` says it in words
    ("an integer >= 1"). `rule | other` accepts what either accepts. `choices`: a rule that only
    names allowed values, whose error reads "unknown <key> 'x'; valid: a, b"."""
    test: Callable[[Any], bool]
    valid: str
    choices: tuple[Any, ...] | None = None

    def __or__(self, other: "Rule") -> "Rule":
        choices = (self.choices + other.choices) if self.choices is not None and other.choices is not None else None
        return Rule(lambda v: self.test(v) or other.test(v), f"{self.valid} or {other.valid}", choices)


def _bounded(low, high, above, below) -> tuple[Callable[[Any], bool], str]:
    """The range test and its words: low <= v, v <= high, above < v, v < below (None: no bound)."""
    bounds = [(low, ">=", lambda v: v >= low), (above, ">", lambda v: v > above),
              (high, "<=", lambda v: v <= high), (below, "<", lambda v: v < below)]
    bounds = [(bound, sign, test) for bound, sign, test in bounds if bound is not None]
    return (lambda v: all(test(v) for _, _, test in bounds)), " and ".join(f"{s} {b}" for b, s, _ in bounds)


def whole(low: int | None = None, high: int | None = None, odd: bool = False) -> Rule:
    """An integer (a NumPy one too; not a bool, not 2.0) in [low, high]; odd when asked."""
    in_range, words = _bounded(low, high, None, None)
    kind = "an odd integer" if odd else "an integer"
    return Rule(lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and in_range(v)
                and (not odd or v % 2 == 1),
                f"{kind} {words}".strip())


def number(low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None) -> Rule:
    """A finite number (an integer counts: YAML writes 1.0 as 1) in the given range."""
    in_range, words = _bounded(low, high, above, below)
    return Rule(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and in_range(v),
                f"a number {words}".strip() if words else "a finite number")


def one_of(*choices: Any) -> Rule:
    words = repr(choices[0]) if len(choices) == 1 else f"one of {', '.join(map(str, choices))}"
    return Rule(lambda v: not isinstance(v, (list, dict)) and v in choices, words, tuple(choices))


def list_of(item: Rule, length: int | None = None) -> Rule:
    size = f"{length} " if length is not None else ""
    return Rule(lambda v: isinstance(v, (list, tuple)) and (length is None or len(v) == length)
                and all(item.test(x) for x in v), f"a list of {size}values, each {item.valid}")


FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
NULL = Rule(lambda v: v is None, "null")
Rules = Mapping[str, Rule]


def check(values: Mapping[str, Any], rules: Rules, *, prefix: str = "", where: str = "") -> None:
    """Each value of `values` that `rules` names (a dotted key reaches into a nested node) against its
    rule: a HarnessError naming the key (`prefix` + key, after `where`) and what is valid."""
    for key, rule in rules.items():
        present, value = _lookup(values, key)
        if present and not rule.test(value):
            if rule.choices is not None:
                raise HarnessError(f"{where}unknown {prefix}{key} {value!r}; valid: "
                                   f"{', '.join(map(str, rule.choices))}")
            raise HarnessError(f"{where}{prefix}{key} must be {rule.valid}, got {value!r}")


def _lookup(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    for part in key.split("."):
        if not isinstance(values, Mapping) or part not in values:
            return False, None
        values = values[part]
    return True, values


# The model group's values the harness reads before the model (harness.models checks what needs the
# model itself: block names, endpoints, a segmentation model's reduction).
MODEL_RULES: dict[str, Rule] = {
    "name": NULL | TEXT,
    "source": TEXT,
    "weights": NULL | TEXT,
    "input.size": NULL | list_of(whole(1), length=2),
    "input.channels": NULL | whole(1),
    "input.value_range": NULL | list_of(number(), length=2),
    "blocks.depth": whole(1),
    "blocks.names": NULL | list_of(TEXT),
    "gradcam_endpoint": NULL | TEXT,
}


def run_rules() -> dict[str, Rule]:
    """The top level of conf/config.yaml: the run's own settings."""
    from harness.controls import CONTROLS
    from harness.runner import TARGETS

    return {
        "command": one_of("run", "layers"),
        "seed": whole(0),  # NumPy seeds every generator from it: a negative seed is refused there
        "target": one_of(*TARGETS),
        "controls": NULL | list_of(one_of(*CONTROLS)),
        "methods": NULL | Rule(lambda v: isinstance(v, list) and bool(v), "a non-empty list of methods"),
        "maps_to_keep": whole(0),
        "results_dir": TEXT,
        "progress": FLAG,
        "map_cache": FLAG,
        "threads": one_of("auto") | whole(1),
        "experiment_name": NULL | TEXT,
    }


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every value of a composed run config against the rules of the piece that reads it, before any
    model is loaded or anything written: a value of the wrong type or out of range is one HarnessError
    naming its key and what is valid. The rules live beside their pieces (the settings a method,
    a schedule, the metrics, the data sources take); this walks them all."""
    from omegaconf import DictConfig, OmegaConf

    from harness import data, methods, schedules
    from harness.metrics.settings import MetricSettings

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    check(cfg, run_rules())
    check(cfg["model"], MODEL_RULES, prefix="model.")
    _, value_range = _lookup(cfg["model"], "input.value_range")
    if value_range and not value_range[0] < value_range[1]:
        raise HarnessError(f"model.input.value_range must be [low, high] with low < high, got {value_range}")
    data.check_settings(cfg["data"])
    schedules.check_settings(cfg["schedule"])
    MetricSettings.from_config(cfg["metrics"])
    for prefix, entry in method_entries(cfg):
        methods.check_entry(entry, prefix)


def method_entries(cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(the key that names it, the entry) for each method a run computes: `methods` when set (a name,
    or a mapping with `name` and settings), else the `method` group."""
    if not cfg.get("methods"):
        return [("method.", dict(cfg["method"]))]
    entries = []
    for i, entry in enumerate(cfg["methods"]):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise HarnessError(f"methods[{i}] must be a method name or a mapping with `name` (and settings), "
                               f"got {entry!r}")
        entries.append((f"methods[{i}].", dict(entry)))
    return entries
