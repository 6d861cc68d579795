"""Progress bars: tqdm's live bar on a terminal, a plain line every `LOG_SECONDS` on a file or a pipe
(where tqdm's carriage-return frames would pile up as one unreadable line)."""
from __future__ import annotations

import sys

LOG_SECONDS = 30.0  # at most one line this often when the stream is not a terminal
LINES_ONLY = False  # set by an entry point whose bars share a terminal with other processes' bars


class _Lines:
    """A text stream that turns tqdm's frames into whole lines, one per frame that shows something new."""

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
    """`tqdm(**options)`; off a terminal (`file`, default stderr) or with LINES_ONLY, a line every LOG_SECONDS."""
    from tqdm import tqdm

    stream = options.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if LINES_ONLY or not (isatty and isatty()):
        options["file"] = _Lines(stream)
        options["mininterval"] = max(options.get("mininterval", 0.1), LOG_SECONDS)
        options["maxinterval"] = options["mininterval"]  # tqdm's monitor redraws a slow bar after this
    return tqdm(**options)
