"""PipelineClient: one synthetic conversation — a speaker and a listener in one room, one clock.

The speaker publishes fixture speech on a planned timetable (open model: a slow reply never delays the
next utterance); the listener consumes what the profile's mode times — the translated speech and the
result events (mode "pipeline"), or the speaker's own voice through the SFU (mode "sfu"). Every
utterance ends in exactly one status, delivered once to ``on_utterance``; a conversation that fails after
its transport connected still delivers one error row carrying the connect time, and a connection the
server drops ends every pending utterance as an error at the stage it was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymediasoup.rtp_parameters import RtpParameters

from loadtest.announcements import Announcements
from loadtest.credentials import Credentials
from loadtest.events import Correlator, ResultEvent
from loadtest.fixtures import EncodedClip
from loadtest.ice import TurnRelay
from loadtest.inbox import Inbox
from loadtest.linkwatch import wait_link, watch_link
from loadtest.media import PlannedUtterance, TranslatedAudioMonitor, UtteranceTrack
from loadtest.profile import SignalingProfile
from loadtest.session import Party, PeerSession
from loadtest.signaling import SignalingError
from loadtest.timeline import STALLED_STAGE, UtteranceTimeline
from loadtest.transit import TransitCorrelator, VoicedArrivalMonitor
from loadtest.transport import answer_produce, create_transport, load_device

if TYPE_CHECKING:
    from loadtest.impairments.observe import NetworkWatch

log = logging.getLogger(__name__)
START_LEAD_S = 0.5
SCHEDULE_AHEAD_S = 1.0


def _receiver_of(transport: Any, consumer: Any) -> Any:
    # pymediasoup 1.5.0 builds its Consumer without the RTCRtpReceiver it got from the handler.
    transceiver = transport._handler._mapMidTransceiver.get(consumer.localId)
    if transceiver is None:
        raise SignalingError(f"no transceiver for consumer {consumer.id}")
    return transceiver.receiver


@dataclass(frozen=True)
class ClientOptions:
    url: str
    profile: SignalingProfile
    ssl_context: ssl.SSLContext | bool
    connect_timeout_s: float = 15.0
    request_timeout_s: float = 10.0
    response_timeout_s: float = 10.0
    source_language: str = "en"
    target_language: str = "es"
    credentials: Credentials = field(default_factory=Credentials)
    relay: TurnRelay | None = None  # relay-only: every transport goes through this TURN server
    # The listener's signaling URL when it differs from the speaker's (`url`): e.g. each peer on its own
    # gateway replica. None: both peers use `url`.
    listener_url: str | None = None


@dataclass(frozen=True)
class ScheduledUtterance:
    fixture_id: str
    clip: EncodedClip
    offset_s: float  # planned start, relative to the conversation's first slot


@dataclass
class ConversationResult:
    conversation: str
    connect_ms: float | None = None
    error: str | None = None
    utterances: int = 0
    handled_events: int = 0  # server messages to the listener: handled + malformed + unmatched = received
    malformed_events: int = 0
    unmatched_events: int = 0
    translated_packets: int = 0
    speaker_node: str | None = None  # the gateway replica each peer joined (join answer's `node`)
    listener_node: str | None = None
    reconnects: int = 0  # the caller's successful reconnects before this conversation (conversation.py)


UtteranceSink = Callable[[UtteranceTimeline, "PipelineClient"], None]
_ids = itertools.count(1)


class PipelineClient:
    def __init__(self, options: ClientOptions, silence: bytes, on_utterance: UtteranceSink,
                 conversation: str | None = None, clock: Callable[[], float] = time.monotonic,
                 caller: int = 0, network: NetworkWatch | None = None) -> None:
        self.options = options
        self.mode = options.profile.mode
        self.conversation = conversation or f"conv-{uuid.uuid4().hex[:8]}-{next(_ids)}"
        self.caller = caller
        self.network = network  # the caller's impaired network (loadtest/impairments), when the run has one
        self.result = ConversationResult(self.conversation)
        self._clock = clock
        self._on_utterance = on_utterance
        self._track = UtteranceTrack(silence, clock)
        self._speaker: PeerSession | None = None
        self._listener: PeerSession | None = None
        self._announcements = Announcements(options.profile.producers)
        self._inbox = Inbox(options.profile, self._announcements, self._route_event, self._on_announced,
                            clock)
        self._mic_id: str | None = None
        self._recv_transport: Any = None
        self._send_transport: Any = None
        self._receiver: Any = None
        self._rtp_sender: Any = None
        self._listener_caps: Any = None
        self._consumed = asyncio.Event()
        self._correlator: Correlator | None = None
        self._transit: TransitCorrelator | None = None
        self._monitor = TranslatedAudioMonitor(self._on_onset, clock)
        self._voiced = VoicedArrivalMonitor(self._on_voiced, clock)
        self._pending: dict[str, UtteranceTimeline] = {}
        self._all_done = asyncio.Event()
        self._broken = asyncio.Event()
        self._consume_error: str | None = None
        self.stats: dict[str, float | None] = {"jitter_ms": None, "packets_lost": None, "rtt_ms": None,
                                               "packets_received": None}

    # ---- connect -------------------------------------------------------------------------------

    def _session(self, role: str) -> PeerSession:
        o = self.options
        party = Party(self.conversation, role, self.caller, o.source_language, o.target_language)
        url = o.listener_url if role == "listener" and o.listener_url else o.url
        return PeerSession.open(url, o.profile, o.ssl_context, o.request_timeout_s, party, o.credentials)

    async def connect(self) -> None:
        """Speaker and listener join; the listener consumes what the mode times; sets connect_ms.

        A failure after the send transport connected is delivered as one error utterance carrying the
        connect time (it was measured), then raised."""
        t_start = self._clock()
        self._speaker, self._listener = self._session("speaker"), self._session("listener")
        timeout = self.options.connect_timeout_s
        await asyncio.gather(self._speaker.connect(timeout), self._listener.connect(timeout))
        for session in (self._speaker, self._listener):
            session.channel.on_lost(self._on_lost)
        self._inbox.register(self._listener.channel.on)
        listener_join = await self._join(self._listener)
        speaker_join = await self._join(self._speaker)
        self.result.speaker_node = _node(speaker_join)
        self.result.listener_node = _node(listener_join)
        await self._open_listener(listener_join)
        connected = await self._open_speaker(speaker_join)
        self.result.connect_ms = (connected - t_start) * 1000.0
        try:
            await self._await_consumer(timeout)
        except SignalingError as exc:
            self._deliver_failure(str(exc), "connect")
            raise

    async def _join(self, session: PeerSession) -> dict[str, Any]:
        answer = await session.join()
        if "rtp_capabilities" not in answer:
            role = str(session.variables["role"])
            steps = ", ".join(session.profile.steps(role))
            raise SignalingError(f"the {role}'s join steps ({steps}) gave no router RTP capabilities: "
                                 "name them 'rtp_capabilities' in one step's response table")
        return answer

    async def _await_consumer(self, timeout: float) -> None:
        waiting = asyncio.ensure_future(self._consumed.wait())
        broken = asyncio.ensure_future(self._broken.wait())
        try:
            await asyncio.wait({waiting, broken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            broken.cancel()
        if self._consumed.is_set():
            return
        if self._consume_error is not None:
            raise SignalingError(self._consume_error)
        what = "translated-speech producer" if self.mode == "pipeline" else "producer of our speaker"
        raise SignalingError(f"no {what} matched producers.consume within {timeout:.0f} s "
                             f"({self._announcements.describe()})")

    async def _open_speaker(self, join: dict[str, Any]) -> float:
        assert self._speaker is not None
        session = self._speaker
        device = await load_device(join["rtp_capabilities"], [self._track])
        transport = await create_transport(session, device, "send", self.options.relay, self._clock,
                                           self.network)
        self._send_transport = transport
        link = watch_link(transport, "send")  # connect ends when DTLS is up, not at ICE (pymediasoup's)

        answer_produce(transport, session)
        producer = await transport.produce(track=self._track, stopTracks=False, appData={"type": "mic"})
        self._mic_id = producer.id
        self._rtp_sender = producer.rtpSender
        if self.network is not None:
            self.network.attach_sender(producer.rtpSender)  # the SFU's receiver reports about our stream
        self._track.attach_sender(producer.rtpSender)
        if self.mode == "sfu":
            self._transit = TransitCorrelator(self._complete)
        else:
            self._correlator = Correlator(producer.id, self._complete, self._clock)
        await self._consume_wanted()
        timeout = self.options.connect_timeout_s
        try:
            await wait_link(transport, link, timeout)
        except SignalingError as exc:
            if "not connected within" not in str(exc):
                raise  # a refused connect_transport, or ICE/DTLS failed: its own words
            hint = ("no relay allocation or relayed path: check the TURN URL and credentials"
                    if self.options.relay is not None else
                    "no reachable candidate pair: check --ice-address and the gateway's announced address")
            via = "through the TURN relay " if self.options.relay is not None else ""
            raise SignalingError(f"send transport: ICE + DTLS did not complete {via}within {timeout:.0f} s "
                                 f"({link.state()}; {hint})") from None
        assert link.dtls_at is not None
        return link.dtls_at if self._clock is time.monotonic else self._clock()

    async def _open_listener(self, join: dict[str, Any]) -> None:
        assert self._listener is not None
        device = await load_device(join["rtp_capabilities"], [])
        self._listener_caps = device.rtpCapabilities.model_dump(exclude_none=True)
        self._recv_transport = await create_transport(self._listener, device, "recv", self.options.relay,
                                                      self._clock, self.network)
        if join.get("producers"):
            self._inbox.announce(join["producers"])

    # ---- listener side -------------------------------------------------------------------------

    def _route_event(self, event: ResultEvent, t: float) -> bool:
        return self._correlator.on_event(event, t) if self._correlator is not None else False

    def _on_announced(self) -> None:
        if self._mic_id is not None:
            asyncio.get_running_loop().create_task(self._consume_wanted())

    def _match_variables(self) -> dict[str, Any]:
        assert self._listener is not None
        return {**self._listener.variables, "mic_producer": self._mic_id or ""}

    async def _consume_wanted(self) -> None:
        try:
            for pid in self._announcements.wanted(self._match_variables()):
                self._announcements.consumed.add(pid)
                await self._consume(pid)
        except SignalingError as exc:
            self._consume_error = f"consuming the announced producer failed: {exc}"
            self._broken.set()

    async def _consume(self, producer_id: str) -> None:
        assert self._listener is not None
        info = await self._listener.request("consume", transport_id=self._recv_transport.id,
                                            producer_id=producer_id, rtp_capabilities=self._listener_caps)
        consumer = await self._recv_transport.consume(
            id=info["id"], producerId=info["producer_id"], kind=info["kind"],
            rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
        self._receiver = consumer.rtpReceiver or _receiver_of(self._recv_transport, consumer)
        monitor = self._voiced if self.mode == "sfu" else self._monitor
        monitor.attach(self._receiver)
        if self.options.profile.has_request("resume_consumer"):
            await self._listener.request("resume_consumer", consumer_id=info["id"])
        self._consumed.set()

    def _on_onset(self, onset: Any) -> None:
        if self._correlator is not None:
            self._correlator.on_onset(onset)

    def _on_voiced(self, t_arrival: float) -> None:
        if self._transit is not None:
            self._transit.on_voiced(t_arrival)

    # ---- failures ------------------------------------------------------------------------------

    @property
    def dropped(self) -> bool:
        """The server dropped this conversation (or a consume failed): it will not hear more."""
        return self._broken.is_set()

    def _on_lost(self, reason: str) -> None:
        """The server dropped a channel: every pending utterance ends now, as an error where it stood."""
        self.result.error = reason
        self._consume_error = self._consume_error or reason
        self._broken.set()
        for uid in list(self._pending):
            tl = self._pending.pop(uid)
            tl.error = reason
            tl.error_stage = _stage_reached(tl)
            self._deliver(tl)
        self._all_done.set()

    def _deliver_failure(self, message: str, stage: str) -> None:
        tl = UtteranceTimeline(
            utterance_id=f"{self.conversation}-0", conversation=self.conversation, seq=0, fixture_id="",
            source_language=self.options.source_language, target_language=self.options.target_language,
            t_planned=self._clock(), wall_start=time.time(), mode=self.mode, error=message, error_stage=stage)
        self.result.error = message
        self._deliver(tl)

    # ---- speaking ------------------------------------------------------------------------------

    async def speak(
        self,
        plan: Iterable[ScheduledUtterance],
        stop: asyncio.Event | None = None,
        first_slot_delay_s: float = START_LEAD_S,
    ) -> None:
        """Speak the plan on its timetable; return once every utterance has its final status.

        The plan may be endless (a locust user speaks until stopped): each utterance is handed to the
        track shortly before it is due, so the queue stays short; ``stop`` ends the plan. Utterances
        already handed over are still spoken and awaited, each at most until its own deadline.
        """
        assert self._correlator is not None or self._transit is not None
        loop = asyncio.get_running_loop()
        t0 = self._clock() + first_slot_delay_s
        wall0 = time.time() + first_slot_delay_s
        for seq, item in enumerate(plan, start=1):
            planned = t0 + item.offset_s
            if await self._stopped_before(planned - SCHEDULE_AHEAD_S, stop) or self._broken.is_set():
                break
            tl = UtteranceTimeline(
                utterance_id=f"{self.conversation}-{seq}", conversation=self.conversation, seq=seq,
                fixture_id=item.fixture_id, source_language=self.options.source_language,
                target_language=self.options.target_language, t_planned=planned,
                wall_start=wall0 + item.offset_s, mode=self.mode, snr_db=item.clip.snr_db)
            self._pending[tl.utterance_id] = tl
            on_speech_end = None
            if self._transit is not None:
                self._transit.expect(tl)
                on_speech_end = self._transit.on_speech_end
            elif self._correlator is not None:
                self._correlator.expect(tl)
            self._track.schedule(PlannedUtterance(tl, item.clip, on_speech_end))
            self.result.utterances += 1
            # Its clip plus the response timeout, then it is a timeout (loop.time() is time.monotonic()).
            deadline = planned + item.clip.duration_s + self.options.response_timeout_s
            loop.call_at(deadline, self._expire, tl.utterance_id)
        while self._pending:
            self._all_done.clear()
            await self._all_done.wait()

    async def _stopped_before(self, moment: float, stop: asyncio.Event | None) -> bool:
        """Wait until ``moment`` (the schedule's horizon); True when asked to stop, or when the server
        dropped the conversation, first."""
        remaining = moment - self._clock()
        if remaining > 0:
            waits = [asyncio.ensure_future(self._broken.wait())]
            if stop is not None:
                waits.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return self._broken.is_set() or (stop is not None and stop.is_set())

    def _expire(self, uid: str) -> None:
        tl = self._pending.pop(uid, None)
        if tl is not None:
            if self._correlator is not None:
                self._correlator.expire(tl)
            if self._transit is not None:
                self._transit.expire(tl)
            self._deliver(tl)
        self._all_done.set()

    def _complete(self, tl: UtteranceTimeline) -> None:
        if self._pending.pop(tl.utterance_id, None) is not None:
            self._deliver(tl)
        self._all_done.set()

    def _deliver(self, tl: UtteranceTimeline) -> None:
        self._on_utterance(tl, self)


    async def sample_stats(self, period_s: float = 2.0) -> None:
        """Refresh the RTC stats every period until cancelled; a failed sample leaves the last one."""
        while True:
            with contextlib.suppress(Exception):
                await self.refresh_stats()
            await asyncio.sleep(period_s)  # sampling period, not synchronisation

    async def refresh_stats(self) -> None:
        """RTC stats for the rows: jitter/loss of the translated audio, RTT of the speaker's stream."""
        if self._receiver is not None:
            for report in (await self._receiver.getStats()).values():
                if getattr(report, "type", "") == "inbound-rtp":
                    self.stats["jitter_ms"] = report.jitter / 48.0  # RTP units at 48 kHz
                    self.stats["packets_lost"] = float(report.packetsLost)
                    self.stats["packets_received"] = float(report.packetsReceived)
        if self._rtp_sender is not None:
            for report in (await self._rtp_sender.getStats()).values():
                if getattr(report, "type", "") == "remote-inbound-rtp":
                    self.stats["rtt_ms"] = report.roundTripTime * 1000.0

    async def close(self) -> None:
        counts = self._inbox.counts
        self.result.handled_events = counts.handled
        self.result.malformed_events = counts.malformed
        self.result.unmatched_events = counts.unmatched
        self.result.translated_packets = self._monitor.packets
        self._track.stop()
        for transport in (self._send_transport, self._recv_transport):
            if transport is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(transport.close(), 5)
        for channel in (self._speaker, self._listener):
            if channel is not None:
                await channel.close()


def _stage_reached(tl: UtteranceTimeline) -> str:
    """The stage an utterance was in when it stopped: the one after its last milestone."""
    last = tl.last_milestone()
    if tl.mode == "sfu":
        return "send" if last == "planned" else "sfu"
    return STALLED_STAGE.get(last, "e2e")


def _node(join: dict[str, Any]) -> str | None:
    node = join.get("node")
    return None if node is None else str(node)
