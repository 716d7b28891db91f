"""Nightly regression: run into history/<timestamp>/, report, compare with a baseline, keep an index.

history/
  index.json          {"schema_version": 1, "runs": [HistoryEntry, ...]}  (append-only, oldest first)
  pin.json            {"id": RUN_ID, "pinned_at": ...}: the pinned baseline (`loadtest nightly --pin`)
  index.html, trend.png, trend.svg
  20250101T020000Z/   one run directory each (samples, summary.json, report.html, compare.json, charts/)

The baseline does not depend on the budget verdict (a system over its budget still gets regression
detection): the one given for the night (--baseline), else the pinned one, else the newest night that
completed with at least MIN_BASELINE_SAMPLES e2e samples and was not itself a regression (accepting a
slower system as the new normal is a decision: pin it).
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
PIN_FILE = "pin.json"
MIN_BASELINE_SAMPLES = 10  # e2e samples; the permutation test can flag a p95 shift from about here on
RunFn = Callable[[Path], int]


class NightlyError(ValueError):
    """A baseline or pin that does not name a run: a usage error, found before anything runs."""


@dataclass(frozen=True)
class Baseline:
    dir: Path
    id: str
    rule: str  # "given" (--baseline) | "pinned" | "last-completed"


@dataclass(frozen=True)
class NightlyResult:
    run_dir: Path
    exit_code: int
    run_exit_code: int
    baseline_dir: Path | None
    report: ReportResult
    entry: HistoryEntry
    baseline: Baseline | None = None
    notes: tuple[str, ...] = ()  # why there is no baseline; a night too small to be one


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


def last_completed(history_dir: Path, entries: list[HistoryEntry]) -> HistoryEntry | None:
    """The newest night that completed with enough e2e samples, was no regression, and still exists."""
    for entry in reversed(entries):
        if (
            entry.completed
            and entry.samples("e2e") >= MIN_BASELINE_SAMPLES
            and not entry.regressions
            and (history_dir / entry.dir).is_dir()
        ):
            return entry
    return None


def read_pin(history_dir: Path) -> str | None:
    data = read_json(history_dir / PIN_FILE)
    return str(data["id"]) if isinstance(data, dict) and data.get("id") else None


def pin(history_dir: Path, run_id: str | None, now: datetime | None = None) -> Path | None:
    """Pin `run_id` (an index entry) as every later night's baseline; None unpins. Returns its dir."""
    history_dir = Path(history_dir)
    if run_id is None:
        (history_dir / PIN_FILE).unlink(missing_ok=True)
        return None
    entry = next((e for e in load_index(history_dir) if e.id == run_id), None)
    if entry is None or not (history_dir / entry.dir).is_dir():
        raise NightlyError(f"no run {run_id!r} in {history_dir / INDEX_FILE} (or its directory is gone)")
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    write_json(history_dir / PIN_FILE, {"id": entry.id, "pinned_at": when})
    return history_dir / entry.dir


def choose_baseline(
    history_dir: Path, entries: list[HistoryEntry], given: str | Path | None = None
) -> tuple[Baseline | None, str | None]:
    """(baseline, why there is none). `given`: a run id of the index or a run directory."""
    by_id = {e.id: e for e in entries}
    if given is not None:
        entry = by_id.get(str(given))
        path = history_dir / entry.dir if entry else Path(given)
        if not path.is_dir():
            index = history_dir / INDEX_FILE
            raise NightlyError(f"--baseline {given}: neither a run id in {index} nor a directory")
        return Baseline(path, entry.id if entry else path.name, "given"), None
    pinned = read_pin(history_dir)
    if pinned is not None:
        entry = by_id.get(pinned)
        if entry is not None and (history_dir / entry.dir).is_dir():
            return Baseline(history_dir / entry.dir, entry.id, "pinned"), None
        log.warning("pinned baseline %s is gone; using the last completed night", pinned)
    entry = last_completed(history_dir, entries)
    if entry is not None:
        return Baseline(history_dir / entry.dir, entry.id, "last-completed"), None
    if not entries:
        return None, "no baseline: this is the history's first night"
    return None, (
        f"no baseline: no earlier night completed with >= {MIN_BASELINE_SAMPLES} e2e samples "
        "(and no regression); pin one with --pin RUN_ID or give --baseline"
    )


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
    *,
    baseline: str | Path | None = None,
    strict: bool = False,
    junit: Path | None = None,
) -> NightlyResult:
    """One nightly: run, report (with the comparison to the baseline), record in the index, redraw the trend.

    baseline: a run id of the index or a run directory for this night (default: pinned, else the last
    completed night with enough samples). Raises NightlyError for a baseline that names nothing, before
    anything runs. Exit code: 3 if run_fn returned anything but 0/1/2 (or raised), else build_report's:
    3 > 2 (regression; with strict also inconclusive) > 1 (budget) > 0.
    """
    history_dir = Path(history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    with _locked(history_dir):
        chosen, why_none = choose_baseline(history_dir, load_index(history_dir), baseline)
    started = now()
    run_dir = new_run_dir(history_dir, started)
    run_rc = _call_run(run_fn, run_dir)
    report = build_report(
        run_dir,
        thresholds,
        target_ms,
        baseline_dir=chosen.dir if chosen else None,
        tolerance_pct=tolerance_pct,
        tolerance_ms=tolerance_ms,
        charts=charts,
        strict=strict,
        junit=junit,
    )
    exit_code = report.exit_code if run_rc in (0, 1, 2) else EXIT_RUN_FAILED
    s = report.summary
    failed = exit_code != report.exit_code or bool(s.run_failed)
    entry = HistoryEntry(
        id=run_dir.name,
        dir=run_dir.name,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=now().isoformat(timespec="seconds"),
        exit_code=exit_code,
        run_exit_code=run_rc,
        verdict=s.verdict if exit_code == report.exit_code else "run-failed",
        partial=s.partial,
        baseline=chosen.id if chosen else None,
        regressions=s.comparison.regressions if s.comparison else [],
        sent=s.counts.sent,
        error_rate=_finite(s.rates.error_rate),
        timeout_rate=_finite(s.rates.timeout_rate),
        e2e_under_target=_finite(s.rates.e2e_under_target),
        p50={name: _finite(st.p50) for name, st in s.stages.items()},
        p95={name: _finite(st.p95) for name, st in s.stages.items()},
        budget_verdict=None if failed else s.budget_verdict,
        regression_verdict=None if failed else s.regression_verdict,
        inconclusive=s.comparison.inconclusive if s.comparison else [],
        baseline_rule=chosen.rule if chosen else None,
        counts={name: st.count for name, st in s.stages.items()},
        p99={name: _finite(st.p99) for name, st in s.stages.items()},
    )
    notes = [why_none] if why_none and not failed else []
    small = entry.samples("e2e")
    if not failed and small < MIN_BASELINE_SAMPLES:
        notes.append(
            f"this night has {small} e2e samples: it needs >= {MIN_BASELINE_SAMPLES} to serve as a baseline, "
            "and >= 20 per stage (connect: conversations) a side for a comparison that can pass"
        )
    with _locked(history_dir):
        entries = [*load_index(history_dir), entry]
        save_index(history_dir, entries)
        if charts:
            write_history_page(history_dir, entries, target_ms)
    base_dir = chosen.dir if chosen else None
    return NightlyResult(run_dir, exit_code, run_rc, base_dir, report, entry, chosen, tuple(notes))


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
            budget_failed=e.budget_verdict == "fail" or (e.budget_verdict is None and e.verdict == "fail"),
            regression=bool(e.regressions),
            inconclusive=e.regression_verdict == "inconclusive",
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
