"""Progress bars that suit their stream: tqdm's live bar on a terminal, a plain line every
`LOG_SECONDS` when the output goes to a file or a pipe (a CI log, `make reproduce > log`), where
tqdm's carriage-return frames would pile up as one unreadable line of hundreds of updates."""
from __future__ import annotations

import sys

LOG_SECONDS = 30.0  # at most one line this often when the stream is not a terminal
LINES_ONLY = False  # set by an entry point whose bars share a terminal with other processes' bars


class _Lines:
    """A text stream that turns tqdm's frames ('\\r' + bar + padding) into whole lines: one line per
    frame that shows something new, nothing for the clearing and newline writes around them."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def write(self, text: str) -> int:
        for frame in text.replace("\n", "\r").split("\r"):
            frame = frame.rstrip()
            if frame and frame != self.last:
                self.stream.write(frame + "\n")
                self.last = frame
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(**options):
    """`tqdm(**options)`, which on a stream that is not a terminal (`file`, default stderr), or with
    LINES_ONLY, redraws at most every LOG_SECONDS, each time as a line of its own."""
    from tqdm import tqdm

    stream = options.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if LINES_ONLY or not (isatty and isatty()):
        options["file"] = _Lines(stream)
        options["mininterval"] = max(options.get("mininterval", 0.1), LOG_SECONDS)
        options["maxinterval"] = options["mininterval"]  # tqdm's monitor redraws a slow bar after this
    return tqdm(**options)
