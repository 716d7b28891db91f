"""Nightly regression: run into history/<timestamp>/, report, compare with the last good run, keep an index.

history/
  index.json          {"schema_version": 1, "runs": [HistoryEntry, ...]}  (append-only, oldest first)
  index.html, trend.png, trend.svg
  20250101T020000Z/   one run directory each (samples, summary.json, report.html, compare.json, charts/)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.report.charts_compare import TrendPoint, trend_chart
from loadtest.report.html_compare import render_history
from loadtest.report.io import RUN_FAILED_FILE, read_json, write_json, write_text
from loadtest.report.model import (
    DEFAULT_TARGET_MS,
    DEFAULT_TOLERANCE_MS,
    DEFAULT_TOLERANCE_PCT,
    EXIT_RUN_FAILED,
    SCHEMA_VERSION,
    HistoryEntry,
    ReportResult,
)
from loadtest.report.report import build_report

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
RunFn = Callable[[Path], int]


@dataclass(frozen=True)
class NightlyResult:
    run_dir: Path
    exit_code: int
    run_exit_code: int
    baseline_dir: Path | None
    report: ReportResult
    entry: HistoryEntry


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def load_index(history_dir: Path) -> list[HistoryEntry]:
    data = read_json(history_dir / INDEX_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        return []
    known = {f.name for f in dataclasses.fields(HistoryEntry)}
    entries = []
    for raw in data["runs"]:
        if isinstance(raw, dict):
            with contextlib.suppress(TypeError):
                entries.append(HistoryEntry(**{k: v for k, v in raw.items() if k in known}))
    return entries


def save_index(history_dir: Path, entries: list[HistoryEntry]) -> None:
    runs: list[dict[str, Any]] = [dataclasses.asdict(e) for e in entries]
    write_json(history_dir / INDEX_FILE, {"schema_version": SCHEMA_VERSION, "runs": runs})


def last_good(history_dir: Path, entries: list[HistoryEntry]) -> HistoryEntry | None:
    """The newest run recorded with exit code 0 whose directory still exists."""
    for entry in reversed(entries):
        if entry.good and (history_dir / entry.dir).is_dir():
            return entry
    return None


@contextlib.contextmanager
def _locked(history_dir: Path) -> Iterator[None]:
    # Two nightlies at once must not lose each other's index entry (read-modify-write of index.json).
    with (history_dir / ".index.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def new_run_dir(history_dir: Path, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = history_dir / stamp, 1
    while candidate.exists():
        n += 1
        candidate = history_dir / f"{stamp}-{n}"
    candidate.mkdir(parents=True)
    return candidate


def _call_run(run_fn: RunFn, run_dir: Path) -> int:
    """run_fn's exit code; an exception becomes a failed run with its marker (never a crashed nightly)."""
    try:
        return int(run_fn(run_dir))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of the run is a result to record
        # SystemExit too: a run that exits (argparse's exit 2) must not end the nightly with "regression".
        log.error("nightly run failed: %s", exc)
        marker = run_dir / RUN_FAILED_FILE
        if not marker.exists():
            detail = "".join(traceback.format_exception_only(exc)).strip()
            write_json(marker, {"error": f"run raised: {detail}"})
        return EXIT_RUN_FAILED


def nightly(
    history_dir: Path,
    run_fn: RunFn,
    thresholds: list[str] | None = None,
    target_ms: float = DEFAULT_TARGET_MS,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    charts: bool = True,
) -> NightlyResult:
    """One nightly: run, report (with comparison to the last good run), record in the index, redraw the trend.

    Exit code: 3 if run_fn returned anything but 0/1/2 (or raised), else build_report's (0/1/2/3).
    """
    history_dir = Path(history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    with _locked(history_dir):
        baseline = last_good(history_dir, load_index(history_dir))
    started = now()
    run_dir = new_run_dir(history_dir, started)
    run_rc = _call_run(run_fn, run_dir)
    baseline_dir = history_dir / baseline.dir if baseline else None
    report = build_report(
        run_dir,
        thresholds,
        target_ms,
        baseline_dir=baseline_dir,
        tolerance_pct=tolerance_pct,
        tolerance_ms=tolerance_ms,
        charts=charts,
    )
    exit_code = report.exit_code if run_rc in (0, 1, 2) else EXIT_RUN_FAILED
    s = report.summary
    entry = HistoryEntry(
        id=run_dir.name,
        dir=run_dir.name,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=now().isoformat(timespec="seconds"),
        exit_code=exit_code,
        run_exit_code=run_rc,
        verdict=s.verdict if exit_code == report.exit_code else "run-failed",
        partial=s.partial,
        baseline=baseline.id if baseline else None,
        regressions=s.comparison.regressions if s.comparison else [],
        sent=s.counts.sent,
        error_rate=_finite(s.rates.error_rate),
        timeout_rate=_finite(s.rates.timeout_rate),
        e2e_under_target=_finite(s.rates.e2e_under_target),
        p50={name: _finite(st.p50) for name, st in s.stages.items()},
        p95={name: _finite(st.p95) for name, st in s.stages.items()},
    )
    with _locked(history_dir):
        entries = [*load_index(history_dir), entry]
        save_index(history_dir, entries)
        if charts:
            write_history_page(history_dir, entries, target_ms)
    return NightlyResult(run_dir, exit_code, run_rc, baseline_dir, report, entry)


def _short_label(run_id: str) -> str:
    """20250101T020000Z -> 01-01 02:00 (the year is noise on a nightly axis)."""
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").strftime("%m-%d %H:%M")
    except ValueError:
        return run_id[:14]


def write_history_page(history_dir: Path, entries: list[HistoryEntry], target_ms: float) -> Path:
    """history/trend.{png,svg} and history/index.html (runs table, trend chart, links to each report)."""
    points = [
        TrendPoint(
            label=_short_label(e.id),
            good=e.good,
            p50={k: v for k, v in e.p50.items() if v is not None},
            p95={k: v for k, v in e.p95.items() if v is not None},
            e2e_under_target=e.e2e_under_target if e.e2e_under_target is not None else math.nan,
        )
        for e in entries
    ]
    chart = trend_chart(history_dir, points, target_ms)
    path = history_dir / "index.html"
    write_text(path, render_history(entries, chart))
    return path
