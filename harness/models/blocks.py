"""Grouping a model's variables into named blocks, in execution order (input -> output).

A block is what one randomization step re-initializes. By default, variables are grouped by their
name scope cut at a configurable depth (`conv1/kernel` -> `conv1` at depth 1); a model config may
instead give an explicit list (the paper's 17 Inception blocks). Explicit names match *whole* scope
components, so `Logits` never catches `AuxLogits/...`. Pure Python: no TensorFlow needed here.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from harness.errors import HarnessError


def clean_name(variable_name: str) -> str:
    """`conv1/kernel:0` -> `conv1/kernel` (SavedModel names carry the output index)."""
    return variable_name.rsplit(":", 1)[0] if ":" in variable_name else variable_name


def scope_of(variable_name: str) -> list[str]:
    """The name-scope components of a variable, without the variable's own name."""
    return clean_name(variable_name).split("/")[:-1]


def _contains_run(components: Sequence[str], pattern: Sequence[str]) -> bool:
    n = len(pattern)
    return any(list(components[i:i + n]) == list(pattern) for i in range(len(components) - n + 1))


def group_by_depth(names: Sequence[str], depth: int = 1) -> list[tuple[str, list[int]]]:
    """Group variable indices by the first `depth` scope components, ordered by first appearance."""
    if depth < 1:
        raise HarnessError(f"blocks.depth must be >= 1, got {depth}")
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        scope = scope_of(name) or [clean_name(name)]
        groups.setdefault("/".join(scope[:depth]), []).append(index)
    return list(groups.items())


def group_by_names(names: Sequence[str], block_names: Sequence[str], model: str = "model"
                   ) -> list[tuple[str, list[int]]]:
    """One block per explicit name (whole scope components), ordered by execution.

    A variable goes to the first listed block it matches; variables matching none stay untouched by
    every schedule (e.g. `AuxLogits` in the paper's Inception list).
    """
    members: dict[str, list[int]] = {block: [] for block in block_names}
    patterns = {block: block.strip("/").split("/") for block in block_names}
    for index, name in enumerate(names):
        for block in block_names:
            if _contains_run(scope_of(name), patterns[block]):
                members[block].append(index)
                break
    for block, indices in members.items():
        if not indices:
            raise HarnessError(
                f"block {block!r} matches no variable of {model}; nearest scope names: "
                f"{', '.join(nearest_scopes(block, names)) or '(none)'}"
            )
    return sorted(members.items(), key=lambda item: item[1][0])


def nearest_scopes(name: str, variable_names: Sequence[str], n: int = 5) -> list[str]:
    candidates = sorted({c for v in variable_names for c in scope_of(v)})
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.3)


def group(names: Sequence[str], depth: int = 1, block_names: Sequence[str] | None = None,
          model: str = "model") -> list[tuple[str, list[int]]]:
    if block_names:
        return group_by_names(names, block_names, model)
    return group_by_depth(names, depth)
