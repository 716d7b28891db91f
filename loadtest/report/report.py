"""build_report: one run directory in, summary.json + report.html + charts out, and the exit code."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from loadtest.report import serialize
from loadtest.report.aggregate import summarise
from loadtest.report.charts import render_run_charts
from loadtest.report.charts_compare import compare_charts
from loadtest.report.charts_conditions import condition_charts
from loadtest.report.compare import CompareError, compare_runs
from loadtest.report.conditions import summarise_conditions
from loadtest.report.frame import LoadedSamples, normalise
from loadtest.report.groups import check_by
from loadtest.report.html import render_report
from loadtest.report.html_compare import render_compare
from loadtest.report.io import RUN_JSON_FILE, load_samples, read_json, read_run_failed, write_csv, write_json
from loadtest.report.io import write_text as write_text_file
from loadtest.report.junit import write_junit
from loadtest.report.meta import resolve_metadata
from loadtest.report.model import (
    DEFAULT_TARGET_MS,
    DEFAULT_TOLERANCE_MS,
    DEFAULT_TOLERANCE_PCT,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_RUN_FAILED,
    EXIT_THRESHOLD_FAILED,
    Comparison,
    ReportResult,
    RunMetadata,
    RunSummary,
)
from loadtest.report.proxy import proxy_summary
from loadtest.report.scenarios import add_sections
from loadtest.report.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from loadtest.report.thresholds import default_thresholds, evaluate, parse_thresholds
from loadtest.report.timeseries import build_timeseries

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
HTML_FILE = "report.html"
COMPARE_FILE = "compare.json"
COMPARE_HTML_FILE = "compare.html"
CHARTS_DIR = "charts"


def _load(run_dir: Path) -> tuple[LoadedSamples, str | None]:
    """Samples, plus a failure reason when unreadable (a corrupt parquet is a failed run, not a crash)."""
    try:
        return load_samples(run_dir), None
    except (OSError, ValueError, pa.ArrowException) as exc:
        return LoadedSamples(normalise(pd.DataFrame()), "none"), f"unreadable samples: {exc}"


def decide(summary: RunSummary) -> tuple[str, int]:
    """Verdict and exit code. Precedence: run failed (3) > regression (2) > threshold failed (1) >
    inconclusive comparison (0; 2 when strict) > pass (0). The budget and regression verdicts stay
    apart in the summary (budget_verdict, regression_verdict)."""
    if summary.run_failed or summary.counts.sent == 0:
        return "run-failed", EXIT_RUN_FAILED
    compared = summary.regression_verdict
    if compared == "regression":
        return "regression", EXIT_REGRESSION
    if compared == "inconclusive" and summary.strict:
        return "inconclusive", EXIT_REGRESSION
    if summary.budget_verdict == "fail":
        return "fail", EXIT_THRESHOLD_FAILED
    if compared == "inconclusive":
        return "inconclusive", EXIT_OK
    return "pass", EXIT_OK


def build_report(
    run_dir: Path,
    thresholds: list[str] | None = None,
    target_ms: float = DEFAULT_TARGET_MS,
    partial: bool = False,
    metadata: RunMetadata | None = None,
    *,
    out_dir: Path | None = None,
    baseline_dir: Path | None = None,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    csv: bool = False,
    charts: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    strict: bool = False,
    junit: Path | None = None,
    by: Sequence[str] = (),
) -> ReportResult:
    """Aggregate run_dir's samples, judge them, and write summary.json, report.html and charts/.

    thresholds: budget expressions (None = the production budget, with the e2e line at target_ms).
    partial: the caller knows the run was cut short (a journal with a torn last line is detected anyway).
    baseline_dir: a previous run to compare against; a regression makes the exit code 2.
    charts: False skips the charts (seconds of matplotlib); the HTML then has tables only.
    strict: an inconclusive comparison (too few samples to rule a regression out) exits 2, not 0.
    junit: also write JUnit XML there (a case per threshold and per compared stage).
    by: columns to split the figures by (`--by`); the scenario sections need no asking.
    Raises ThresholdError on a bad expression before any work is done, ByColumnError on a --by column the
    samples cannot be grouped by before anything is written.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir
    parsed = parse_thresholds(default_thresholds(target_ms) if thresholds is None else thresholds)
    marker = read_run_failed(run_dir)
    loaded, unreadable = _load(run_dir)
    if by and not loaded.frame.empty:  # no rows: the run failed, which is what the report must say
        check_by(loaded.frame, by)
    failure = marker or unreadable
    agg = summarise(loaded, target_ms, RunMetadata(), failure, partial, resamples, seed)
    summary = agg.summary
    add_sections(summary, loaded.frame, agg.status, tuple(by), resamples, seed)
    summary.strict = strict
    if failure is None and summary.counts.sent == 0:
        summary.run_failed = "no utterances were sent (no samples.parquet and no journal rows)"
    summary.metadata = resolve_metadata(run_dir, metadata, loaded.frame, agg.callers)
    summary.conditions = summarise_conditions(loaded.frame, read_json(run_dir / RUN_JSON_FILE), target_ms)
    summary.thresholds = evaluate(summary, parsed)
    summary.proxy = proxy_summary(run_dir, loaded.frame, summary.counts.sent)  # Traefik's view, if recorded

    charts_dir = out / CHARTS_DIR
    compare_files = []
    if baseline_dir is not None and summary.counts.sent > 0 and not summary.run_failed:
        try:
            cmp, base_values, _ = compare_runs(
                Path(baseline_dir), run_dir, tolerance_pct, tolerance_ms, target_ms, agg.values, summary.rates
            )
        except CompareError as exc:
            summary.warnings.append(f"baseline not usable, no comparison made: {exc}")
        else:
            summary.comparison = cmp
            if charts:
                compare_files = compare_charts(charts_dir, cmp, base_values, agg.values, target_ms)
            write_json(out / COMPARE_FILE, serialize.comparison(cmp))
    summary.verdict, summary.exit_code = decide(summary)

    files = []
    if charts and summary.counts.sent:  # nothing was sent: every chart would be an empty frame
        ts = build_timeseries(loaded.frame, agg.status, agg.callers, seed)
        files = render_run_charts(charts_dir, summary, ts, agg.values)
        files += condition_charts(charts_dir, summary.conditions, loaded.frame, target_ms) + compare_files
    html_path = out / HTML_FILE
    write_text_file(html_path, render_report(summary, files))
    summary_path = out / SUMMARY_FILE
    write_json(summary_path, serialize.summary(summary, str(run_dir)))
    csv_path = write_csv(run_dir, out) if csv and summary.counts.sent else None
    if junit is not None:
        write_junit(Path(junit), summary=summary, name=str(run_dir))
    log.info("report %s: %s (exit %d)", run_dir, summary.verdict, summary.exit_code)
    return ReportResult(summary, summary.exit_code, summary_path, html_path, tuple(files), csv_path)


@dataclass(frozen=True)
class ComparisonResult:
    comparison: Comparison | None
    exit_code: int
    error: str | None
    json_path: Path | None
    html_path: Path | None


def build_comparison(
    baseline_dir: Path,
    candidate_dir: Path,
    out_dir: Path | None = None,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    target_ms: float = DEFAULT_TARGET_MS,
    charts: bool = True,
    strict: bool = False,
    junit: Path | None = None,
) -> ComparisonResult:
    """`compare`: compare.json + compare.html + charts/compare_cdf.* in out_dir (default: the candidate).

    Exit code 2 on a regression (or, when strict, an inconclusive comparison), 3 when either side has no
    usable samples, else 0 (an inconclusive comparison included: its verdict says so).
    """
    out = Path(out_dir) if out_dir else Path(candidate_dir)
    try:
        cmp, base_values, cand_values = compare_runs(
            Path(baseline_dir), Path(candidate_dir), tolerance_pct, tolerance_ms, target_ms
        )
    except CompareError as exc:
        if junit is not None:
            write_junit(Path(junit), error=str(exc), name=f"{baseline_dir} vs {candidate_dir}")
        return ComparisonResult(None, EXIT_RUN_FAILED, str(exc), None, None)
    failing = ("regression", "inconclusive") if strict else ("regression",)
    code = EXIT_REGRESSION if cmp.verdict in failing else EXIT_OK
    if junit is not None:
        write_junit(Path(junit), comparison=cmp, name=f"{baseline_dir} vs {candidate_dir}")
    files = compare_charts(out / CHARTS_DIR, cmp, base_values, cand_values, target_ms) if charts else []
    json_path = out / COMPARE_FILE
    write_json(json_path, serialize.comparison(cmp))
    html_path = out / COMPARE_HTML_FILE
    write_text_file(html_path, render_compare(cmp, files, code))
    return ComparisonResult(cmp, code, None, json_path, html_path)
