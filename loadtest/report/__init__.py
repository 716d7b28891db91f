"""Reports: aggregate raw samples, judge budgets, chart, compare with a baseline, keep a nightly history.

Entry points for the rest of the tester:
  build_report(run_dir, thresholds=None, target_ms=1500, partial=False, metadata=None) -> ReportResult
  add_report_commands(subparsers)  (in loadtest.report.commands; imports nothing heavy)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loadtest.report.model import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_RUN_FAILED,
    EXIT_THRESHOLD_FAILED,
    ReportResult,
    RunMetadata,
)

if TYPE_CHECKING:
    from loadtest.report.report import build_report as build_report

__all__ = [
    "EXIT_OK",
    "EXIT_REGRESSION",
    "EXIT_RUN_FAILED",
    "EXIT_THRESHOLD_FAILED",
    "ReportResult",
    "RunMetadata",
    "build_report",
]


def __getattr__(name: str) -> Any:
    # Lazy: `loadtest --help` must not pay for pandas + matplotlib imports.
    if name == "build_report":
        from loadtest.report.report import build_report

        return build_report
    raise AttributeError(name)
