"""Grouping a model's variables into named blocks (what one randomization step re-initializes), in
execution order. Pure Python: no TensorFlow here.

By default, variables are grouped by their name scope cut at a depth (`conv1/kernel` -> `conv1` at
depth 1); a model config may instead list names (the paper's 17 Inception blocks). Both start below
the model's *root*, the scope components every variable shares (`InceptionV3/...`: counted as a block,
it would make the whole network one step). Explicit names are anchored there and match *whole* scope
components (`Logits` never catches `AuxLogits`); a name with no match at the root may still name one
nested scope (a layer inside a backbone), several is an error. Blocks never share a variable.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

from harness.errors import HarnessError


def clean_name(variable_name: str) -> str:
    """`conv1/kernel:0` -> `conv1/kernel` (SavedModel names carry the output index)."""
    return variable_name.rsplit(":", 1)[0]


def scope_of(variable_name: str) -> list[str]:
    """The name-scope components of a variable, without the variable's own name."""
    return clean_name(variable_name).split("/")[:-1]


def common_root(names: Sequence[str]) -> list[str]:
    """The leading scope components that every variable shares (`['InceptionV3']`), never the whole
    scope of one (`dense/kernel`, `dense/bias` have none: something below it remains to group by);
    variables outside any scope (a TF1 hub module's `global_step`) do not count."""
    scopes = [scope for scope in map(scope_of, names) if scope]
    if not scopes:
        return []
    root = os.path.commonprefix(scopes)  # element-wise: the shared leading components
    return root[:min(len(scope) for scope in scopes) - 1]


def _relative(name: str, root: Sequence[str]) -> list[str]:
    return scope_of(name)[len(root):]


def group_by_depth(names: Sequence[str], depth: int = 1) -> list[tuple[str, list[int]]]:
    """Group variable indices by the first `depth` scope components below the common root,
    ordered by first appearance."""
    if depth < 1:
        raise HarnessError(f"blocks.depth must be >= 1, got {depth}")
    root = common_root(names)
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        scope = _relative(name, root) or [clean_name(name).rsplit("/", 1)[-1]]
        groups.setdefault("/".join(scope[:depth]), []).append(index)
    return list(groups.items())


def _members(block: str, names: Sequence[str], root: Sequence[str], model: str) -> list[int]:
    """Indices of the variables `block` names: anchored at the root (or at the full path, for a name
    that spells the root out), else the one nested scope that ends with it."""
    pattern = block.strip("/").split("/")
    n = len(pattern)
    anchored = [i for i, name in enumerate(names) if pattern in (_relative(name, root)[:n], scope_of(name)[:n])]
    if anchored:
        return anchored
    nested: dict[tuple[str, ...], list[int]] = {}  # scope prefix ending in the run `pattern` -> indices
    for index, name in enumerate(names):
        components = _relative(name, root)
        for i in range(1, len(components) - n + 1):
            if components[i:i + n] == pattern:
                nested.setdefault(tuple(components[:i + n]), []).append(index)
    if len(nested) > 1:
        candidates = sorted("/".join(scope) for scope in nested)
        shown = ", ".join(candidates[:8]) + (f" (and {len(candidates) - 8} more)" if len(candidates) > 8 else "")
        raise HarnessError(f"block {block!r} of {model} is ambiguous: it is no scope at the model's root "
                           f"{'/'.join(root) or '(none)'} but names {len(candidates)} nested scopes: {shown}; "
                           "give one of them in full")
    return next(iter(nested.values()), [])


def group_by_names(names: Sequence[str], block_names: Sequence[str], model: str = "model"
                   ) -> list[tuple[str, list[int]]]:
    """One block per explicit name, ordered by execution (module docstring). Variables matching no name
    stay untouched by every schedule (`AuxLogits` in the paper's Inception list); a variable matching
    two names is an error, as is a name matching nothing."""
    root = common_root(names)
    duplicates = sorted({b for b in block_names if list(block_names).count(b) > 1})
    if duplicates:
        raise HarnessError(f"block names of {model} listed twice: {', '.join(duplicates)}")
    members: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for block in block_names:
        indices = _members(block, names, root, model)
        if not indices:
            candidates = sorted({c for name in names for c in scope_of(name)})
            nearest = difflib.get_close_matches(block, candidates, n=5, cutoff=0.3)
            raise HarnessError(f"block {block!r} matches no variable of {model}; nearest scope names: "
                               f"{', '.join(nearest) or '(none)'}")
        for index in indices:
            if index in owner:
                raise HarnessError(f"blocks {owner[index]!r} and {block!r} of {model} both match "
                                   f"{clean_name(names[index])}; blocks must not overlap")
            owner[index] = block
        members[block] = indices
    return sorted(members.items(), key=lambda item: item[1][0])


# Variables that are state, not weights, whatever their trainability: RNG state (a Dropout layer's
# seed generator), counters. Classified by name, shape and dtype only: `trainable` says whether the
# optimizer may touch a variable, not what it is, and a frozen (trainable=False) kernel is a kernel.
STATE_LEAVES = ("count", "counter", "iterations", "step", "global_step", "seed", "seed_generator_state")
WEIGHT_ROLES = ("kernel", "bias", "gamma")


def variable_role(name: str, shape: Sequence[int], floating: bool = True) -> str:
    """kernel (rank >= 2) | bias (rank 1: biases, batch-norm beta) | gamma (batch-norm scale) |
    moving_stat (batch-norm moving mean / variance, randomized per the schedule's `bn_stats`) |
    other (integer variables, RNG state, counters and scalars: never randomized)."""
    components = [c.lower() for c in clean_name(name).split("/")]
    leaf = components[-1]
    if (not floating or leaf in STATE_LEAVES or "seed" in leaf
            or any(c.startswith("seed_generator") for c in components)):
        return "other"
    if "moving" in leaf or leaf in ("mean", "variance"):
        return "moving_stat"
    if len(shape) == 0:
        return "other"
    if leaf in ("gamma", "scale"):
        return "gamma"
    if len(shape) >= 2:
        return "kernel"
    return "bias"
