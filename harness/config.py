"""Where the config groups live, and reading a group's file outside Hydra's composition."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def group_defaults(group: str, name: str) -> dict[str, Any]:
    """The settings in conf/<group>/<name>.yaml, e.g. for runs that list several methods."""
    from omegaconf import OmegaConf

    file = CONFIG_DIR / group / f"{name}.yaml"
    if not file.is_file():
        raise HarnessError(f"unknown {group} {name!r}; valid: {', '.join(group_options(group))}")
    return OmegaConf.to_container(OmegaConf.load(file), resolve=True)
