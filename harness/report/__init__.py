"""The report (`build_report`; `harness-report <folder>`): tables, figures and a page from result files alone,
no TensorFlow."""
from harness.report.build import build_report

__all__ = ["build_report"]
