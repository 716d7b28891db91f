"""What a listener hears: translated packets assigned to utterances, counted, and when each audio ended."""

from __future__ import annotations

import random

import pytest

from loadtest.events import PipelineError
from loadtest.hearing import MAX_SPURTS, holes
from loadtest.timeline import RowContext, Status, outcome, to_row
from tests.unit.listen_kit import correlator, play, through_tts, timeline

pytestmark = pytest.mark.unit

R = 1_000_000  # the tts event's RTP timestamp


def ctx() -> RowContext:
    return RowContext("run", "w", 0, 55.0, None, None, None, None, None, None, None, 1)


def test_holes_count_missing_sequence_numbers_between_first_and_last() -> None:
    assert holes([]) == (0, 0)
    assert holes([5, 6, 7]) == (0, 0)
    assert holes([5, 8, 6, 11, 11]) == (3, 2)  # 7 | 9, 10 missing; duplicates and reordering harmless
    assert holes([65534, 65535, 1, 2]) == (1, 1)  # 0 missing across the 16-bit wrap
    assert holes([10, 9, 8]) == (0, 0)  # reversed


def test_packets_assigned_by_rtp_range_with_loss_reordering_and_strays() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, R, 200.0)  # 10 packets announced
    arrivals = {0: 2.60, 1: 2.62, 2: 2.64, 5: 2.70, 8: 2.76, 6: 2.765, 9: 2.78}  # 3, 4, 7 lost; 6 late
    for i, t in arrivals.items():
        clock.now = t
        corr.on_packet(t, i == 0, R + 960 * i, 500 + i, None)
        if i == 5:
            corr.on_packet(t, True, R + 48_000 * 30, 9, None)  # a stray, outside every announced range
    assert done == []  # 7 of 10 packets: its end is not known yet
    timers.advance(2.78 + 0.29)
    assert done == []
    timers.advance(2.78 + 0.31)  # quiet for 0.3 s: the audio has ended
    assert done == [tl]
    assert tl.t_audio_onset == pytest.approx(2.60)
    assert tl.t_audio_end == pytest.approx(2.80)  # the last arrival + 20 ms
    assert (tl.audio_packets, tl.audio_missing_packets, tl.audio_gaps) == (7, 3, 2)
    row = to_row(tl, ctx())
    assert row.status == "ok" and row.audio_received_ms == pytest.approx(140.0)
    assert row.start_offset_ms == pytest.approx(1600.0)  # first translated audio − start of speech
    assert row.end_offset_ms == pytest.approx(800.0)  # end of translated audio − end of speech
    assert row.direction == "en-es" and row.previous_cut is None and row.overlap_ms is None


def test_audio_before_its_event_is_kept_and_every_announced_packet_ends_it() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    rtp0, seq0 = 2**32 - 960 * 2, 65_534  # both wrap inside the utterance
    play(corr, clock, 2.60, rtp0, seq0, 3)  # RTP overtook signaling: three packets before the tts event
    assert done == []
    through_tts(corr, "s1", 2.61, rtp0, 100.0)  # 5 packets
    assert tl.t_audio_onset == pytest.approx(2.60)
    clock.now = 2.66
    corr.on_packet(2.66, False, (rtp0 + 960 * 3) & 0xFFFFFFFF, 1, None)
    assert done == []
    clock.now = 2.68
    corr.on_packet(2.68, False, (rtp0 + 960 * 4) & 0xFFFFFFFF, 2, None)
    assert done == [tl] and timers.fired == 0  # delivered by the count, not by a timer
    assert (tl.audio_packets, tl.audio_missing_packets, tl.t_audio_end) == (5, 0, pytest.approx(2.70))


def test_first_packets_lost_the_utterance_still_gets_its_audio_and_is_not_cut() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, R, 100.0)
    play(corr, clock, 2.6, R, 10, 5, skip=frozenset({0, 1}))
    timers.advance(3.5)
    assert done == [tl]
    assert tl.t_audio_onset == pytest.approx(2.64) and tl.audio_packets == 3
    assert tl.audio_missing_packets == 0  # lost before the first received: not a hole inside


def test_without_rtp_timestamps_spurts_go_to_utterances_in_order_and_the_next_one_ends_the_last() -> None:
    corr, done, clock, timers = correlator()
    first, second = timeline(1, 0.0, 1.0, 2.0), timeline(2, 2.0, 3.0, 4.0)
    corr.expect(first)
    corr.expect(second)
    through_tts(corr, "s1", 2.5, None, 2000.0)  # no RTP timestamp: order of talk spurts
    end1 = play(corr, clock, 2.6, 5_000, 100, 10)
    assert done == [] and first.t_audio_onset == pytest.approx(2.6)
    play(corr, clock, 2.9, 5_000 + 48_000, 110, 3)  # marker: a new spurt, its event not here yet
    assert done == []
    through_tts(corr, "s2", 2.96, None, 60.0)  # adopts the waiting spurt: the second's audio began
    assert done == [first, second]  # the first ended when the second began; the second had all 3
    assert first.t_audio_end == pytest.approx(end1 + 0.02) and first.audio_packets == 10
    assert second.t_audio_onset == pytest.approx(2.9)
    assert second.previous_audio_end == pytest.approx(end1 + 0.02)
    assert second.previous_cut is True  # 200 ms of 2000 ms announced
    assert timers.fired == 0


def test_a_later_utterances_audio_ends_a_cut_one_and_sets_the_barge_in_fields() -> None:
    corr, done, clock, timers = correlator()
    first, second = timeline(1, 0.0, 1.0, 2.0), timeline(2, 2.0, 2.5, 3.0)
    corr.expect(first)
    corr.expect(second)
    through_tts(corr, "s1", 2.5, R, 1000.0)  # 50 packets announced, the gateway plays 10 (barged in)
    end1 = play(corr, clock, 2.6, R, 100, 10)
    assert done == []
    through_tts(corr, "s2", 2.7, R + 48 * 1100, 100.0)  # ready at 2.71: the first's audio still played
    assert second.t_translation == pytest.approx(2.71)
    assert done == []  # the second's event alone ends nothing: its audio has not begun
    play(corr, clock, 2.85, R + 48 * 1100, 110, 5)
    assert done == [first, second]
    assert first.t_audio_end == pytest.approx(end1 + 0.02)
    row = to_row(second, ctx())
    assert row.previous_cut is True
    assert row.overlap_ms == pytest.approx((end1 + 0.02 - 2.71) * 1000)
    assert row.after_previous_ms == pytest.approx((2.85 - end1 - 0.02) * 1000)
    assert to_row(first, ctx()).previous_cut is None  # nothing before it


def test_no_overlap_is_zero_and_a_full_previous_is_not_cut() -> None:
    corr, done, clock, timers = correlator()
    first, second = timeline(1, 0.0, 1.0, 2.0), timeline(2, 3.0, 4.0, 5.0)
    corr.expect(first)
    corr.expect(second)
    through_tts(corr, "s1", 2.5, R, 100.0)
    end1 = play(corr, clock, 2.6, R, 100, 5)
    assert done == [first]
    through_tts(corr, "s2", 5.5, R + 48 * 3000, 100.0)
    play(corr, clock, 5.6, R + 48 * 3000, 105, 5)
    row = to_row(second, ctx())
    assert row.overlap_ms == 0.0 and row.previous_cut is False
    assert row.after_previous_ms == pytest.approx((5.6 - end1 - 0.02) * 1000)


def test_at_its_deadline_a_complete_utterance_is_ok_with_its_end_unknown() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, R, 10_000.0)
    play(corr, clock, 2.6, R, 100, 20)  # still playing (packets keep the quiet timer off)
    corr.expire(tl)  # the deadline, before any rule ended its audio
    assert done == []  # expire does not deliver: the caller does
    assert outcome(tl).status is Status.OK
    assert tl.t_audio_end is None and tl.audio_packets == 20
    row = to_row(tl, ctx())
    assert row.end_offset_ms is None and row.start_offset_ms == pytest.approx(1600.0)
    timers.advance(10.0)
    assert done == []  # delivered once only


def test_announced_audio_that_never_arrives_times_out_at_tts_with_zero_packets() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, R, 100.0)
    timers.advance(20.0)
    corr.expire(tl)
    out = outcome(tl)
    assert out.status is Status.TIMEOUT and out.status_stage == "tts"
    assert tl.audio_packets == 0 and tl.t_audio_end is None


def test_an_error_after_the_onset_is_delivered_at_once_with_what_was_heard() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, R, 1000.0)
    play(corr, clock, 2.6, R, 100, 4)
    assert corr.on_event(PipelineError("s1", "tts", "aborted: producer closed"), 2.7)
    assert done == [tl] and tl.audio_packets == 4 and tl.t_audio_end is None
    assert outcome(tl).status is Status.ERROR


def test_random_packets_stay_bounded_and_never_raise() -> None:
    corr, done, clock, timers = correlator(listen_sample=1.0)
    rng = random.Random(3)
    for k in range(20_000):
        clock.now = k * 0.001
        corr.on_packet(clock.now, rng.random() < 0.3, rng.getrandbits(32), rng.getrandbits(16), b"x")
    hearing = corr.hearing
    assert hearing.packets == 20_000 and len(hearing._spurts) <= MAX_SPURTS
    assert sum(len(s.payloads or ()) for s in hearing._spurts) <= MAX_SPURTS * 3_000
    assert done == []
