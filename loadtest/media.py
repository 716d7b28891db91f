"""Media for one synthetic caller: a paced pre-encoded Opus track out, translated RTP packets in.

Send: ``UtteranceTrack`` hands aiortc packets that are already Opus, so aiortc packs them without
encoding (measured: one process holds ~8 sender/receiver pairs per core with an Opus encoder per
client, ~100 with pre-encoded packets and no decoder: the encoder is what collapses capacity);
``attach_sender`` feeds the payloads to the sender directly, ``recv()`` gives the same as
``av.Packet``s. Packets leave on a fixed 20 ms grid, the grids of all tracks of a loop paced by one
shared timer; the send time of each utterance's first and last voiced packet is recorded.

Receive: ``TranslatedAudioMonitor`` hands each RTP packet of the translated-speech consumer on as it
arrives (arrival time, marker, RTP timestamp, sequence number; the payload only when asked to), before
aiortc's jitter buffer (which adds ~80 ms) and without decoding it (loadtest/hearing.py assigns packets
to utterances and times their onsets).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import RTCEncodedFrame

from loadtest.timeline import UtteranceTimeline

if TYPE_CHECKING:
    from loadtest.fixtures import EncodedClip

FRAME_S = 0.020
SAMPLES_PER_FRAME = 960
TIME_BASE = fractions.Fraction(1, 48000)
SILENCE_LEVEL = 127  # RFC 6464: -127 dBov
PACING_GRID_S = 0.002  # tracks' 20 ms grids are aligned to this; one timer per occupied instant


class Pacer:
    """Wakes every track of one event loop that is due at the same instant with one timer.

    One ``asyncio.sleep`` per packet per track costs a timer-heap entry each and wakes the loop at
    scattered instants (each wake-up can lose the CPU to the process it just sent to). Tracks whose
    packet grids start on a multiple of ``grid_s`` share their due instants, so one ``call_at`` serves
    all of them. New tracks start on the least used of the frame's grid phases (``start``): at 100
    tracks a 20 ms frame on a 2 ms grid wakes 10 of them per instant, not a chance pile of 15-20
    whose sends queue behind each other.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, grid_s: float = PACING_GRID_S,
                 frame_s: float = FRAME_S) -> None:
        # Weak: the registry below is keyed weakly by the loop, and a value holding its key would keep
        # every finished run's loop alive.
        self._loop = weakref.ref(loop)
        self.grid_s = grid_s
        self.phases = max(1, round(frame_s / grid_s))
        self._tracks_by_phase = [0] * self.phases
        self._due: dict[int, list[asyncio.Future[None]]] = {}

    def start(self, t: float) -> tuple[float, int]:
        """A new track's first instant at or after ``t`` on the least used phase, and that phase."""
        first = math.ceil(t / self.grid_s)
        tick = min(range(first, first + self.phases),
                   key=lambda k: (self._tracks_by_phase[k % self.phases], k))
        phase = tick % self.phases
        self._tracks_by_phase[phase] += 1
        return tick * self.grid_s, phase

    def release(self, phase: int) -> None:
        """A track that ``start`` placed on ``phase`` stopped."""
        self._tracks_by_phase[phase] = max(0, self._tracks_by_phase[phase] - 1)

    @property
    def tracks_by_phase(self) -> tuple[int, ...]:
        return tuple(self._tracks_by_phase)

    def wait_until(self, when: float) -> asyncio.Future[None]:
        """A future resolved at ``when`` (a grid instant, loop time)."""
        tick = round(when / self.grid_s)
        loop = self._loop()
        assert loop is not None  # called from a task on that loop
        waiter = loop.create_future()
        waiters = self._due.get(tick)
        if waiters is None:
            self._due[tick] = [waiter]
            loop.call_at(when, self._fire, tick)
        else:
            waiters.append(waiter)
        return waiter

    def _fire(self, tick: int) -> None:
        for waiter in self._due.pop(tick, ()):
            if not waiter.done():  # a cancelled sender leaves a cancelled waiter
                waiter.set_result(None)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer_for(loop: asyncio.AbstractEventLoop) -> Pacer:
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer(loop)
    return pacer


@dataclass
class PlannedUtterance:
    timeline: UtteranceTimeline
    clip: EncodedClip
    on_speech_end: Callable[[UtteranceTimeline], None] | None = None
    # The same speech timed at further listeners (a group, a two-way party): stamped alike.
    also: tuple[tuple[UtteranceTimeline, Callable[[UtteranceTimeline], None] | None], ...] = ()
    start_slot: int = -1
    index: int = 0


# Per-packet send lateness kept per track: the last minute at 50 packets/s (for bench/capacity.py's
# windows). Rows carry their own utterance's lateness; a longer memory here only grows the process
# (100 000 per track grew a 37-caller soak by 265 MB/hour for its first half hour).
LATENESS_KEPT = 3000


@dataclass
class SendStats:
    packets: int = 0
    late_packets: int = 0
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENESS_KEPT))


class UtteranceTrack(MediaStreamTrack):
    """A microphone that speaks fixture clips at planned times and encoded silence in between."""

    kind = "audio"

    def __init__(self, silence: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._silence = silence
        self._clock = clock
        self._t0: float | None = None
        self._pacer: Pacer | None = None
        self._phase: int | None = None  # the pacer's grid phase this track holds
        self._slot = 0
        self._queue: deque[PlannedUtterance] = deque()
        self._current: PlannedUtterance | None = None
        self.stats = SendStats()
        self.last_level = SILENCE_LEVEL

    def stop(self) -> None:
        if self._pacer is not None and self._phase is not None:
            self._pacer.release(self._phase)
            self._phase = None
        super().stop()

    def schedule(self, utterance: PlannedUtterance) -> None:
        """Queue an utterance; it starts at the first 20 ms slot at or after its planned time."""
        self._queue.append(utterance)

    def slot_time(self, slot: int) -> float:
        assert self._t0 is not None
        return self._t0 + slot * FRAME_S

    async def recv(self) -> av.Packet:
        payload, timestamp = await self.next_payload()
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet

    async def next_payload(self) -> tuple[bytes, int]:
        """The next packet's Opus payload and RTP timestamp (48 kHz units), at its planned send time."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            loop = asyncio.get_running_loop()
            # The shared pacer runs on loop time, which is time.monotonic(): only for that clock.
            self._pacer = pacer_for(loop) if self._clock is time.monotonic else None
            if self._pacer is not None:
                self._t0, self._phase = self._pacer.start(self._clock())
            else:
                self._t0 = self._clock()
        planned = self.slot_time(self._slot)
        delay = planned - self._clock()
        if delay > 0:
            # Pacing to the packet grid (a deadline, not a synchronisation point).
            if self._pacer is not None:
                await self._pacer.wait_until(planned)
            else:
                await asyncio.sleep(delay)
        payload = self._next_payload(planned)
        timestamp = self._slot * SAMPLES_PER_FRAME
        self._slot += 1
        return payload, timestamp

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
        """Hand aiortc's sender our payloads directly, each with its audio level (RFC 6464).

        aiortc computes the level only for frames it encodes itself; our packets are pre-encoded, so
        the level of the frame just handed out goes on the encoded frame, as a browser's microphone
        has it. What aiortc 1.16 does with a pre-encoded ``recv()`` result is wrap ``bytes(packet)``
        and its pts (converted through Fractions) in an RTCEncodedFrame; doing that here skips an
        av.Packet, the conversion and a coroutine layer for every packet of every caller. The RTP
        payloads and timestamps are the same as through ``recv()``.
        """

        async def next_encoded_frame(codec: Any) -> RTCEncodedFrame | None:
            payload, timestamp = await self.next_payload()
            if not sender._enabled:
                return None  # as aiortc does: a disabled sender drops the frame
            return RTCEncodedFrame([payload], timestamp, -self.last_level)  # aiortc negates the level

        sender._next_encoded_frame = next_encoded_frame

    def _utterance_payload(self, current: PlannedUtterance, now: float, lateness: float) -> bytes:
        index = current.index
        clip = current.clip
        payload = clip.packets[index]
        voiced = clip.first_voiced <= index <= clip.last_voiced
        if voiced:
            for tl, on_speech_end in ((current.timeline, current.on_speech_end), *current.also):
                tl.send_lateness.append(lateness)
                if index == clip.first_voiced:
                    tl.t_send_start = now
                if index == clip.last_voiced:
                    tl.t_speech_end = now
                    if on_speech_end is not None:
                        # After aiortc sends this packet; the stamp above is the send time.
                        asyncio.get_running_loop().call_soon(on_speech_end, tl)
        current.index += 1
        if current.index >= len(clip.packets):
            self._current = None
        return payload

    @property
    def pending(self) -> int:
        return len(self._queue) + (1 if self._current is not None else 0)


PacketSink = Callable[[float, bool, int, int, "bytes | None"], None]  # (t, marker, rtp ts, seq, payload)


class TranslatedAudioMonitor:
    """Hands every RTP packet of a translated-speech consumer to ``on_packet`` without decoding it.

    ``keep_payloads``: pass each packet's payload (a reference to aiortc's own bytes, no copy) for
    ``--listen-sample``; else None."""

    def __init__(self, on_packet: PacketSink, clock: Callable[[], float] = time.monotonic,
                 keep_payloads: bool = False) -> None:
        self._on_packet = on_packet
        self._clock = clock
        self.keep_payloads = keep_payloads
        self.packets = 0

    def attach(self, receiver: Any) -> None:
        """Hook an aiortc RTCRtpReceiver: stop its decoder, see packets before its jitter buffer."""
        stop_decoder = getattr(receiver, "_RTCRtpReceiver__stop_decoder", None)
        if stop_decoder is not None:
            stop_decoder()  # a no-op unless the receiver already runs
            # aiortc starts the decoder thread in receive(), once the transport has connected: that is
            # normally after a consumer is attached, so the stop above found nothing to stop. Left
            # running, the thread decodes every translated packet (GIL hand-offs on the media loop)
            # and queues the frames on a track nobody reads.
            original_receive = receiver.receive

            async def receive(parameters: Any) -> None:
                await original_receive(parameters)
                stop_decoder()

            receiver.receive = receive
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.observe(bool(packet.marker), int(packet.timestamp), int(packet.sequence_number),
                         packet.payload if self.keep_payloads else None)
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    def observe(self, marker: bool, rtp_timestamp: int, sequence_number: int,
                payload: bytes | None = None) -> None:
        now = self._clock()
        self.packets += 1
        self._on_packet(now, marker, rtp_timestamp, sequence_number, payload)
