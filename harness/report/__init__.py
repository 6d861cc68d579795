"""The report: tables, figures and the report page, built from result files only (no TensorFlow).

`build_report(folder)` reads every experiment under `folder` and writes `summary.csv`,
`figures/*.png`, `report.md` and `report.html`; `harness-report <folder>` is its command line.
"""
from harness.report.build import build_report

__all__ = ["build_report"]
