"""The listener's columns survive the journal, the Parquet merge and the report's loading, typed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loadtest.journal import JournalShard, merge_to_parquet
from loadtest.report.io import load_samples
from loadtest.timeline import RowContext, SampleRow, UtteranceTimeline, to_row

pytestmark = pytest.mark.unit


def heard(seq: int, checked: bool) -> SampleRow:
    tl = UtteranceTimeline(f"c-{seq}-l2", "c", seq, "fx", "es", "en", t_planned=seq, wall_start=1e9 + seq,
                           scenario="two-way", party="b", listener="l2")
    tl.t_send_start, tl.t_speech_end = seq + 0.1, seq + 2.0
    tl.t_transcript, tl.t_translation = seq + 2.5, seq + 2.6
    tl.t_tts_event, tl.t_audio_onset, tl.t_audio_end = seq + 2.7, seq + 2.8, seq + 4.8
    tl.audio_packets, tl.audio_missing_packets, tl.audio_gaps = 98, 2, 1
    tl.previous_audio_end, tl.previous_cut = seq + 2.65, False
    tl.segmentation, tl.segment_id = "merged", "g-7"
    if checked:
        tl.listen_checked, tl.listen_silent, tl.listen_clipped, tl.listen_rms_dbfs = True, False, True, -11.5
    return to_row(tl, RowContext("run", "w", 0, 40.0, None, None, None, None, None, None, None, 1))


def test_rows_carry_the_listener_columns() -> None:
    row = heard(1, checked=True)
    assert (row.scenario, row.party, row.listener, row.direction) == ("two-way", "b", "l2", "es-en")
    assert row.start_offset_ms == pytest.approx(2700.0) and row.end_offset_ms == pytest.approx(2800.0)
    assert row.audio_received_ms == pytest.approx(1960.0)
    assert row.overlap_ms == pytest.approx(50.0) and row.after_previous_ms == pytest.approx(150.0)


def test_journal_parquet_and_report_keep_types(tmp_path: Path) -> None:
    with JournalShard(tmp_path, "w1") as shard:
        shard.append(heard(1, checked=True))
        shard.append(heard(2, checked=False))
    merge_to_parquet(tmp_path)
    frame = pd.read_parquet(tmp_path / "samples.parquet")
    assert str(frame["listen_checked"].dtype) == "boolean" and str(frame["previous_cut"].dtype) == "boolean"
    assert str(frame["audio_packets"].dtype) == "Int64" and str(frame["audio_gaps"].dtype) == "Int64"
    assert frame["listen_clipped"].tolist()[0] is True and pd.isna(frame["listen_clipped"].tolist()[1])
    assert frame["listen_checked"].tolist() == [True, False]
    assert frame["segmentation"].tolist() == ["merged", "merged"] and frame["direction"].iloc[0] == "es-en"
    for source in ("parquet", "journal"):
        if source == "journal":
            (tmp_path / "samples.parquet").unlink()
        loaded = load_samples(tmp_path).frame
        assert len(loaded) == 2, source
        assert loaded["listen_checked"].tolist() == [True, False], source
        assert loaded["audio_missing_packets"].tolist() == [2, 2], source
        assert str(loaded["listener"].iloc[0]) == "l2", source
