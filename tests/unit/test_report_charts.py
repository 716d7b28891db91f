"""Charts over time read well on a real short run (a dozen utterances) and on a long one.

The figures are inspected before they are saved: what matters is which lines hold how many points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loadtest.report import charts_time
from loadtest.report.aggregate import active_callers
from loadtest.report.charts_common import style
from loadtest.report.model import RunMetadata
from loadtest.report.report import build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run
from loadtest.report.timeseries import MAX_BINS, MIN_BINS, build_timeseries, choose_bin
from tests.charts_drawn import captured_figures, check_run_charts

pytestmark = pytest.mark.unit


def short_run(callers: int = 3, sends: int = 4, interval_s: float = 9.0) -> pd.DataFrame:
    """What `loadtest run --callers 3 --duration 30` writes: one process, sends every 9 s, RTC from send 2."""
    n = callers * sends
    frame = make_samples(
        SyntheticSpec(rows=n, steps=(callers,), workers=1, seed=5, timeout_rate=0, error_rate=0)
    )
    seq = np.repeat(np.arange(sends), callers)
    frame["wall_start"] = 1_796_027_625.0 + seq * interval_s + np.tile(np.arange(callers) * 0.01, sends)
    frame["worker"] = "vm:6479"
    frame["active_users"] = callers  # connected conversations in the process at the planned send
    for col in ("jitter_ms", "rtt_ms", "packets_lost"):
        frame.loc[seq == 0, col] = np.nan  # no stats poll has happened before the first send
    frame["packets_lost"] = frame["packets_lost"].where(seq == 0, 0.0)
    return frame


def _timeseries(frame: pd.DataFrame):
    status = frame["status"].to_numpy(dtype=object)
    return build_timeseries(frame, status, active_callers(frame))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Capture each chart's figure instead of writing it."""
    captured: list[Any] = []

    def fake_save(fig: Any, out_dir: Path, name: str, title: str, caption: str) -> Any:
        captured.append(fig)
        return caption

    monkeypatch.setattr(charts_time, "save", fake_save)
    return captured


def _lines(fig: Any) -> dict[str, Any]:
    return {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()}


@pytest.mark.parametrize(
    ("duration_s", "rows", "expected"),
    [(27, 12, 1.0), (60, 20, 2.0), (600, 3000, 10.0), (3600, 1_000_000, 60.0), (600, 200, 30.0)],
)
def test_bin_width_follows_the_run_length(duration_s: float, rows: int, expected: float) -> None:
    assert choose_bin(duration_s, rows) == expected


@pytest.mark.parametrize("duration_s", [20, 45, 90, 300, 1000, 3600, 4 * 3600, 86400])
@pytest.mark.parametrize("rows", [10, 1000, 1_000_000])
def test_a_run_is_never_one_bin(duration_s: float, rows: int) -> None:
    bins = int(duration_s // choose_bin(duration_s, rows)) + 1
    assert MIN_BINS <= bins <= MAX_BINS + 1


def test_short_run_series(tmp_path: Path) -> None:
    frame = short_run()
    ts = _timeseries(frame)
    assert ts.bin_s == 1.0 and ts.per_bin == 3
    filled = ts.e2e_count > 0
    assert filled.sum() == 4
    np.testing.assert_allclose(ts.t_mean[filled], [0.01, 9.01, 18.01, 27.01], atol=0.01)  # at the sends
    assert list(ts.callers_v) == [3] and ts.callers_t[0] == 0.0
    assert set(ts.rtc) == {"jitter_ms", "rtt_ms", "packets_lost"}
    assert ts.rtc_points["jitter_ms"][0].size == 9  # partly null: the first sends have no stats yet
    assert ts.scatter_e2e.size == ts.scatter_total == 12


def test_short_run_latency_chart_has_lines_points_and_callers(figures: list[Any], tmp_path: Path) -> None:
    frame = short_run()
    ts = _timeseries(frame)
    summary = build_report(_write(tmp_path, frame), charts=False).summary
    with style():
        charts_time.latency_over_time(tmp_path, summary, ts)
    lines = _lines(figures[0])
    for name in ("e2e p50 per 1 s", "e2e p95 per 1 s"):
        assert np.isfinite(lines[name].get_ydata()).sum() == 4, name  # one point per send, joined
    assert "e2e p99 per 1 s" not in lines  # 3 values a bin: a "p99" would only repeat the max
    callers = lines["active callers"]
    assert set(callers.get_ydata()) == {3} and callers.get_xdata()[-1] >= 27
    scatter = figures[0].axes[0].collections[0]
    assert len(scatter.get_offsets()) == 12 and scatter.get_sizes()[0] >= 20  # big enough to see


def test_one_caller_run_draws_points_and_the_run_percentiles(figures: list[Any], tmp_path: Path) -> None:
    frame = short_run(callers=1, sends=10, interval_s=6.5)
    ts = _timeseries(frame)
    summary = build_report(_write(tmp_path, frame), charts=False).summary
    with style():
        charts_time.latency_over_time(tmp_path, summary, ts)
    labels = set(_lines(figures[0]))
    p50 = summary.stages["e2e"].p50
    assert f"run e2e p50 {p50:.0f} ms" in labels  # one sample a bin: the run's percentiles, not per-bin
    assert not any(label.startswith("e2e p50 per") for label in labels)


def test_failures_are_marked_and_errors_chart_has_bars(figures: list[Any], tmp_path: Path) -> None:
    frame = short_run()
    frame.loc[4, ["status", "status_stage"]] = ["timeout", "tts"]
    frame.loc[4, ["tts_ms", "e2e_ms"]] = np.nan
    ts = _timeseries(frame)
    summary = build_report(_write(tmp_path, frame), charts=False).summary
    with style():
        charts_time.latency_over_time(tmp_path, summary, ts)
        charts_time.errors_over_time(tmp_path, summary, ts)
    marks = [c for c in figures[0].axes[0].collections if c.get_label() == "timeout (no e2e)"]
    assert len(marks) == 1 and marks[0].get_offsets()[0][0] == pytest.approx(9.01, abs=0.01)
    bars = [p for p in figures[1].axes[0].patches if p.get_height() > 0]
    assert len(bars) == 1 and bars[0].get_height() == pytest.approx(100 / 3)  # 1 of the 3 sent at t = 9 s


def test_rtc_chart_draws_partly_null_columns(figures: list[Any], tmp_path: Path) -> None:
    ts = _timeseries(short_run())
    with style():
        charts_time.rtc_over_time(tmp_path, ts)
    fig = figures[0]
    assert len([ax for ax in fig.axes if ax.get_title()]) == 3
    for ax in fig.axes:
        if ax.get_title():
            p50 = next(ln for ln in ax.get_lines() if ln.get_label() == "p50 per bin")
            assert np.isfinite(p50.get_ydata()).sum() == 3  # the three sends that had stats


def test_long_run_uses_minutes_and_p99(figures: list[Any], tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=60_000, steps=(40, 100), workers=4, duration_s=3600.0))
    ts = _timeseries(frame)
    summary = build_report(_write(tmp_path, frame), charts=False, metadata=RunMetadata()).summary
    with style():
        charts_time.latency_over_time(tmp_path, summary, ts)
    lines = _lines(figures[0])
    assert {"e2e p50 per 1 min", "e2e p95 per 1 min", "e2e p99 per 1 min"} <= set(lines)
    assert figures[0].axes[1].get_xlabel().endswith("(min)")
    assert set(lines["active callers"].get_ydata()) == {40, 100}  # summed over the 4 processes
    assert len(figures[0].axes[0].collections[0].get_offsets()) == 4000  # a sample, not 60k points


def short_run_with_failures() -> pd.DataFrame:
    """The short run with one timeout (at tts) and one error (at stt): marks and error bars to draw."""
    frame = short_run()
    frame.loc[4, ["status", "status_stage"]] = ["timeout", "tts"]
    frame.loc[4, ["tts_ms", "e2e_ms"]] = np.nan
    frame.loc[7, ["status", "status_stage"]] = ["error", "stt"]
    frame.loc[7, ["stt_ms", "translation_ms", "tts_ms", "e2e_ms"]] = np.nan
    return frame


@pytest.mark.parametrize("make_frame", [short_run, short_run_with_failures], ids=["clean", "failures"])
def test_every_chart_is_written_for_a_short_run(tmp_path: Path, make_frame: Any) -> None:
    frame = make_frame()
    run_dir = _write(tmp_path, frame)
    with captured_figures() as drawn:
        result = build_report(run_dir)
    names = {c.name for c in result.charts}
    assert names == {
        "e2e_cdf",
        "stage_distributions",
        "stage_breakdown",
        "latency_over_time",
        "errors_over_time",
        "rtc_stats",
    }
    for name in names:
        assert (run_dir / "charts" / f"{name}.png").stat().st_size > 5000
        assert (run_dir / "charts" / f"{name}.svg").stat().st_size > 5000
    # And what they draw: a dozen utterances as exact CDF steps, strip points beside each box, ...
    assert set(drawn) == names
    check_run_charts(drawn, frame, result.summary)


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    run_dir = tmp_path / "run"
    write_run(run_dir, frame)
    return run_dir
