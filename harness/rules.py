"""What a config value may be: the rule primitives each piece declares its settings with, and `check`."""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class Rule:
    """What one config value may be: `test(value)`, and `valid` in words ("an integer >= 1"); `rule | other`
    accepts either. `choices`: the allowed values, whose error reads "unknown <key> 'x'; valid: a, b"."""
    test: Callable[[Any], bool]
    valid: str
    choices: tuple[Any, ...] | None = None

    def __or__(self, other: "Rule") -> "Rule":
        choices = (self.choices + other.choices) if self.choices is not None and other.choices is not None else None
        return Rule(lambda v: self.test(v) or other.test(v), f"{self.valid} or {other.valid}", choices)


def _bounded(low, high, above) -> tuple[Callable[[Any], bool], str]:
    """The range test and its words: low <= v, above < v, v <= high (None: no bound)."""
    bounds = [(low, ">=", lambda v: v >= low), (above, ">", lambda v: v > above), (high, "<=", lambda v: v <= high)]
    bounds = [(bound, sign, test) for bound, sign, test in bounds if bound is not None]
    return (lambda v: all(test(v) for _, _, test in bounds)), " and ".join(f"{s} {b}" for b, s, _ in bounds)


def whole(low: int | None = None, odd: bool = False) -> Rule:
    """An integer (a NumPy one too; not a bool, not 2.0) >= low; odd when asked."""
    in_range, words = _bounded(low, None, None)
    kind = "an odd integer" if odd else "an integer"
    return Rule(lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and in_range(v)
                and (not odd or v % 2 == 1),
                f"{kind} {words}".strip())


def number(low: float | None = None, high: float | None = None, above: float | None = None) -> Rule:
    """A finite number (an integer counts: YAML writes 1.0 as 1) in the given range."""
    in_range, words = _bounded(low, high, above)
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


def check(values: Mapping[str, Any], rules: Mapping[str, Rule], *, prefix: str = "", where: str = "") -> None:
    """Each value `rules` names (a dotted key reaches into a nested node) against its rule: a HarnessError
    naming the key (`prefix` + key, after `where`) and what is valid."""
    for key, rule in rules.items():
        present, value = lookup(values, key)
        if present and not rule.test(value):
            if rule.choices is not None:
                raise HarnessError(f"{where}unknown {prefix}{key} {value!r}; valid: "
                                   f"{', '.join(map(str, rule.choices))}")
            raise HarnessError(f"{where}{prefix}{key} must be {rule.valid}, got {value!r}")


def lookup(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    for part in key.split("."):
        if not isinstance(values, Mapping) or part not in values:
            return False, None
        values = values[part]
    return True, values
