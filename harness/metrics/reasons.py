"""Why a score is degenerate (docs/protocol.md §5.1): the reasons every metric gives alike."""

from __future__ import annotations

import numpy as np

#: What a metric gives for each pair: the value and "" or why it is degenerate (NaN when undefined).
Result = tuple[float, str]
NAN = float("nan")


def is_constant(x: np.ndarray) -> bool:
    return x.size == 0 or bool(x.min() == x.max())


def constant_rows(stack: np.ndarray) -> np.ndarray:
    """Whether each map of a stack [n, ...] is constant."""
    flat = stack.reshape(len(stack), -1)
    return flat.min(axis=1) == flat.max(axis=1) if flat.shape[1] else np.ones(len(flat), bool)


def reason(ref_constant: bool, cmp_constant: bool, what: str) -> str:
    """'' if neither side is `what`, else e.g. 'constant map (reference and compared)'."""
    sides = [name for name, constant in (("reference", ref_constant), ("compared", cmp_constant)) if constant]
    return f"{what} ({' and '.join(sides)})" if sides else ""


def constant_reason(ref: np.ndarray, cmp: np.ndarray, what: str = "constant map") -> str:
    """'' if neither map is constant, else e.g. 'constant map (reference)'."""
    return reason(is_constant(ref), is_constant(cmp), what)
