"""The first measured path, end to end, against the real reference stack (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sut.config import CONFIG_DIR as CONFIGS
from tests.integration.stackrun import ground_truth, run_callers, running_stack, short_fixture_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_real_engines_one_caller_every_stage_timed(tmp_path: Path, state_dir: Path) -> None:
    ids = short_fixture_ids(max_duration_s=4.5, count=4)
    with running_stack("real", state_dir, port_offset=110) as info:
        frame = run_callers(
            info,
            tmp_path / "run",
            callers=1,
            duration_s=3 * 7.0,
            interval_s=7.0,
            fixture_ids=ids,
            response_timeout_s=15.0,
        )
    assert len(frame) >= 3
    assert list(frame["status"]) == ["ok"] * len(frame), frame[["status", "status_stage", "error"]]
    for stage in ("connect_ms", "stt_ms", "translation_ms", "tts_ms", "e2e_ms"):
        assert frame[stage].notna().all() and (frame[stage] > 0).all(), stage
    assert (frame["wer"] <= 0.35).all(), frame[["transcript", "reference_transcript", "wer"]]
    assert frame["translation"].str.strip().str.len().gt(0).all()
    assert frame["t_audio_onset"].notna().all()  # translated audio reached the listener
    # the three stages add up to end-to-end, on one clock
    parts = frame["stt_ms"] + frame["translation_ms"] + frame["tts_ms"]
    assert np.allclose(parts, frame["e2e_ms"], atol=0.01)


def test_stage_timings_agree_with_the_stacks_ground_truth(tmp_path: Path, state_dir: Path) -> None:
    ids = short_fixture_ids(max_duration_s=3.5, count=6)
    with running_stack("fixed-delays", state_dir, port_offset=120) as info:
        frame = run_callers(
            info, tmp_path / "run", callers=2, duration_s=11 * 4.5, interval_s=4.5, fixture_ids=ids
        )
        assert info.ground_truth_path is not None
        truth = ground_truth(info.ground_truth_path)
    ok = frame[frame["status"] == "ok"].set_index("server_utterance_id")
    assert len(ok) >= 20, frame["status"].value_counts()
    gt = truth.loc[ok.index]
    expected = {
        "stt_ms": (gt["transcription"] - gt["speech_end"]) * 1000,
        "translation_ms": (gt["translation"] - gt["transcription"]) * 1000,
        "tts_ms": (gt["tts_first_packet"] - gt["translation"]) * 1000,
        "e2e_ms": (gt["tts_first_packet"] - gt["speech_end"]) * 1000,
    }
    for stage, truth_ms in expected.items():
        diff = (ok[stage] - truth_ms).abs()
        assert np.percentile(diff, 99) <= 20.0, (stage, diff.describe())
    # the modelled service times show through: translation is the constant 100 ms plus overheads
    assert ok["translation_ms"].median() == pytest.approx(100, abs=30)


def test_tts_down_ends_utterances_as_timeouts_at_tts(tmp_path: Path, state_dir: Path) -> None:
    ids = short_fixture_ids(max_duration_s=3.5, count=3)
    with running_stack("tts-down", state_dir, port_offset=130) as info:
        frame = run_callers(
            info,
            tmp_path / "run",
            callers=1,
            duration_s=3 * 4.0,
            interval_s=4.0,
            fixture_ids=ids,
            response_timeout_s=4.0,
        )
    assert len(frame) == 3
    assert set(frame["status"]) == {"timeout"}
    assert set(frame["status_stage"]) == {"tts"}
    assert frame["translation_ms"].notna().all()  # what was measured before the fault is kept
    counts = frame["status"].value_counts()
    assert counts.sum() == len(frame)


def test_tts_down_reported_by_the_gateway_ends_utterances_as_errors_at_tts(
    tmp_path: Path, state_dir: Path
) -> None:
    config = tmp_path / "tts-down-reported.toml"
    config.write_text((CONFIGS / "tts-down.toml").read_text().replace("report_errors = false",
                                                                       "report_errors = true"))
    ids = short_fixture_ids(max_duration_s=3.5, count=2)
    with running_stack(str(config), state_dir, port_offset=135) as info:
        frame = run_callers(info, tmp_path / "run", callers=1, duration_s=2 * 4.0, interval_s=4.0,
                            fixture_ids=ids, response_timeout_s=6.0)
    assert len(frame) == 2
    assert set(frame["status"]) == {"error"} and set(frame["status_stage"]) == {"tts"}
    assert frame["error"].str.contains("gateway:").all()
    assert frame["stt_ms"].notna().all() and frame["translation_ms"].notna().all()

