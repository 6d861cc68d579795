"""Where the configs live (`conf/`, `experiments/`: beside the package in a checkout, inside it in a
built wheel, harness/_build.py), and reading one group's config outside a Hydra run.

A config file whose name starts with `_` is a building block (a base others extend, a shared piece),
never a choice.
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


def composed(overrides: list[str]):
    """conf/config.yaml composed with `overrides`, as the `harness` command composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def group_options(group: str) -> list[str]:
    """The choices of a config group (`model` -> mnist_cnn, hub, ...), building blocks left out."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith(PARTIAL_PREFIX))


def group_defaults(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml merged over the files it extends, as `harness <group>=<name>` composes
    that group's node (tests/test_configs.py): for a method list's entries, the donor model."""
    from omegaconf import OmegaConf

    if name.startswith(PARTIAL_PREFIX) or not (CONFIG_DIR / group / f"{name}.yaml").is_file():
        raise HarnessError(f"unknown {group} {name!r}; valid: {', '.join(group_options(group))}")
    return OmegaConf.to_container(_composed(group, name, ()), resolve=True)


def model_defaults(name: str) -> dict[str, Any]:
    """conf/model/<name>.yaml; `NAME@STEPS` is its built-in model's snapshot at STEPS of training
    (docs/random-labels.md)."""
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
    """One group file merged over the same-group files its defaults list names, itself where `_self_`
    stands (last when not listed), as Hydra does."""
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
