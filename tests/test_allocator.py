"""harness.allocator: freed memory is kept for the next request (no new page faults)."""
import subprocess
import sys

import pytest

from harness import allocator, runner

PROBE = """
import resource, sys
import numpy as np
from harness import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
faults = []
for _ in range(5):  # a unit's worth of arrays (30, 15, 20, 25 MB) held at once, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(n) for n in (3_750_000, 1_875_000, 2_500_000, 3_125_000)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _faults_after_the_first(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_are_reused_without_new_page_faults():
    """Four more rounds of 90 MB of arrays after a first: under glibc's defaults the freed heap is
    trimmed (its top exceeds twice the largest array) and every round faults its pages in again
    (~1,800 faults a round here); with keep_freed_memory the first round's pages are reused."""
    assert _faults_after_the_first("default") > 4 * 500
    assert _faults_after_the_first("keep") < 100


def test_the_command_keeps_freed_memory_and_runner_run_does_not(monkeypatch):
    """The setting is process-wide: the `harness` command (cli.command, each run and sweep job)
    applies it before its run; runner.run, which the Python API calls, never does (docs/api.md)."""
    from harness import cli
    from test_config_checks import composed

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept"))
    monkeypatch.setattr(runner.Plan, "from_config", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        runner.run({})
    assert calls == []
    monkeypatch.setattr(cli, "configure_tensorflow", lambda *_, **__: None)
    monkeypatch.setattr(runner, "run", lambda cfg: calls.append("run") or "folder")
    cli.command(composed("method=gradient"))
    assert calls == ["kept", "run"]
