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
