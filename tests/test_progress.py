"""harness.progress: a live bar on a terminal, a few whole lines in a log."""
import io
import time

from harness import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, updates=40, pause=0.01):
    with progress.progress_bar(total=updates, desc="maps", file=stream, mininterval=0.0, miniters=1) as bar:
        for _ in range(updates):
            time.sleep(pause)
            bar.update(1)
    return stream.getvalue()


def test_a_log_gets_a_few_whole_lines(monkeypatch):
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.15)  # 40 updates over ~0.5 s: ~4 redraws
    began = time.monotonic()
    text = _run(io.StringIO())
    most = (time.monotonic() - began) / progress.LOG_SECONDS + 2  # the first and last frames besides
    lines = text.splitlines()
    assert "\r" not in text and 2 <= len(lines) <= most, lines
    assert lines[0].startswith("maps:   0%") and lines[-1].startswith("maps: 100%|")
    assert all(line.strip() for line in lines)  # no blank lines from tqdm's closing newline


def test_a_terminal_keeps_tqdms_live_bar():
    text = _run(Terminal())
    assert text.count("\r") > 20  # redrawn in place, every update (mininterval 0)
