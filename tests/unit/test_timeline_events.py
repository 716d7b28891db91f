"""Stage arithmetic, statuses and event correlation, without a network."""

from __future__ import annotations

import pytest

from loadtest.events import (
    Correlator,
    EventParser,
    MalformedEvent,
    PipelineError,
    Transcription,
    Translation,
    TtsStart,
)
from loadtest.profile_file import load_profile
from loadtest.timeline import RowContext, Status, UtteranceTimeline, outcome, stage_latencies, to_row
from tests.unit.listen_kit import correlator

pytestmark = pytest.mark.unit


def timeline(seq: int = 1, planned: float = 10.0) -> UtteranceTimeline:
    return UtteranceTimeline(f"c-{seq}", "c", seq, "fx", "en", "es", t_planned=planned, wall_start=1e9)


def ctx() -> RowContext:
    return RowContext("run", "w", 0, 55.0, "ref", "ref es", 0.0, 100.0, None, None, None, 1)


def test_stage_latencies_follow_the_definitions() -> None:
    tl = timeline()
    # Every timestamp distinct, decoys included (send start, the tts event, the server's clocks), so a
    # stage measured from the wrong one shows: e2e from end of speech (not send start) to the first
    # translated audio at the listener (not the tts event).
    tl.t_send_start, tl.t_speech_end = 10.0, 12.0
    tl.t_transcript, tl.t_translation, tl.t_tts_event, tl.t_audio_onset = 12.7, 12.8, 13.05, 13.3
    tl.server_speech_end, tl.server_transcript, tl.server_translation, tl.server_tts = 11.9, 12.6, 12.75, 13.0
    lat = stage_latencies(tl)
    assert lat.stt_ms == pytest.approx(700)
    assert lat.translation_ms == pytest.approx(100)
    assert lat.tts_ms == pytest.approx(500)
    assert lat.e2e_ms == pytest.approx(1300)
    assert outcome(tl).status is Status.OK


@pytest.mark.parametrize(
    ("fields", "stage"),
    [
        ({}, "send"),
        ({"t_send_start": 1.0, "t_speech_end": 2.0}, "stt"),
        ({"t_send_start": 1.0, "t_speech_end": 2.0, "t_transcript": 2.5}, "translation"),
        ({"t_send_start": 1.0, "t_speech_end": 2.0, "t_transcript": 2.5, "t_translation": 2.6}, "tts"),
        (
            {
                "t_send_start": 1.0,
                "t_speech_end": 2.0,
                "t_transcript": 2.5,
                "t_translation": 2.6,
                "t_tts_event": 2.9,
            },
            "tts",
        ),
    ],
)
def test_timeout_names_the_stage_that_never_finished(fields: dict[str, float], stage: str) -> None:
    tl = timeline()
    for name, value in fields.items():
        setattr(tl, name, value)
    out = outcome(tl)
    assert out.status is Status.TIMEOUT
    assert out.status_stage == stage
    row = to_row(tl, ctx())
    assert row.status == "timeout" and row.status_stage == stage


def test_error_wins_and_names_its_stage() -> None:
    tl = timeline()
    tl.t_speech_end, tl.error, tl.error_stage = 2.0, "gateway: tts down", "tts"
    row = to_row(tl, ctx())
    assert (row.status, row.status_stage, row.error) == ("error", "tts", "gateway: tts down")


def make_correlator() -> tuple[Correlator, list[UtteranceTimeline]]:
    corr, done, _clock, _timers = correlator()
    return corr, done


def test_events_and_audio_complete_utterances_in_order() -> None:
    corr, done, clock, timers = correlator()
    first, second = timeline(1), timeline(2)
    corr.expect(first)
    corr.expect(second)
    first.t_send_start, first.t_speech_end = 1.0, 3.0
    corr.on_event(Transcription("srv-1", "mic-1", "hello", 3.5, 3.0), 3.6)
    second.t_send_start = 4.0
    corr.on_event(Transcription("srv-x", "other-mic", "not ours", None, None), 3.7)
    corr.on_event(Translation("srv-1", "hola", None), 3.7)
    # audio may overtake its event (RTP vs. signaling over TLS)
    clock.now = 4.05
    corr.on_packet(4.05, True, 4800, 7, None)
    assert done == []
    corr.on_event(TtsStart("srv-1", "tts-1", 4800, 900.0, None), 4.1)
    assert first.t_audio_onset == 4.05 and first.server_utterance_id == "srv-1"
    assert done == []  # the row waits for the end of its audio (45 packets announced, 1 came)
    timers.advance(4.05 + 0.31)  # no packet for 0.3 s: it ended
    assert done == [first] and first.t_audio_end == pytest.approx(4.07)
    assert second.t_transcript is None


def test_onset_callback_fires_once_when_the_onset_is_timed_also_by_a_late_event() -> None:
    """Barge-in plans from this callback: audio heard before its tts event is timed when the event comes."""
    corr, _done, clock, _timers = correlator()
    timed: list[tuple[str, float | None]] = []
    corr.on_onset = lambda tl: timed.append((tl.utterance_id, tl.t_audio_onset))
    tl = timeline(1)
    corr.expect(tl)
    tl.t_send_start, tl.t_speech_end = 1.0, 3.0
    corr.on_event(Transcription("srv-1", "mic-1", "hello", 3.5, 3.0), 3.6)
    corr.on_event(Translation("srv-1", "hola", None), 3.7)
    clock.now = 4.05
    corr.on_packet(4.05, True, 4800, 7, None)
    assert timed == []  # audio alone is not yet anybody's onset
    corr.on_event(TtsStart("srv-1", "tts-1", 4800, 900.0, None), 4.1)
    clock.now = 4.07
    corr.on_packet(4.07, False, 5760, 8, None)
    assert timed == [(tl.utterance_id, 4.05)]


def test_audio_matched_by_rtp_timestamp_not_by_arrival_order() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1)
    corr.expect(tl)
    tl.t_send_start, tl.t_speech_end = 1.0, 2.0
    corr.on_event(Transcription("s1", "mic-1", "a", None, None), 2.5)
    corr.on_event(Translation("s1", "b", None), 2.6)
    clock.now = 2.7
    corr.on_packet(2.7, True, 111, 1, None)  # a stray packet of something else
    corr.on_event(TtsStart("s1", None, 999, None, None), 2.8)
    assert tl.t_audio_onset is None
    clock.now = 2.9
    corr.on_packet(2.9, True, 999, 5, None)
    timers.advance(3.5)
    assert done == [tl] and tl.t_audio_onset == 2.9 and tl.audio_packets == 1


def test_audio_whose_first_packets_were_lost_still_matches_its_utterance() -> None:
    # A lossy downlink dropped the first two packets: the onset is the third (RTP timestamp + 2·960).
    corr, done, clock, timers = correlator()
    tl = timeline(1)
    corr.expect(tl)
    tl.t_send_start, tl.t_speech_end = 1.0, 2.0
    corr.on_event(Transcription("s1", "mic-1", "a", None, None), 2.5)
    corr.on_event(Translation("s1", "b", None), 2.6)
    corr.on_event(TtsStart("s1", None, 2**32 - 960, 500.0, None), 2.8)  # across the 32-bit wrap
    for t, ts, seq in ((2.9, 2**32 - 960 - 960, 1), (2.95, 960 + 48 * 500, 9)):
        clock.now = t
        corr.on_packet(t, True, ts, seq, None)  # before the announced audio, and past its 500 ms: not its own
    assert tl.t_audio_onset is None
    clock.now = 3.0
    corr.on_packet(3.0, False, 960, 3, None)
    timers.advance(4.0)
    assert done == [tl] and tl.t_audio_onset == 3.0 and tl.audio_packets == 1


def test_gateway_error_ends_the_utterance_as_error() -> None:
    corr, done = make_correlator()
    tl = timeline(1)
    corr.expect(tl)
    tl.t_send_start, tl.t_speech_end = 1.0, 2.0
    corr.on_event(Transcription("s1", "mic-1", "a", None, None), 2.5)
    corr.on_event(PipelineError("s1", "tts", "connection refused"), 2.6)
    assert done == [tl]
    assert outcome(tl).status is Status.ERROR and tl.error_stage == "tts"


def test_transcript_before_end_of_speech_is_an_error_not_a_silent_mismatch() -> None:
    corr, done = make_correlator()
    tl = timeline(1)
    corr.expect(tl)
    tl.t_send_start = 1.0
    corr.on_event(Transcription("s1", "mic-1", "half", None, None), 1.5)
    assert done == [tl] and "split" in (tl.error or "")


def test_unmatched_events_are_counted() -> None:
    corr, _ = make_correlator()
    corr.on_event(Translation("nope", "x", None), 1.0)
    corr.on_event(Transcription("s1", "mic-1", "nobody speaking", None, None), 1.0)
    assert corr.stats.unmatched == 2


def test_malformed_events_are_rejected_with_the_reason() -> None:
    parser = EventParser(load_profile())
    with pytest.raises(MalformedEvent, match="text"):
        parser.parse("transcription", {"utteranceId": "u", "producerId": "p"})
    with pytest.raises(MalformedEvent, match="not a string"):
        parser.parse("transcription", {"utteranceId": "u", "producerId": "p", "text": 5})
    with pytest.raises(MalformedEvent):
        parser.parse("tts", "not an object")
    payload = {"utteranceId": 7, "producerId": "p", "text": "hi", "serverTs": 1500}
    event = parser.parse("transcription", payload)
    assert isinstance(event, Transcription) and event.server_ts == pytest.approx(1.5)
    assert event.utterance_id == "7"
