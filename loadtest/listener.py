"""A listener's peer: its signaling session, what it hears of the room and the one party it times.

It consumes the producer the profile's ``producers.consume`` rules pick -- the timed party's translated
speech in this listener's language (mode "pipeline"), or that party's own microphone (mode "sfu") --
and turns the result events and the packets it receives into that party's utterance timelines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pymediasoup.rtp_parameters import RtpParameters

from loadtest.announcements import Announcements
from loadtest.cast import Ear
from loadtest.events import Correlator, ResultEvent
from loadtest.ice import TurnRelay
from loadtest.inbox import Inbox
from loadtest.media import TranslatedAudioMonitor
from loadtest.session import PeerSession
from loadtest.signaling import SignalingError
from loadtest.timeline import UtteranceTimeline
from loadtest.transit import TransitCorrelator, VoicedArrivalMonitor
from loadtest.transport import create_transport, load_device, receiver_of

if TYPE_CHECKING:
    from loadtest.impairments.observe import NetworkWatch

Complete = Callable[[UtteranceTimeline], None]


class Listener:
    def __init__(self, ear: Ear, session: PeerSession, mode: str, on_failure: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, matching: str = "order",
                 listen_sample: float = 0.0) -> None:
        self.ear = ear
        self.session = session
        self.mode = mode
        self.matching = matching
        self.listen_sample = listen_sample
        self.node: str | None = None
        self.mic_id: str | None = None  # the timed party's microphone producer
        self.correlator: Correlator | None = None
        self.transit: TransitCorrelator | None = None
        self.consumed = asyncio.Event()
        self.stats: dict[str, float | None] = {"jitter_ms": None, "packets_lost": None, "rtt_ms": None,
                                               "packets_received": None}
        self.announcements = Announcements(session.profile.producers)
        self.inbox = Inbox(session.profile, self.announcements, self._route_event, self._on_announced, clock)
        self.monitor = TranslatedAudioMonitor(self._on_packet, clock)
        self.voiced = VoicedArrivalMonitor(self._on_voiced, clock)
        self.on_onset_seen: Callable[[], None] | None = None  # barge-in: an utterance's audio onset is timed
        self._clock = clock
        self._on_failure = on_failure
        self._transport: Any = None
        self._caps: Any = None
        self._receiver: Any = None
        self._tts_producer: str | None = None

    def listen(self) -> None:
        """Hear the server's announcements and result events (once the channel is connected)."""
        self.inbox.register(self.session.channel.on)

    async def open(self, join: dict[str, Any], relay: TurnRelay | None, network: NetworkWatch | None) -> None:
        device = await load_device(join["rtp_capabilities"], [])
        self._caps = device.rtpCapabilities.model_dump(exclude_none=True)
        self._transport = await create_transport(self.session, device, "recv", relay, self._clock, network)
        if join.get("producers"):
            self.inbox.announce(join["producers"])

    def time_party(self, mic_id: str, complete: Complete) -> None:
        """Time the utterances of the party whose microphone is ``mic_id`` (then consume_wanted)."""
        self.mic_id = mic_id
        if self.mode == "sfu":
            self.transit = TransitCorrelator(complete)
        else:
            self.correlator = Correlator(mic_id, complete, self._clock, language=self.ear.language,
                                         matching=self.matching, listen_sample=self.listen_sample)
            self.monitor.keep_payloads = self.correlator.wants_payloads
            self.correlator.on_onset = self._onset_timed

    def expect(self, tl: UtteranceTimeline) -> Callable[[UtteranceTimeline], None] | None:
        """An utterance of the timed party was scheduled; its speech-end hook (mode "sfu"), if any."""
        if self.transit is not None:
            self.transit.expect(tl)
            return self.transit.on_speech_end
        if self.correlator is not None:
            self.correlator.expect(tl)
        return None

    def expire(self, tl: UtteranceTimeline) -> None:
        if self.correlator is not None:
            self.correlator.expire(tl)
        if self.transit is not None:
            self.transit.expire(tl)

    # ---- consuming -----------------------------------------------------------------------------

    def _route_event(self, event: ResultEvent, t: float) -> bool:
        return self.correlator.on_event(event, t) if self.correlator is not None else False

    def _on_announced(self) -> None:
        if self.mic_id is not None:
            asyncio.get_running_loop().create_task(self.consume_wanted())

    async def consume_wanted(self) -> None:
        variables = {**self.session.variables, "mic_producer": self.mic_id or ""}
        try:
            for pid in self.announcements.wanted(variables):
                self.announcements.consumed.add(pid)
                await self._consume(pid)
        except SignalingError as exc:
            self._on_failure(f"consuming the announced producer failed: {exc}")

    async def _consume(self, producer_id: str) -> None:
        info = await self.session.request("consume", transport_id=self._transport.id,
                                          producer_id=producer_id, rtp_capabilities=self._caps)
        consumer = await self._transport.consume(
            id=info["id"], producerId=info["producer_id"], kind=info["kind"],
            rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
        self._receiver = consumer.rtpReceiver or receiver_of(self._transport, consumer)
        self._tts_producer = str(info["producer_id"])
        if self.correlator is not None:
            self.correlator.tts_producer_id = self._tts_producer  # events of other producers are not ours
        (self.voiced if self.mode == "sfu" else self.monitor).attach(self._receiver)
        if self.session.profile.has_request("resume_consumer"):
            await self.session.request("resume_consumer", consumer_id=info["id"])
        self.consumed.set()

    def describe_wait(self) -> str:
        return self.announcements.describe()

    # ---- hearing -------------------------------------------------------------------------------

    def _on_packet(self, t: float, marker: bool, rtp_timestamp: int, sequence_number: int,
                   payload: bytes | None) -> None:
        if self.correlator is not None:
            self.correlator.on_packet(t, marker, rtp_timestamp, sequence_number, payload)

    def _onset_timed(self, _tl: UtteranceTimeline) -> None:
        if self.on_onset_seen is not None:
            self.on_onset_seen()

    def _on_voiced(self, t_arrival: float) -> None:
        if self.transit is not None:
            self.transit.on_voiced(t_arrival)

    async def refresh_stats(self) -> None:
        """Jitter and loss of what this listener receives."""
        if self._receiver is not None:
            for report in (await self._receiver.getStats()).values():
                if getattr(report, "type", "") == "inbound-rtp":
                    self.stats["jitter_ms"] = report.jitter / 48.0  # RTP units at 48 kHz
                    self.stats["packets_lost"] = float(report.packetsLost)
                    self.stats["packets_received"] = float(report.packetsReceived)

    async def close(self) -> None:
        if self.correlator is not None:
            self.correlator.close()
        if self._transport is not None:
            try:
                await asyncio.wait_for(self._transport.close(), 5)
            except Exception:  # noqa: BLE001 -- closing a transport the server already dropped
                pass
        await self.session.close()
