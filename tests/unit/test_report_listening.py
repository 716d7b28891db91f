"""The listener-experience section: offsets, received vs announced audio, gaps, the decoded sample."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.report.build import print_stage_table
from loadtest.report.report import build_report
from tests.unit.scenario_rows import row, write

pytestmark = pytest.mark.unit

START = [2000.0, 2100.0, 2300.0, 2600.0, 3000.0]
END = [300.0, 250.0, 400.0, 900.0, None]


def heard_rows() -> list[dict]:
    received = [2000.0, 1980.0, 1960.0, 1000.0, None]  # vs 2000 announced: 0, 20 (one packet), 40, 1000 short
    gaps = [(0, 0), (2, 3), (1, 1), (None, None), (0, 0)]
    listen = [(True, False, True, -12.0), (True, True, False, -60.0), (False, None, None, None),
              (True, None, None, None), (False, None, None, None)]
    rows = []
    for i in range(5):
        checked, silent, clipped, rms = listen[i]
        rows.append(row(seq=i + 1, start_offset_ms=START[i], end_offset_ms=END[i], tts_audio_ms=2000.0,
                        audio_received_ms=received[i],
                        audio_packets=None if received[i] is None else received[i] / 20.0,
                        audio_gaps=gaps[i][0], audio_missing_packets=gaps[i][1], listen_checked=checked,
                        listen_silent=silent, listen_clipped=clipped, listen_rms_dbfs=rms))
    return rows


@pytest.mark.parametrize("journal", [False, True])
def test_listener_figures(tmp_path: Path, journal: bool) -> None:
    result = build_report(write(tmp_path, heard_rows(), journal=journal), charts=False,
                          thresholds=["start_offset.p95 < 3000", "end_offset_ms.max <= 900"])
    x = result.summary.scenarios.listening
    assert x is not None
    assert x.utterances == 5
    assert (x.start_offset.count, x.start_offset.p50) == (5, 2300.0)
    assert x.start_offset.p95 == pytest.approx(np.percentile(START, 95))
    assert (x.end_offset.count, x.end_offset.max) == (4, 900.0)
    assert (x.compared, x.short, x.shortfall_p50_ms) == (4, 2, 520.0)  # exactly one packet short is not short
    assert (x.gap_rows, x.with_gaps, x.gaps, x.missing_packets) == (4, 2, 3, 4)
    assert (x.checked, x.silent, x.clipped) == (3, 1, 1)
    assert (x.rms_dbfs_p50, x.rms_dbfs_min, x.rms_dbfs_max) == (-36.0, -60.0, -12.0)
    # The offsets are threshold series too; they also join the other measurements.
    assert [v.verdict for v in result.summary.thresholds] == ["pass", "pass"]
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["listening"]["short"] == 2 and data["listening"]["start_offset"]["p50"] == 2300.0
    assert data["metrics"]["end_offset_ms"]["count"] == 4


def test_listener_section_in_terminal_and_html(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, heard_rows()), charts=False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        print_stage_table(result.summary)
    lines = err.getvalue().splitlines()
    at = lines.index("listener experience (5 utterances):")
    assert lines[at + 1].split()[:6] == ["start", "offset", "p50", "2300", "p95", "2920"]
    assert "short of announced by > 1 packet: 2 of 4" in lines[at + 2]
    assert "gaps: 2 of 4 utterances, 3 gaps, 4 packets missing" in lines[at + 2]
    assert lines[at + 3] == "  decoded 3: silent 1  clipped 1, RMS p50 -36.0 dBFS"
    html = (tmp_path / "report.html").read_text()
    section = html[html.index('<h2 id="listening">'):]
    assert "2 of 4 (50.0 %)" in section and "1 / 1" in section and "-36 (-60 – -12)" in section


def test_no_listener_section_without_the_hearing_columns(tmp_path: Path) -> None:
    rows = [row(seq=i, listen_checked=False) for i in range(1, 4)]  # a flag alone, nothing decoded or heard
    result = build_report(write(tmp_path, rows), charts=False, thresholds=["start_offset.p95 < 3000"])
    assert result.summary.scenarios.listening is None
    assert "listening" not in json.loads((tmp_path / "summary.json").read_text())
    assert 'id="listening"' not in (tmp_path / "report.html").read_text()
    assert [v.verdict for v in result.summary.thresholds] == ["no-data"]  # not measured: not a pass


def test_samples_typed_as_the_journal_merge_types_them_report_the_same(tmp_path: Path) -> None:
    """samples.parquet from the journal merge: text as string, counts as Int64, flags as boolean."""
    plain = build_report(write(tmp_path / "plain", heard_rows()), charts=False).summary_path
    typed = pd.DataFrame(heard_rows())
    for col in ("scenario", "party", "listener", "direction", "status", "fixture_id"):
        typed[col] = typed[col].astype("string")
    for col in ("seq", "audio_gaps", "audio_missing_packets"):
        typed[col] = pd.to_numeric(typed[col]).astype("Int64")
    for col in ("listen_checked", "listen_silent", "listen_clipped"):
        typed[col] = typed[col].astype("boolean")
    (tmp_path / "typed").mkdir()
    typed.to_parquet(tmp_path / "typed" / "samples.parquet", index=False)
    typed_summary = build_report(tmp_path / "typed", charts=False).summary_path
    assert json.loads(typed_summary.read_text())["listening"] == json.loads(plain.read_text())["listening"]
