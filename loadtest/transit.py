"""SFU transit (`mode = "sfu"`): when the speaker's own voice reaches the listener through the SFU.

A plain SFU has no pipeline to time; what it adds is the trip of each packet through the server. The
listener consumes the speaker's producer and watches its packets at the RTP level (before aiortc's jitter
buffer, without decoding). The audio level every packet carries (RFC 6464, as a browser's microphone
sends it) says which packets are speech: a packet is voiced when its level is below `VOICED_LEVEL`,
the same boundary the fixtures used to mark their first and last voiced packet. An utterance's transit is
the arrival of its first voiced packet at the listener minus its send time at the speaker, one clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.fixtures import VOICED_DBFS
from loadtest.timeline import UtteranceTimeline

VOICED_LEVEL = int(-VOICED_DBFS)  # RFC 6464 level (-dBov): below this a packet is speech


class VoicedArrivalMonitor:
    """Hooks an aiortc receiver; reports the arrival time of every voiced packet."""

    def __init__(self, on_voiced: Callable[[float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._on_voiced = on_voiced
        self._clock = clock
        self.packets = 0
        self.voiced = 0
        self.without_level = 0

    def attach(self, receiver: Any) -> None:
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.observe(getattr(packet.extensions, "audio_level", None))
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    def observe(self, audio_level: tuple[bool, int] | None) -> None:
        now = self._clock()
        self.packets += 1
        if audio_level is None:
            self.without_level += 1
            return
        if audio_level[1] < VOICED_LEVEL:
            self.voiced += 1
            self._on_voiced(now)


@dataclass
class TransitCorrelator:
    """Matches voiced arrivals to the utterances being spoken, in order; one clock for both ends."""

    on_complete: Callable[[UtteranceTimeline], None]
    _awaiting: deque[UtteranceTimeline] = field(default_factory=deque)

    def expect(self, tl: UtteranceTimeline) -> None:
        self._awaiting.append(tl)

    def on_voiced(self, t_arrival: float) -> None:
        # The first voiced packet that arrives after the oldest waiting utterance began to be sent is its
        # first; later voiced packets of the same utterance find it already matched.
        for tl in self._awaiting:
            if tl.t_send_start is not None and tl.t_sfu_arrival is None and t_arrival >= tl.t_send_start:
                tl.t_sfu_arrival = t_arrival
                self._maybe_complete(tl)
                return

    def on_speech_end(self, tl: UtteranceTimeline) -> None:
        self._maybe_complete(tl)

    def _maybe_complete(self, tl: UtteranceTimeline) -> None:
        if tl.is_complete() and tl in self._awaiting:
            self._awaiting.remove(tl)
            self.on_complete(tl)

    def expire(self, tl: UtteranceTimeline) -> None:
        if tl in self._awaiting:
            self._awaiting.remove(tl)
