"""`harness-report <folder>`: build the report of a results folder (no TensorFlow needed).

The last line printed is `report: <path to report.html>`. A user mistake (missing folder, nothing to
report, unwritable folder) ends with one line on stderr, `harness-report: error: ...`, and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from harness.errors import HarnessError
from harness.report.build import build_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="harness-report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run folder, or a folder of experiments (e.g. results/reproduce)")
    args = parser.parse_args(argv)
    try:
        page = build_report(args.folder)
    except HarnessError as error:
        fail(error)
    except OSError as error:  # e.g. a read-only folder: name the path, no traceback
        fail(f"cannot write the report for {args.folder!r}: {error.strerror or error} ({error.filename})")
    print(f"report: {page}")


def fail(error: BaseException | str) -> None:
    print(f"harness-report: error: {error}", file=sys.stderr)
    sys.exit(2)
