"""`loadtest run` against the real reference stack: every report file is written, readable, and opens cleanly.

And `loadtest nightly` twice into one history: the second night is compared with the first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loadtest.report.report import build_report
from tests.charts_drawn import captured_figures, check_run_charts
from tests.integration.stackrun import REPO
from tests.integration.test_report_html import chromium, console_lines, needs_chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE_CHARTS = ("e2e_cdf", "stage_distributions", "stage_breakdown", "latency_over_time", "errors_over_time")
RTC_METRICS = ("jitter_ms", "packets_lost", "rtt_ms")
STAGES = ("connect", "stt", "translation", "tts", "e2e")


def loadtest(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_config(tmp_path: Path, rules: list[str] | None = None) -> Path:
    """A run TOML whose only job is a private stack state dir (others may run stacks from the repo)."""
    path = tmp_path / "run.toml"
    text = f'[stack]\nstate_dir = "{tmp_path / "stack"}"\n'
    if rules:
        text += "[thresholds]\nrules = [" + ", ".join(json.dumps(r) for r in rules) + "]\n"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("real")
    out = root / "run"
    proc = loadtest(
        "run",
        "--config",
        str(run_config(root)),
        "--callers",
        "2",
        "--duration",
        "20",
        "--port-offset",
        "510",
        "--out",
        str(out),
    )
    return out, proc


def test_run_reports_with_a_verdict(real_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = real_run
    # 0 or 1: the run itself worked; whether the production budget held is the report's verdict.
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "run-failed.json").exists()
    assert f"exit {proc.returncode}" in proc.stderr  # the printed verdict matches the exit code


def test_summary_json_schema(real_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = real_run
    s = json.loads((out / "summary.json").read_text())
    u = s["utterances"]
    assert u["sent"] >= 4 and u["sent"] == u["ok"] + u["timeout"] + u["error"]  # 2 callers x 3 sends
    assert s["target_ms"] == 1500
    assert 0.0 <= s["e2e_under_target"] <= 1.0
    assert s["e2e_under_target"] == pytest.approx(s["e2e_under_target_count"] / u["sent"])
    assert set(STAGES) <= set(s["stages"])
    for name in STAGES:
        st = s["stages"][name]
        assert {"count", "p50", "p90", "p95", "p99", "max"} <= set(st), name
        if st["count"]:
            assert st["p50"] <= st["p90"] <= st["p95"] <= st["p99"] <= st["max"], name
    assert s["stages"]["e2e"]["count"] == u["ok"] and s["stages"]["connect"]["count"] == 2
    assert s["exit_code"] in (0, 1) and s["metadata"]["callers"] == 2


def test_every_chart_is_written(real_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = real_run
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    expected = list(BASE_CHARTS)
    if any(m in metrics for m in RTC_METRICS):
        expected.append("rtc_stats")  # drawn whenever the clients reported RTC stats
    for name in expected:
        png, svg = out / "charts" / f"{name}.png", out / "charts" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 5000 and svg.stat().st_size > 5000, name
        assert "<svg" in svg.read_text()
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= len(expected)  # charts inlined: the page stands alone


def test_charts_draw_the_runs_samples(
    real_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """The run's charts, redrawn here from its samples (byte-identical SVGs, so the same figures), hold
    the real utterances: CDF steps, box statistics, stacked stage medians, points over time."""
    out, _ = real_run
    frame = pd.read_parquet(out / "samples.parquet")
    with captured_figures() as figures:
        again = build_report(out, out_dir=tmp_path / "again")
    assert again.summary.counts.sent == len(frame) >= 4
    assert {c.name for c in again.charts} == set(figures) >= set(BASE_CHARTS)
    for name in figures:
        written = (out / "charts" / f"{name}.svg").read_text()
        assert (tmp_path / "again" / "charts" / f"{name}.svg").read_text() == written, name
    check_run_charts(figures, frame, again.summary)


@needs_chromium
def test_report_opens_without_console_errors(
    real_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out, _ = real_run
    proc = chromium(tmp_path / "profile", "--dump-dom", (out / "report.html").as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    assert "<svg" in proc.stdout and "</html>" in proc.stdout


def test_two_nightlies_into_one_history(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    config = run_config(tmp_path, rules=["e2e.p95 < 5000", "error_rate < 0.5"])  # a budget a short run meets
    run = ["--callers", "1", "--duration", "15", "--port-offset", "520"]
    first = loadtest("nightly", "--history", str(hist), "--config", str(config), *run)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    second = loadtest("nightly", "--history", str(hist), "--config", str(config), "--", *run)  # `--` form

    index = json.loads((hist / "index.json").read_text())["runs"]
    assert len(index) == 2
    assert index[0]["exit_code"] == 0 and index[0]["baseline"] is None
    # A 1-caller, 15 s night (2 utterances) is too small to be anyone's baseline (docs/reports.md,
    # "Nightly"): the second night is not compared, and both nights say how many samples they need.
    assert second.returncode == 0, second.stderr[-3000:]
    assert index[1]["baseline"] is None and index[1]["sent"] >= 2 and index[1]["regression_verdict"] is None
    assert index[1]["budget_verdict"] == "pass" and index[1]["exit_code"] == 0
    assert "no baseline" in second.stdout and "needs >= 10" in second.stdout
    assert second.stdout.count("verdict:") == 1  # printed once (the run does not print its own)
    assert not (hist / index[1]["dir"] / "compare.json").exists()
    for name in ("trend.png", "trend.svg", "index.html"):
        assert (hist / name).stat().st_size > 1000, name
    assert (hist / index[1]["dir"] / "report.html").is_file()
