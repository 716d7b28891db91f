"""Monologue: the gateway's segments matched to the planned utterances by their speech spans."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loadtest.announcements import Announcements
from loadtest.events import Correlator, PipelineError, Transcription, Translation, TtsStart
from loadtest.inbox import Inbox
from loadtest.profile_file import load_profile
from loadtest.segmentation import Span, map_span, overlaps, summarise
from loadtest.timeline import Outcome, RowContext, Status, UtteranceTimeline, outcome, stage_latencies, to_row
from tests.unit.listen_kit import Clock, Timers, correlator, play, timeline

pytestmark = pytest.mark.unit

SERVER = 7_000.0  # the gateway's clock reads this much ahead of the tester's
DELAY = 0.004  # each event's one-way delay


def segment(corr: Correlator, server_id: str, start: float, end: float, arrival: float) -> bool:
    """A transcription whose speech span is [start, end] on the tester's clock, sent at arrival − DELAY."""
    server_ts = arrival - DELAY + SERVER
    return corr.on_event(Transcription(server_id, "mic-1", f"text {server_id}", server_ts, end + SERVER,
                                       start + SERVER), arrival)


def failed(corr: Correlator, server_id: str, start: float, end: float, arrival: float,
           producer: str | None = "mic-1") -> bool:
    """The gateway failed this segment before its transcript (STT): an error carrying its speech span."""
    return corr.on_event(PipelineError(server_id, "stt", "empty transcript", producer, None,
                                       arrival - DELAY + SERVER, end + SERVER, start + SERVER), arrival)


def results(corr: Correlator, server_id: str, t: float, rtp: int) -> tuple[bool, bool]:
    """Translation and tts events (100 ms of audio announced); whether each was handled."""
    return (corr.on_event(Translation(server_id, "es", None), t),
            corr.on_event(TtsStart(server_id, "tts-1", rtp, 100.0, None), t + 0.01))


def monologue() -> tuple[Correlator, list[UtteranceTimeline], list[UtteranceTimeline], Clock, Timers]:
    corr, done, clock, timers = correlator(matching="span")
    spans = [(1.0, 3.0), (3.6, 5.0), (5.5, 7.0), (7.6, 10.0), (10.6, 12.0)]
    planned = [timeline(k + 1, s - 0.1, s, e) for k, (s, e) in enumerate(spans)]
    for tl in planned:
        corr.expect(tl)
    return corr, done, planned, clock, timers


def test_span_mapping_and_overlap_rules() -> None:
    span = map_span(100.5, 102.0, 103.0, arrival=10.004)
    assert (span.start, span.end) == pytest.approx((7.504, 9.004))
    assert overlaps(Span(1.0, 3.0), 2.95, 5.0) is False  # 50 ms: not enough of either
    assert overlaps(Span(1.0, 3.0), 2.7, 5.0) is True
    assert overlaps(Span(1.0, 1.1), 0.0, 5.0) is True  # a short segment wholly inside counts
    assert overlaps(Span(1.0, 3.0), 3.0, 4.0) is False


def test_single_merged_split_and_lost_with_the_clock_offset() -> None:
    corr, done, (u1, u2, u3, u4, u5), clock, timers = monologue()
    # u1 alone; the gateway's span is a little off the plan (its VAD, the network): still single.
    assert segment(corr, "g1", 1.02, 2.97, arrival=3.7)
    assert (u1.segmentation, u1.segment_id, u1.t_transcript) == ("single", "g1", 3.7)
    # u2 and u3 run together (their pause was too short for the gateway): merged, one segment times both.
    assert segment(corr, "g2", 3.62, 6.98, arrival=7.6)
    assert (u2.segmentation, u3.segmentation) == ("merged", "merged")
    assert u2.segment_id == u3.segment_id == u2.server_utterance_id == "g2"
    # u4 cut at an inner pause: the first part times nothing (its end is later) but is ours.
    assert segment(corr, "g3", 7.62, 8.4, arrival=9.3)
    assert u4.t_transcript is None and u4.segmentation is None
    assert results(corr, "g3", 9.4, 30_000) == (True, True)  # matched, not timing
    assert segment(corr, "g4", 8.9, 9.98, arrival=10.6)
    assert (u4.segmentation, u4.segment_id, u4.t_transcript) == ("split", "g4", 10.6)
    assert u4.t_translation is None  # g3's translation was not u4's
    assert corr.stats.unmatched == 0
    # u5: no segment ever overlaps it.
    corr.expire(u5)
    assert u5.segmentation == "lost" and outcome(u5).status_stage == "stt"
    unspoken = timeline(9, 30.0)  # planned, never spoken (the run stopped): not the gateway's loss
    corr.expect(unspoken)
    corr.expire(unspoken)
    assert unspoken.segmentation is None
    rows = [to_row(tl, RowContext("r", "w", 0, 1.0, None, None, None, None, None, None, None, 1)).to_dict()
            for tl in (u1, u2, u3, u4, u5)]
    summary = summarise(rows + rows[:2])  # a second listener's copies count once
    assert summary.counts == {"single": 1, "merged": 2, "split": 1, "lost": 1}
    assert summary.judged == 5 and summary.segments == 3 and summary.share("merged") == pytest.approx(0.4)


def test_merged_utterances_share_the_segments_events_and_audio() -> None:
    corr, done, (u1, u2, u3, u4, u5), clock, timers = monologue()
    assert segment(corr, "g2", 3.62, 6.98, arrival=7.6)
    assert results(corr, "g2", 7.7, 50_000) == (True, True)
    play(corr, clock, 8.0, 50_000, 1, 5)  # every announced packet
    assert done == [u2, u3]
    assert u2.t_audio_onset == u3.t_audio_onset == pytest.approx(8.0)
    assert u2.t_audio_end == u3.t_audio_end == pytest.approx(8.1)
    assert outcome(u2).status is outcome(u3).status is Status.OK
    # What the listener lived: u2's stt includes u3's speech.
    assert stage_latencies(u2).stt_ms == pytest.approx((7.6 - 5.0) * 1000)
    assert stage_latencies(u3).stt_ms == pytest.approx((7.6 - 7.0) * 1000)


def test_a_segment_ending_while_the_speaker_still_speaks_waits_for_the_rest() -> None:
    corr, done, clock, timers = correlator(matching="span")
    tl = timeline(1, 0.9, 1.0, None)  # still speaking
    corr.expect(tl)
    assert segment(corr, "g1", 1.0, 2.0, arrival=2.9)
    assert tl.error is None and tl.t_transcript is None  # not "transcript before end of speech"
    tl.t_speech_end = 4.0
    assert segment(corr, "g2", 2.8, 4.0, arrival=4.7)
    assert (tl.segmentation, tl.segment_id) == ("split", "g2")


def test_a_segment_overlapping_none_of_ours_is_unmatched_and_so_are_its_events() -> None:
    corr, done, (u1, *_rest), clock, timers = monologue()
    assert not segment(corr, "noise", 20.0, 21.0, arrival=21.5)
    assert results(corr, "noise", 21.6, 9_000) == (False, False)
    assert corr.stats.unmatched == 3 and u1.t_transcript is None


def test_an_utterance_cut_whose_end_never_came_is_split_at_its_deadline() -> None:
    corr, done, (u1, *_rest), clock, timers = monologue()
    assert segment(corr, "g1", 1.0, 1.8, arrival=2.6)
    corr.expire(u1)
    assert u1.segmentation == "split" and outcome(u1).status is Status.TIMEOUT


def test_without_span_fields_matching_falls_back_to_order_and_judges_nothing() -> None:
    corr, done, (u1, u2, *_rest), clock, timers = monologue()
    assert corr.on_event(Transcription("g1", "mic-1", "a", None, None), 3.5)
    assert u1.t_transcript == 3.5 and u1.segmentation is None and u1.segment_id == "g1"
    corr.expire(u2)
    assert u2.segmentation is None  # no span ever seen: "lost" would be a guess


def test_summary_of_rows_without_judgements_is_empty() -> None:
    summary = summarise([{"segmentation": None}, {"status": "ok"}])
    assert summary.judged == 0 and summary.share("single") is None
    assert summary.to_dict()["single"] == 0


def test_a_merged_error_segment_ends_both_utterances_as_errors() -> None:
    corr, done, (u1, u2, u3, u4, u5), clock, timers = monologue()
    assert segment(corr, "g1", 1.02, 2.97, arrival=3.7)
    assert failed(corr, "g2", 3.62, 6.98, arrival=7.6)  # u2 and u3 run together, and STT failed
    assert done == [u2, u3]
    for tl in (u2, u3):
        assert (tl.segmentation, tl.segment_id) == ("merged", "g2")
        assert outcome(tl) == Outcome(Status.ERROR, "stt", "gateway: empty transcript")
        assert tl.t_transcript is None
    assert u1.error is None and u1.segmentation == "single"  # the order fallback would have taken u1
    # The failed segment is over: its late events are duplicates, and the next segment times u4.
    assert not corr.on_event(Translation("g2", "x", None), 7.7)
    assert segment(corr, "g3", 7.62, 9.98, arrival=10.6)
    assert (u4.segmentation, u4.segment_id, u4.error) == ("single", "g3", None)
    assert corr.stats.unmatched == 1


def test_an_error_after_a_lost_utterance_does_not_shift_later_ones() -> None:
    corr, done, (u1, u2, u3, u4, u5), clock, timers = monologue()
    # u1 never reached the gateway's STT (no segment); u2 failed; u3 is transcribed.
    assert failed(corr, "g2", 3.62, 4.98, arrival=5.4)
    assert done == [u2] and u2.segmentation == "single" and outcome(u2).status is Status.ERROR
    assert u1.error is None and u1.segment_id is None
    assert segment(corr, "g3", 5.52, 6.98, arrival=7.5)
    assert (u3.segment_id, u3.t_transcript, u3.segmentation) == ("g3", 7.5, "single")
    corr.expire(u1)
    assert u1.segmentation == "lost"
    assert (outcome(u1).status, outcome(u1).status_stage) == (Status.TIMEOUT, "stt")


def test_an_error_holding_the_end_of_a_split_utterance_ends_it_split() -> None:
    corr, done, (_u1, _u2, _u3, u4, _u5), clock, timers = monologue()
    assert segment(corr, "g3", 7.62, 8.4, arrival=9.3)  # its first part: ours, timing nothing
    assert failed(corr, "g4", 8.9, 9.98, arrival=10.6)
    assert done == [u4] and (u4.segmentation, u4.segment_id, u4.error_stage) == ("split", "g4", "stt")


def test_errors_without_a_span_or_of_another_producer_keep_their_matching() -> None:
    corr, done, (u1, u2, *_rest), clock, timers = monologue()
    assert not failed(corr, "x1", 1.0, 3.0, arrival=3.5, producer="mic-2")  # another speaker's
    assert u1.error is None and corr.stats.unmatched == 1
    # No span: the order fallback, as before (the oldest started utterance awaiting its transcript).
    assert corr.on_event(PipelineError("g2", "stt", "empty transcript", "mic-1"), 5.4)
    assert done == [u1] and u1.segmentation is None and u2.error is None
    # An error covering none of ours is unmatched.
    assert not failed(corr, "noise", 20.0, 21.0, arrival=21.5)
    assert corr.stats.unmatched == 2 and done == [u1]


def test_the_reference_profile_maps_the_error_span_and_the_inbox_stays_balanced() -> None:
    corr, done, (u1, u2, u3, *_rest), clock, timers = monologue()
    profile = load_profile()
    handlers: dict[str, Callable[..., None]] = {}
    inbox = Inbox(profile, Announcements(profile.producers), corr.on_event, lambda: None, clock)
    inbox.register(lambda name, handler: handlers.__setitem__(name, handler))

    def ms(tester_s: float) -> float:
        return round((tester_s + SERVER) * 1000, 3)

    clock.now = 7.6
    error = {"utteranceId": "g2", "seq": 2, "producerId": "mic-1", "stage": "stt",
             "error": "empty transcript", "speechStartTs": ms(3.62), "speechEndTs": ms(6.98),
             "serverTs": ms(7.6 - DELAY)}
    handlers["pipelineError"](error)
    assert done == [u2, u3] and u2.segmentation == u3.segmentation == "merged"
    handlers["pipelineError"](error)  # a duplicate
    handlers["pipelineError"]({**error, "speechStartTs": "early"})  # malformed
    counts = inbox.counts
    assert counts.balanced(), counts
    assert (counts.received, counts.handled, counts.unmatched, counts.malformed) == (3, 1, 1, 1)
    assert u1.error is None
