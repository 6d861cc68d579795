"""Every value of a composed run config checked before anything runs, against the rules of the piece
that reads it: a bad value is one HarnessError naming its key and what is valid."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError
from harness.rules import FLAG, NULL, TEXT, Rule, check, list_of, lookup, number, one_of, whole

#: Which class a map explains: the model's prediction, the original model's, or the image's label.
TARGETS = ("predicted", "original", "label")

# The model group's values read before the model (harness.models checks what needs the model itself).
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
    """Every value of `cfg` against the rules of the piece that reads them (which live beside it)."""
    from omegaconf import DictConfig, OmegaConf

    from harness import data, methods, schedules
    from harness.metrics.settings import MetricSettings

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    check(cfg, run_rules())
    check(cfg["model"], MODEL_RULES, prefix="model.")
    _, value_range = lookup(cfg["model"], "input.value_range")
    if value_range and not value_range[0] < value_range[1]:
        raise HarnessError(f"model.input.value_range must be [low, high] with low < high, got {value_range}")
    check(cfg["data"], data.RULES, prefix="data.")
    schedules.check_settings(cfg["schedule"])
    MetricSettings.from_config(cfg["metrics"])
    for prefix, entry in method_entries(cfg):
        methods.check_entry(entry, prefix)


def method_entries(cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(the key that names it, the entry) for each method of a run: `methods` when set, else `method`."""
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
