"""build_report end to end on synthetic runs: files, summary.json schema, exit codes, partial journals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from loadtest.report.model import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_RUN_FAILED,
    EXIT_THRESHOLD_FAILED,
    RunMetadata,
)
from loadtest.report.report import build_comparison, build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_journal, write_run
from loadtest.report.thresholds import ThresholdError
from tests.charts_drawn import captured_figures, check_run_charts

pytestmark = pytest.mark.unit

ALL_CHARTS = {
    "e2e_cdf",
    "stage_distributions",
    "stage_breakdown",
    "latency_over_time",
    "latency_vs_callers",
    "errors_over_time",
    "rtc_stats",
}
PASSING = ["e2e.p95 < 5000", "error_rate < 0.05"]


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("step-run")
    frame = make_samples(SyntheticSpec(rows=6000, steps=(10, 20, 40, 80), workers=2))
    write_run(run_dir, frame)
    (run_dir / "run.json").write_text(
        json.dumps({"run_id": "r-42", "target": "https://x", "insecure_tls": True})
    )
    with captured_figures() as figures:
        result = build_report(run_dir, metadata=RunMetadata(scenario="steps"), csv=True)
    return run_dir, frame, result, figures


def test_every_chart_is_produced_and_draws_the_data(step_run) -> None:
    run_dir, frame, result, figures = step_run
    assert {c.name for c in result.charts} == ALL_CHARTS == set(figures)
    for name in ALL_CHARTS:
        for ext in ("png", "svg"):
            path = run_dir / "charts" / f"{name}.{ext}"
            assert path.stat().st_size > 5000, path
        assert (run_dir / "charts" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What is drawn: CDF, box statistics, stacked bars, per-bin and per-level lines equal the samples'.
    check_run_charts(figures, frame, result.summary)


def test_summary_json_contract(step_run) -> None:
    run_dir, frame, result, _ = step_run
    data = json.loads((run_dir / "summary.json").read_text())
    assert data["schema_version"] == 1
    assert data["utterances"] == {
        "sent": len(frame),
        "ok": int((frame["status"] == "ok").sum()),
        "timeout": int((frame["status"] == "timeout").sum()),
        "error": int((frame["status"] == "error").sum()),
    }
    assert data["target_ms"] == 1500
    ok = frame["status"] == "ok"
    assert data["e2e_under_target"] == pytest.approx(((frame["e2e_ms"] < 1500) & ok).sum() / len(frame))
    for stage in ("connect", "stt", "translation", "tts", "e2e"):
        st = data["stages"][stage]
        assert {"count", "mean", "p50", "p90", "p95", "p99", "max", "p50_ci", "p95_ci"} <= set(st)
    e2e = frame["e2e_ms"].dropna().to_numpy()
    assert data["stages"]["e2e"]["p99"] == np.percentile(e2e, 99, method="linear")
    assert [t["expression"] for t in data["thresholds"]] == [
        "stt.p95 < 500",
        "translation.p95 < 150",
        "tts.p95 < 800",
        "e2e.p95 < 1500",
    ]
    assert data["exit_code"] == result.exit_code == EXIT_THRESHOLD_FAILED  # the knee breaks the budget
    assert data["partial"] is False and data["run_failed"] is None
    assert [lv["callers"] for lv in data["levels"]] == [10, 20, 40, 80]
    meta = data["metadata"]
    assert (meta["run_id"], meta["target"], meta["insecure_tls"], meta["scenario"]) == (
        "r-42",
        "https://x",
        True,
        "steps",
    )
    assert meta["python_version"] and meta["workers"] == 2


def test_html_is_self_contained(step_run) -> None:
    run_dir, _, result, _ = step_run
    html = result.html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert all(r.startswith("data:") for r in refs), refs
    assert html.count("<svg") >= len(ALL_CHARTS)
    assert "FAIL" in html[:3000] and "insecure_tls" in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # inlined SVGs must not share ids


def test_csv_on_request(step_run) -> None:
    run_dir, frame, result, _ = step_run
    assert result.csv_path == run_dir / "samples.csv"
    header = result.csv_path.read_text().splitlines()[0].split(",")
    assert "transcript" in header and len(result.csv_path.read_text().splitlines()) == len(frame) + 1


def test_pass_and_regression_exit_codes(tmp_path: Path) -> None:
    base, cand = tmp_path / "base", tmp_path / "cand"
    write_run(base, make_samples(SyntheticSpec(rows=3000, steps=(10,), seed=1)))
    write_run(cand, make_samples(SyntheticSpec(rows=3000, steps=(10,), seed=2, tts_median=480)))
    assert build_report(base, PASSING, charts=False).exit_code == EXIT_OK
    res = build_report(cand, PASSING, baseline_dir=base)
    assert res.exit_code == EXIT_REGRESSION and res.summary.verdict == "regression"
    assert "tts" in res.summary.comparison.regressions
    data = json.loads((cand / "summary.json").read_text())
    assert data["comparison"]["regression"] is True
    assert (cand / "compare.json").is_file() and (cand / "charts" / "compare_cdf.svg").is_file()
    assert "Against the baseline" in res.html_path.read_text()
    # A regression outranks a failed threshold (a system over its budget still gets regression
    # detection); the two verdicts are reported apart.
    both = build_report(cand, ["e2e.p95 < 10"], baseline_dir=base, charts=False)
    assert both.exit_code == EXIT_REGRESSION and both.summary.verdict == "regression"
    assert both.summary.budget_verdict == "fail" and both.summary.regression_verdict == "regression"
    data = json.loads((cand / "summary.json").read_text())
    assert data["budget_verdict"] == "fail" and data["regression_verdict"] == "regression"
    assert build_report(cand, ["e2e.p95 < 10"], charts=False).exit_code == EXIT_THRESHOLD_FAILED
    # The `compare` verb on its own.
    cmp = build_comparison(base, cand, tmp_path / "cmp-out", charts=False)
    assert cmp.exit_code == EXIT_REGRESSION and cmp.html_path and cmp.html_path.is_file()
    assert json.loads(cmp.json_path.read_text())["regressions"] == cmp.comparison.regressions
    assert build_comparison(base, tmp_path / "nowhere").exit_code == EXIT_RUN_FAILED


def test_run_failed_marker_and_empty_run(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    write_run(failed, make_samples(SyntheticSpec(rows=200, steps=(10,))))
    (failed / "run-failed.json").write_text(json.dumps({"error": "target unreachable: connection refused"}))
    res = build_report(failed, PASSING, charts=False)
    assert res.exit_code == EXIT_RUN_FAILED and res.summary.verdict == "run-failed"
    assert json.loads(res.summary_path.read_text())["run_failed"] == {
        "error": "target unreachable: connection refused"
    }
    assert "connection refused" in res.html_path.read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    res = build_report(empty)  # charts on: skipped anyway, nothing was sent
    assert res.exit_code == EXIT_RUN_FAILED and res.summary.counts.sent == 0
    assert res.html_path.is_file() and res.charts == ()  # nothing to draw


def test_partial_journal_with_truncated_last_line(tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=900, steps=(10,)))
    write_journal(tmp_path, frame, shards=3, truncate_last=True)
    last = (tmp_path / "journal" / "shard-2.jsonl").read_bytes()
    assert not last.endswith(b"\n")  # the fixture really is torn mid-line
    res = build_report(tmp_path, PASSING, charts=False)
    assert res.summary.partial and res.summary.source == "journal"
    assert res.summary.counts.sent == 899
    data = json.loads(res.summary_path.read_text())
    assert data["partial"] is True and any("unreadable line" in w for w in data["warnings"])
    assert "PARTIAL" in res.html_path.read_text()[:5000]


def test_corrupt_line_mid_shard_and_a_final_line_without_newline(tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=300, steps=(10,)))
    write_journal(tmp_path, frame, shards=2)
    first = tmp_path / "journal" / "shard-0.jsonl"
    lines = first.read_text().splitlines(keepends=True)
    lines[10] = '{"run_id": "synthetic", "utter\n'  # garbage in the middle: the tolerant reader takes over
    first.write_text("".join(lines))
    second = tmp_path / "journal" / "shard-1.jsonl"
    second.write_text(second.read_text().rstrip("\n"))  # whole last record, only its newline missing
    res = build_report(tmp_path, PASSING, charts=False)
    assert res.summary.partial and res.summary.counts.sent == 299
    assert any("shard-0.jsonl: 1 unreadable" in w for w in res.summary.warnings)


def test_whole_journal_is_not_partial_and_deduplicated(tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=300, steps=(10,)))
    write_journal(tmp_path, frame, shards=2)
    dup = (tmp_path / "journal" / "shard-0.jsonl").read_text().splitlines()[0]
    with (tmp_path / "journal" / "shard-1.jsonl").open("a") as fh:
        fh.write(dup + "\n")
    res = build_report(tmp_path, PASSING, partial=False, charts=False)
    assert not res.summary.partial and res.summary.counts.sent == 300


def test_caller_can_mark_partial_and_out_dir(tmp_path: Path) -> None:
    write_run(tmp_path / "run", make_samples(SyntheticSpec(rows=300, steps=(10,))))
    res = build_report(tmp_path / "run", PASSING, partial=True, out_dir=tmp_path / "out", charts=False)
    assert res.summary.partial and res.html_path == tmp_path / "out" / "report.html"
    assert not (tmp_path / "run" / "summary.json").exists()


def test_bad_threshold_fails_before_work(tmp_path: Path) -> None:
    with pytest.raises(ThresholdError, match="e2e.p95 <<< 1"):
        build_report(tmp_path, ["e2e.p95 <<< 1"])
    assert not (tmp_path / "summary.json").exists()


def test_all_timeouts_is_not_a_pass(tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=200, steps=(10,), rtc=False))
    frame["status"] = "timeout"
    frame[["stt_ms", "translation_ms", "tts_ms", "e2e_ms"]] = np.nan
    write_run(tmp_path, frame)
    res = build_report(tmp_path, charts=False)
    assert res.exit_code == EXIT_THRESHOLD_FAILED
    assert {v.verdict for v in res.verdicts} == {"no-data"}
    assert res.summary.rates.e2e_under_target == 0.0
