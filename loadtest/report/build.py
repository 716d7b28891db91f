"""The run command's hook: `report_run(run_dir, cfg)` at the end of every `loadtest run`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from loadtest.report.model import DEFAULT_TARGET_MS, RunMetadata
from loadtest.report.report import build_report


def report_run(run_dir: Path, cfg: Any = None, partial: bool = False) -> int:
    """Report a finished or cut-short run against its config's thresholds; print the verdict; return the code.

    cfg is a loadtest.config.RunConfig (duck-typed: .thresholds, .target.url/.insecure, .scenario.callers).
    """
    thresholds = list(getattr(cfg, "thresholds", ()) or ()) or None  # empty = the production budget
    target = getattr(cfg, "target", None)
    scenario = getattr(cfg, "scenario", None)
    meta = RunMetadata(
        target=getattr(target, "url", None) or None,
        insecure_tls=getattr(target, "insecure", None),
        callers=getattr(scenario, "callers", None),
    )
    result = build_report(Path(run_dir), thresholds, DEFAULT_TARGET_MS, partial=partial, metadata=meta)
    s = result.summary
    tag = " [PARTIAL]" if s.partial else ""
    print(f"report: {s.verdict}{tag} (exit {result.exit_code}) -> {result.html_path}", file=sys.stderr)
    for v in s.thresholds:
        if v.verdict != "pass":
            print(f"  {v.verdict}: {v.threshold.expression} (observed {v.observed:.4g})", file=sys.stderr)
    return result.exit_code
