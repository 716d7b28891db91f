"""What a sender keeps of its sent RTP packets for retransmission, without a collector-tracked object each.

aiortc's ``RTCRtpSender`` keeps the last 128 ``RtpPacket`` objects it sent (2.56 s of audio at 50
packets/s) so it can answer a NACK. Each is four objects the cyclic garbage collector tracks (the
packet, its header extensions, its CSRC list, the audio-level tuple), and each lives exactly long
enough to be promoted out of the youngest generation and freed from an older one. CPython starts a
young collection when allocations minus deallocations pass 700, so that churn cancels out: at 100
callers young collections ran only every ~2 s and found 30 000-65 000 live objects each, 80 % of them
history packets (measured with bench/looptrace.py), and every one of those collections stopped the
loop for 20-60 ms: every caller's packets went out that much late.

``RtpHistory`` keeps the same fields in 128 preallocated slots, overwritten in place: a sent packet
allocates nothing that outlives it. A NACK gets an ``RtpPacket`` rebuilt from its slot, identical on
the wire to the one sent.
"""

from __future__ import annotations

from typing import Any

from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket

# aiortc 1.16's private name for the history (pinned in pyproject.toml).
HISTORY_ATTRIBUTE = "_RTCRtpSender__rtp_history"


class _Slot:
    __slots__ = ("abs_send_time", "level", "marker", "mid", "payload", "payload_type", "sequence_number",
                 "ssrc", "timestamp", "voice")

    def __init__(self) -> None:
        self.sequence_number = -1  # no packet yet
        self.timestamp = 0
        self.marker = 0
        self.payload_type = 0
        self.ssrc = 0
        self.payload = b""
        self.abs_send_time: int | None = None
        self.mid: str | None = None
        self.voice: bool | None = None  # audio level extension (RFC 6464): None when absent
        self.level = 0


class RtpHistory:
    """The mapping aiortc's sender uses for its history (``history[seq % size] = packet``, ``.get``)."""

    def __init__(self, size: int = RTP_HISTORY_SIZE) -> None:
        self._slots = [_Slot() for _ in range(size)]

    def __setitem__(self, index: int, packet: RtpPacket) -> None:
        slot = self._slots[index]
        slot.sequence_number = packet.sequence_number
        slot.timestamp = packet.timestamp
        slot.marker = packet.marker
        slot.payload_type = packet.payload_type
        slot.ssrc = packet.ssrc
        slot.payload = packet.payload
        extensions = packet.extensions
        slot.abs_send_time = extensions.abs_send_time
        slot.mid = extensions.mid
        if extensions.audio_level is None:
            slot.voice = None
        else:
            slot.voice, slot.level = extensions.audio_level

    def get(self, index: int, default: RtpPacket | None = None) -> RtpPacket | None:
        if not 0 <= index < len(self._slots):
            return default
        slot = self._slots[index]
        if slot.sequence_number < 0:
            return default
        packet = RtpPacket(payload_type=slot.payload_type, marker=slot.marker,
                           sequence_number=slot.sequence_number, timestamp=slot.timestamp, ssrc=slot.ssrc,
                           payload=slot.payload)
        packet.extensions.abs_send_time = slot.abs_send_time
        packet.extensions.mid = slot.mid
        if slot.voice is not None:
            packet.extensions.audio_level = (slot.voice, slot.level)
        return packet


def install(sender: Any) -> bool:
    """Give an aiortc sender an ``RtpHistory``; False (its own history left) on an aiortc without one.

    Only for senders whose packets carry no CSRCs, padding or header extensions beyond abs-send-time,
    mid and audio level: what aiortc's sender sets on the audio it sends."""
    if not isinstance(getattr(sender, HISTORY_ATTRIBUTE, None), dict):
        return False
    setattr(sender, HISTORY_ATTRIBUTE, RtpHistory())
    return True
