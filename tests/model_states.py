"""Model states for the tests that hold a method equal to a reference (PAIR saliency).

Such an equality can hold on one set of weights by luck: a comparison or a greedy choice that a
last-bit difference would flip may simply not come up on the weights this machine trained. So the
tests run on several states of the built-in CNN:
- `trained`: CHEAP_CNN, the 1,200-step snapshot this machine trained;
- `reinit1`, `reinit2`: that snapshot with every block re-initialized from its own initializers,
  drawn with seed 1 or 2 (the runner's Randomizer and Reinit; no training);
- `amd_epyc`: the same snapshot as a 2-core AMD EPYC machine without AVX-512 trained it, shipped in
  shared/fixtures beside the repository (see its README); skipped where shared/ is absent.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import CHEAP_CNN

FIXTURE_CNN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mnist_cnn_authors@1200-amd-epyc"
SEEDS = {"reinit1": 1, "reinit2": 2}
STATES = ("trained", *SEEDS, "amd_epyc")


def states(*names: str, slow: tuple[str, ...] = ()) -> list:
    """pytest params of the states `names` (all by default), those in `slow` marked slow."""
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in slow else []) for n in names or STATES]


@contextmanager
def loaded(name: str, log=lambda _: None):
    """A fresh ModelUnderTest in state `name` (not the `trained` one: tests share that model)."""
    from harness.models import load_model
    from harness.schedules import Randomizer, Reinit, schedule_steps

    if name == "amd_epyc":
        if not (FIXTURE_CNN / "saved_model.pb").is_file():
            pytest.skip(f"no fixture snapshot at {FIXTURE_CNN}")
        yield load_model({"source": str(FIXTURE_CNN)}, log=log)
        return
    model = load_model({"source": CHEAP_CNN}, log=log)
    every_block = schedule_steps("cascading", [b.name for b in model.blocks])[-1]
    with Randomizer(model, Reinit(seed=SEEDS[name])).step(every_block):
        yield model
