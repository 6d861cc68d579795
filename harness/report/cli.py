"""`harness-report <folder>`: build the report of a results folder (no TensorFlow needed).

The last line printed is `report: <path to report.html>`. A user mistake (missing folder, nothing to
report, unwritable folder) ends with one line on stderr, `harness-report: error: ...`, and exit 2.
"""
from __future__ import annotations

import argparse

from harness.errors import HarnessError
from harness.report.build import build_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="harness-report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run folder, or a folder of experiments (e.g. results/reproduce)")
    args = parser.parse_args(argv)
    try:
        page = build_report(args.folder)
    except HarnessError as error:
        parser.exit(2, f"harness-report: error: {error}\n")
    except OSError as error:  # e.g. a read-only folder: name the path, no traceback
        parser.exit(2, f"harness-report: error: cannot write the report for {args.folder!r}: "
                       f"{error.strerror or error} ({error.filename})\n")
    print(f"report: {page}")
