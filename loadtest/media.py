"""Media for one synthetic caller: a paced pre-encoded Opus track out, RTP-level onset detection in.

Send: ``UtteranceTrack.recv()`` hands aiortc ``av.Packet``s that are already Opus, so aiortc packs
them without encoding (FACTS.md: the encoder is what collapses capacity). Packets leave on a fixed
20 ms grid; the send time of each utterance's first and last voiced packet is recorded.

Receive: ``TranslatedAudioMonitor`` sees each RTP packet of the translated-speech consumer as it
arrives, before aiortc's jitter buffer (which adds ~80 ms) and without decoding it; the first packet of
each talk spurt (marker bit, or the first after a silence gap) is an onset.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from loadtest.timeline import UtteranceTimeline

if TYPE_CHECKING:
    from loadtest.fixtures import EncodedClip

FRAME_S = 0.020
SAMPLES_PER_FRAME = 960
TIME_BASE = fractions.Fraction(1, 48000)
ONSET_GAP_S = 0.100
SILENCE_LEVEL = 127  # RFC 6464: -127 dBov


@dataclass
class PlannedUtterance:
    timeline: UtteranceTimeline
    clip: EncodedClip
    on_speech_end: Callable[[UtteranceTimeline], None] | None = None
    start_slot: int = -1
    index: int = 0


@dataclass
class SendStats:
    packets: int = 0
    late_packets: int = 0
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


class UtteranceTrack(MediaStreamTrack):
    """A microphone that speaks fixture clips at planned times and encoded silence in between."""

    kind = "audio"

    def __init__(self, silence: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._silence = silence
        self._clock = clock
        self._t0: float | None = None
        self._slot = 0
        self._queue: deque[PlannedUtterance] = deque()
        self._current: PlannedUtterance | None = None
        self.stats = SendStats()
        self.last_level = SILENCE_LEVEL

    def schedule(self, utterance: PlannedUtterance) -> None:
        """Queue an utterance; it starts at the first 20 ms slot at or after its planned time."""
        self._queue.append(utterance)

    def slot_time(self, slot: int) -> float:
        assert self._t0 is not None
        return self._t0 + slot * FRAME_S

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = self._clock()
        planned = self.slot_time(self._slot)
        delay = planned - self._clock()
        if delay > 0:
            # Pacing to the packet grid (a deadline, not a synchronisation point).
            await asyncio.sleep(delay)
        payload = self._next_payload(planned)
        packet = av.Packet(payload)
        packet.pts = self._slot * SAMPLES_PER_FRAME
        packet.time_base = TIME_BASE
        self._slot += 1
        return packet

    def _next_payload(self, planned: float) -> bytes:
        now = self._clock()
        lateness = now - planned
        self.stats.packets += 1
        self.stats.lateness_s.append(lateness)
        if lateness > 0.010:
            self.stats.late_packets += 1
        if self._current is None and self._queue and self._queue[0].timeline.t_planned <= planned + 1e-9:
            self._current = self._queue.popleft()
            self._current.start_slot = self._slot
        current = self._current
        if current is None:
            self.last_level = SILENCE_LEVEL
            return self._silence
        levels = current.clip.levels
        self.last_level = levels[current.index] if current.index < len(levels) else SILENCE_LEVEL
        return self._utterance_payload(current, now, lateness)

    def attach_sender(self, sender: Any) -> None:
        """Make aiortc write each packet's audio level (RFC 6464), as a browser's microphone does.

        aiortc computes the level only for frames it encodes itself; our packets are pre-encoded, so
        the level of the frame just handed out is put on the encoded frame before it is packetized.
        """
        original = sender._next_encoded_frame

        async def next_encoded_frame(codec: Any) -> Any:
            frame = await original(codec)
            if frame is not None:
                frame.audio_level = -self.last_level  # aiortc negates it into the header
            return frame

        sender._next_encoded_frame = next_encoded_frame

    def _utterance_payload(self, current: PlannedUtterance, now: float, lateness: float) -> bytes:
        index = current.index
        clip = current.clip
        tl = current.timeline
        payload = clip.packets[index]
        if clip.first_voiced <= index <= clip.last_voiced:
            tl.send_lateness.append(lateness)
        if index == clip.first_voiced:
            tl.t_send_start = now
        if index == clip.last_voiced:
            tl.t_speech_end = now
            if current.on_speech_end is not None:
                # After aiortc sends this packet; the stamp above is the send time.
                asyncio.get_running_loop().call_soon(current.on_speech_end, tl)
        current.index += 1
        if current.index >= len(clip.packets):
            self._current = None
        return payload

    @property
    def pending(self) -> int:
        return len(self._queue) + (1 if self._current is not None else 0)


@dataclass(frozen=True)
class Onset:
    """First packet of a talk spurt of translated speech, as it arrived."""

    t_arrival: float
    rtp_timestamp: int
    sequence_number: int
    marker: bool


class TranslatedAudioMonitor:
    """Watches the RTP packets of a translated-speech consumer without decoding them."""

    def __init__(
        self, on_onset: Callable[[Onset], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_onset = on_onset
        self._clock = clock
        self._last_arrival: float | None = None
        self.packets = 0
        self.onsets = 0

    def attach(self, receiver: Any) -> None:
        """Hook an aiortc RTCRtpReceiver: stop its decoder, see packets before its jitter buffer."""
        stop_decoder = getattr(receiver, "_RTCRtpReceiver__stop_decoder", None)
        if stop_decoder is not None:
            stop_decoder()
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.observe(bool(packet.marker), int(packet.timestamp), int(packet.sequence_number))
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    def observe(self, marker: bool, rtp_timestamp: int, sequence_number: int) -> None:
        now = self._clock()
        gap = self._last_arrival is None or now - self._last_arrival > ONSET_GAP_S
        self._last_arrival = now
        self.packets += 1
        if marker or gap:
            self.onsets += 1
            self._on_onset(Onset(now, rtp_timestamp, sequence_number, marker))
