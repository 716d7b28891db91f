"""The run command's hook: `report_run(run_dir, cfg)` at the end of every `loadtest run`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from loadtest.redaction import redact_url
from loadtest.report.console import section_lines, stage_lines
from loadtest.report.model import DEFAULT_TARGET_MS, RunMetadata, RunSummary
from loadtest.report.report import build_report


def print_stage_table(summary: RunSummary) -> None:
    """The per-stage table every run prints (count and exact percentiles in milliseconds), then the
    per-group and per-scenario sections when the run has them."""
    u = summary.counts
    print(
        f"utterances: sent {u.sent}  ok {u.ok}  timeout {u.timeout}  error {u.error}   "
        f"e2e under {summary.target_ms:.0f} ms: {summary.rates.e2e_under_target:.1%}",
        file=sys.stderr,
    )
    for line in (*stage_lines(summary.stages), *section_lines(summary)):
        print(line, file=sys.stderr)


def report_run(run_dir: Path, cfg: Any = None, partial: bool = False, junit: Path | None = None) -> int:
    """Report a finished or cut-short run against its config's thresholds; print the verdict; return the code.

    cfg is a loadtest.config.RunConfig (duck-typed: .thresholds, .target.url/.insecure, .scenario.callers).
    """
    thresholds = list(getattr(cfg, "thresholds", ()) or ()) or None  # empty = the production budget
    target = getattr(cfg, "target", None)
    scenario = getattr(cfg, "scenario", None)
    meta = RunMetadata(
        target=redact_url(getattr(target, "url", None) or "") or None,  # userinfo and query values masked
        insecure_tls=getattr(target, "insecure", None),
        callers=getattr(scenario, "callers", None),
    )
    result = build_report(Path(run_dir), thresholds, DEFAULT_TARGET_MS, partial=partial, metadata=meta,
                          junit=junit)
    s = result.summary
    print_stage_table(s)
    tag = " [PARTIAL]" if s.partial else ""
    print(f"report: {s.verdict}{tag} (exit {result.exit_code}) -> {result.html_path}", file=sys.stderr)
    for v in s.thresholds:
        if v.verdict != "pass":
            print(f"  {v.verdict}: {v.threshold.expression} (observed {v.observed:.4g})", file=sys.stderr)
    return result.exit_code
