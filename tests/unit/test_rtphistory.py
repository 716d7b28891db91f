"""The compact RTP history in aiortc's real sender: retransmissions are byte-identical to what was sent,
and sent packets do not stay alive for it."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from aiortc import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket

from loadtest import rtphistory

pytestmark = pytest.mark.unit

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=100)
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    RTCRtpHeaderExtensionParameters(id=10, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
]


class RecordingTransport:
    """What the sender needs of its DTLS transport here: a state and somewhere to send."""

    state = "new"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


def sender_sending(frames: int, compact: bool) -> tuple[RTCRtpSender, RecordingTransport]:
    transport = RecordingTransport()
    sender = RTCRtpSender(AudioStreamTrack(), transport)  # type: ignore[arg-type]
    if compact:
        assert rtphistory.install(sender), "aiortc's sender no longer has the history this replaces"
    sender._RTCRtpSender__rtp_header_extensions_map.configure(  # type: ignore[attr-defined]
        RTCRtpParameters(codecs=[OPUS], headerExtensions=EXTENSIONS))
    sender._RTCRtpSender__mid = "0"  # type: ignore[attr-defined]
    remaining = iter(range(frames))

    async def next_encoded_frame(codec: Any) -> RTCEncodedFrame:
        n = next(remaining, None)
        if n is None:
            raise MediaStreamError  # ends aiortc's send loop as a stopped track does
        # Voiced and silent frames alternate: both forms of the audio-level extension.
        return RTCEncodedFrame([bytes([n % 256]) * (20 + n % 7)], n * 960, -(n % 2) * 40 - 30)

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    return sender, transport


def sequence_number(data: bytes) -> int:
    return int.from_bytes(data[2:4], "big")


async def run_and_retransmit(compact: bool) -> tuple[list[bytes], list[bytes]]:
    frames = RTP_HISTORY_SIZE + 40
    sender, transport = sender_sending(frames, compact)
    await sender._run_rtp(OPUS)
    sent = list(transport.sent)
    assert len(sent) == frames
    transport.sent.clear()
    # The last RTP_HISTORY_SIZE are kept; the one before them was overwritten.
    for data in (sent[-1], sent[-RTP_HISTORY_SIZE], sent[-RTP_HISTORY_SIZE - 1], sent[-7]):
        await sender._retransmit(sequence_number(data))
    return sent, transport.sent


async def test_retransmissions_are_the_packets_sent_byte_for_byte() -> None:
    sent, retransmitted = await run_and_retransmit(compact=True)
    assert retransmitted == [sent[-1], sent[-RTP_HISTORY_SIZE], sent[-7]]
    # The control: aiortc's own history answers the same NACKs the same way.
    own_sent, own_retransmitted = await run_and_retransmit(compact=False)
    assert own_retransmitted == [own_sent[-1], own_sent[-RTP_HISTORY_SIZE], own_sent[-7]]


async def test_sent_packets_are_not_kept_alive() -> None:
    def live_packets() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, RtpPacket))

    base = live_packets()
    compact, _ = sender_sending(RTP_HISTORY_SIZE + 40, compact=True)
    await compact._run_rtp(OPUS)
    assert live_packets() == base
    own, _ = sender_sending(RTP_HISTORY_SIZE + 40, compact=False)
    await own._run_rtp(OPUS)
    assert live_packets() == base + RTP_HISTORY_SIZE  # what the compact history saves
    del compact, own


def test_an_empty_or_foreign_slot_is_no_packet() -> None:
    history = rtphistory.RtpHistory(size=4)
    assert history.get(2) is None
    assert history.get(9) is None
    packet = RtpPacket(payload_type=111, marker=1, sequence_number=6, timestamp=42, ssrc=7, payload=b"abc")
    history[6 % 4] = packet
    again = history.get(2)
    assert again is not None
    assert (again.sequence_number, again.timestamp, again.marker, again.payload_type, again.ssrc,
            again.payload, again.extensions.audio_level) == (6, 42, 1, 111, 7, b"abc", None)


def test_install_leaves_a_sender_without_the_history_alone() -> None:
    class Other:
        pass

    other = Other()
    assert not rtphistory.install(other)
    assert not hasattr(other, rtphistory.HISTORY_ATTRIBUTE)
