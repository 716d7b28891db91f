"""--listen-sample: which utterances are decoded, and what the decoded translated audio is checked for."""

from __future__ import annotations

import random

import numpy as np
import pytest

from loadtest.fixtures import encode_opus
from loadtest.listening import ListenDecoder, check_payloads, in_order, sampled
from loadtest.media import TranslatedAudioMonitor
from loadtest.timeline import RowContext, to_row
from tests.unit.listen_kit import correlator, play, through_tts, timeline

pytestmark = pytest.mark.unit

RATE = 48_000


def tone(amplitude: float, seconds: float = 1.0, clip: bool = False) -> list[bytes]:
    t = np.arange(int(RATE * seconds)) / RATE
    x = amplitude * np.sin(2 * np.pi * 440 * t)
    if clip:
        x = np.clip(x, -1.0, 1.0)
    return encode_opus(x.astype(np.float32))


def test_the_sample_is_deterministic_and_of_the_asked_size() -> None:
    ids = [f"conv-{k:05d}-{k % 7}" for k in range(20_000)]
    picked = [sampled(i, 0.2) for i in ids]
    assert picked == [sampled(i, 0.2) for i in ids]  # the same answer every time, in any order
    assert 0.18 < sum(picked) / len(ids) < 0.22
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])
    assert all(sampled(i, 0.5) for i in ids if sampled(i, 0.2))  # nested: a larger sample holds a smaller


@pytest.mark.parametrize(
    ("packets", "silent", "clipped", "rms"),
    [
        (tone(0.5), False, False, -9.0),  # a -6 dBFS-peak sine: RMS -9 dBFS
        (tone(0.0), True, False, None),
        (tone(0.0005), True, False, None),  # -69 dBFS: sent, but nothing a listener hears
        (tone(1.6, clip=True), False, True, None),  # hard-clipped at full scale
        (tone(0.9), False, False, -3.9),  # loud, but under full scale: not clipped
    ],
)
def test_decoded_audio_is_checked_for_silence_clipping_and_level(
        packets: list[bytes], silent: bool, clipped: bool, rms: float | None) -> None:
    check = check_payloads(list(enumerate(packets)))
    assert check is not None
    assert (check.silent, check.clipped) == (silent, clipped)
    assert check.samples == len(packets) * 960 and check.undecodable == 0
    if rms is not None:
        assert check.rms_dbfs == pytest.approx(rms, abs=0.6)


def test_payloads_decode_in_sequence_order_across_the_wrap_whatever_their_arrival() -> None:
    packets = tone(0.5, 0.3)
    seqs = [(65_530 + i) & 0xFFFF for i in range(len(packets))]
    pairs = list(zip(seqs, packets, strict=True))
    shuffled = pairs[:1] + random.Random(5).sample(pairs[1:], len(pairs) - 1)
    assert in_order(shuffled) == packets
    assert check_payloads(shuffled) == check_payloads(pairs)


def test_garbage_payloads_count_as_undecodable_and_sound_silent() -> None:
    check = check_payloads([(1, b"\xff" * 3), (2, b"")])
    assert check is not None and check.undecodable == 2 and check.silent and check.samples == 0
    assert check_payloads([]) is None


def test_the_decoder_works_a_few_packets_per_step() -> None:
    decoder = ListenDecoder(list(enumerate(tone(0.5, 0.5))))  # 25 packets
    steps = 0
    while not decoder.step(8):
        steps += 1
        assert steps < 10
    assert steps == 3 and decoder.result().samples == 25 * 960


def ctx() -> RowContext:
    return RowContext("run", "w", 0, 55.0, None, None, None, None, None, None, None, 1)


def test_a_sampled_utterance_is_decoded_once_its_audio_ended_and_its_row_carries_the_check() -> None:
    corr, done, clock, timers = correlator(listen_sample=1.0)
    assert corr.wants_payloads
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    packets = tone(1.6, 0.4, clip=True)  # 20 packets
    play(corr, clock, 2.6, 7_000, 10, 2, payloads=packets)  # before the event: kept while unclaimed
    through_tts(corr, "s1", 2.63, 7_000, 400.0)
    play(corr, clock, 2.64, 7_000 + 960 * 2, 12, 18, payloads=packets[2:])
    assert done == []  # every packet came: the audio ended, the check runs a few packets per turn
    assert timers.pending >= 1
    timers.run_pending()
    assert done == [tl]
    row = to_row(tl, ctx())
    assert row.listen_checked is True and row.listen_clipped is True and row.listen_silent is False
    assert row.listen_rms_dbfs is not None and row.listen_rms_dbfs > -6.0
    assert row.audio_packets == 20 and row.status == "ok"


def test_unsampled_utterances_keep_no_payload_and_are_not_checked() -> None:
    corr, done, clock, timers = correlator(listen_sample=0.0)
    assert not corr.wants_payloads
    monitor = TranslatedAudioMonitor(corr.on_packet, clock, keep_payloads=corr.wants_payloads)
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    through_tts(corr, "s1", 2.5, 7_000, 100.0)
    for i in range(5):
        clock.now = 2.6 + 0.02 * i
        monitor.observe(i == 0, 7_000 + 960 * i, 40 + i)
    assert done == [tl] and monitor.packets == 5
    row = to_row(tl, ctx())
    assert row.listen_checked is False and row.listen_silent is None and row.listen_rms_dbfs is None


def test_the_sample_follows_the_utterance_id() -> None:
    ids = [f"c-{k}" for k in range(1, 40)]
    chosen = next(k for k in range(1, 40) if sampled(ids[k - 1], 0.5))
    skipped = next(k for k in range(1, 40) if not sampled(ids[k - 1], 0.5))
    for seq, expect_checked in ((chosen, True), (skipped, False)):
        corr, done, clock, timers = correlator(listen_sample=0.5)
        tl = timeline(seq, send_start=1.0, speech_end=2.0)
        corr.expect(tl)
        through_tts(corr, "s1", 2.5, 7_000, 100.0)
        play(corr, clock, 2.6, 7_000, 1, 5, payloads=tone(0.5, 0.1))
        timers.run_pending()
        assert done == [tl] and tl.listen_checked is expect_checked


class FakePacket:
    def __init__(self, seq: int, marker: bool) -> None:
        self.marker, self.timestamp, self.sequence_number, self.payload = marker, 960 * seq, seq, bytes([seq])


class FakeReceiver:
    def __init__(self) -> None:
        self.forwarded: list[int] = []

    async def _handle_rtp_packet(self, packet: FakePacket, arrival_time_ms: int) -> None:
        self.forwarded.append(packet.sequence_number)


async def test_the_monitor_passes_every_packet_and_the_payload_only_when_asked() -> None:
    seen: list[tuple[float, bool, int, int, bytes | None]] = []
    times = iter([1.0, 1.02, 1.5, 1.52])
    monitor = TranslatedAudioMonitor(lambda *p: seen.append(p), lambda: next(times))
    receiver = FakeReceiver()
    monitor.attach(receiver)
    await receiver._handle_rtp_packet(FakePacket(1, True), 0)
    await receiver._handle_rtp_packet(FakePacket(2, False), 0)
    monitor.keep_payloads = True
    await receiver._handle_rtp_packet(FakePacket(3, False), 0)
    await receiver._handle_rtp_packet(FakePacket(4, False), 0)
    assert receiver.forwarded == [1, 2, 3, 4]  # aiortc still gets every packet
    assert seen == [(1.0, True, 960, 1, None), (1.02, False, 1920, 2, None),
                    (1.5, False, 2880, 3, b"\x03"), (1.52, False, 3840, 4, b"\x04")]
    assert monitor.packets == 4
