"""PipelineClient: one synthetic conversation — a speaker and a listener in one room, one clock.

The speaker publishes fixture speech on a planned timetable (open model: a slow reply never delays the
next utterance); the listener consumes the translated speech and receives the result events. Every
utterance ends in exactly one status, delivered once to ``on_utterance``.
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
from dataclasses import dataclass
from typing import Any

from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from loadtest.events import Correlator, EventParser, MalformedEvent
from loadtest.fixtures import EncodedClip
from loadtest.ice import TurnRelay, force_relay
from loadtest.media import PlannedUtterance, TranslatedAudioMonitor, UtteranceTrack
from loadtest.profile import SignalingProfile, lookup
from loadtest.signaling import SignalingChannel, SignalingError
from loadtest.timeline import UtteranceTimeline

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
    auth_token: str = ""
    relay: TurnRelay | None = None  # relay-only: every transport goes through this TURN server


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
    malformed_events: int = 0
    unmatched_events: int = 0
    translated_packets: int = 0


UtteranceSink = Callable[[UtteranceTimeline, "PipelineClient"], None]
_ids = itertools.count(1)


class PipelineClient:
    def __init__(self, options: ClientOptions, silence: bytes, on_utterance: UtteranceSink,
                 conversation: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.conversation = conversation or f"conv-{uuid.uuid4().hex[:8]}-{next(_ids)}"
        self.result = ConversationResult(self.conversation)
        self._clock = clock
        self._on_utterance = on_utterance
        self._track = UtteranceTrack(silence, clock)
        self._parser = EventParser(options.profile)
        self._speaker: SignalingChannel | None = None
        self._listener: SignalingChannel | None = None
        self._devices: list[Device] = []
        self._mic_id: str | None = None
        self._announced: dict[str, dict[str, Any]] = {}
        self._consuming: set[str] = set()
        self._recv_transport: Any = None
        self._send_transport: Any = None
        self._receiver: Any = None
        self._rtp_sender: Any = None
        self._listener_caps: Any = None
        self._translated_ready = asyncio.Event()
        self._correlator: Correlator | None = None
        self._monitor = TranslatedAudioMonitor(self._on_onset, clock)
        self._pending: dict[str, UtteranceTimeline] = {}
        self._all_done = asyncio.Event()
        self.stats: dict[str, float | None] = {"jitter_ms": None, "packets_lost": None, "rtt_ms": None}

    # ---- connect -------------------------------------------------------------------------------

    def _channel(self) -> SignalingChannel:
        auth = {"token": self.options.auth_token} if self.options.auth_token else None
        return SignalingChannel(self.options.url, self.options.profile, self.options.ssl_context,
                                self.options.request_timeout_s, auth)

    async def connect(self) -> None:
        """Speaker and listener join, the listener is ready to hear the translation; sets connect_ms."""
        t_start = self._clock()
        self._speaker, self._listener = self._channel(), self._channel()
        timeout = self.options.connect_timeout_s
        await asyncio.gather(self._speaker.connect(timeout), self._listener.connect(timeout))
        self._register_listener_events(self._listener)
        listener_join = await self._join(self._listener, "listener")
        speaker_join = await self._join(self._speaker, "speaker")
        await self._open_listener(listener_join)
        connected = await self._open_speaker(speaker_join)
        self.result.connect_ms = (connected - t_start) * 1000.0
        try:
            await asyncio.wait_for(self._translated_ready.wait(), timeout)
        except TimeoutError:
            raise SignalingError(f"no translated-speech producer announced within {timeout:.0f} s") from None

    async def _join(self, channel: SignalingChannel, role: str) -> dict[str, Any]:
        variables = {
            "room": self.conversation, "peer": f"{self.conversation}-{role}", "role": role,
            "source_language": self.options.source_language,
            "target_language": self.options.target_language, "token": self.options.auth_token,
        }
        answer: dict[str, Any] = {}
        for step in self.options.profile.join_sequence:
            answer.update(await channel.request(step, **variables))
        if "rtp_capabilities" not in answer:
            raise SignalingError("the join sequence gave no router RTP capabilities")
        return answer

    async def _device(self, caps: Any, tracks: list[Any]) -> Device:
        device = Device(handlerFactory=AiortcHandler.createFactory(tracks=tracks))
        await device.load(RtpCapabilities.model_validate(caps))
        self._devices.append(device)
        return device

    async def _create_transport(self, channel: SignalingChannel, device: Device, direction: str) -> Any:
        info = await channel.request("create_transport", direction=direction)
        create = device.createSendTransport if direction == "send" else device.createRecvTransport
        transport = create(id=info["id"], iceParameters=info["ice_parameters"],
                           iceCandidates=info["ice_candidates"], dtlsParameters=info["dtls_parameters"],
                           sctpParameters=None, iceServers=[])
        if self.options.relay is not None:
            force_relay(transport, self.options.relay)
        connected = asyncio.get_running_loop().create_future()

        @transport.on("connect")
        async def on_connect(dtls_parameters: Any) -> None:
            await channel.request("connect_transport", transport_id=info["id"],
                                  dtls_parameters=dtls_parameters.model_dump(exclude_none=True))

        @transport.on("connectionstatechange")
        async def on_state(state: str) -> None:
            if state == "connected" and not connected.done():
                connected.set_result(self._clock())
            elif state in ("failed", "closed") and not connected.done():
                connected.set_exception(SignalingError(f"{direction} transport {state} (ICE/DTLS)"))

        transport.connected_at = connected
        return transport

    async def _open_speaker(self, join: dict[str, Any]) -> float:
        assert self._speaker is not None
        channel = self._speaker
        device = await self._device(join["rtp_capabilities"], [self._track])
        transport = await self._create_transport(channel, device, "send")
        self._send_transport = transport

        @transport.on("produce")
        async def on_produce(kind: str, rtp_parameters: Any, app_data: Any) -> str:
            answer = await channel.request("produce", transport_id=transport.id, kind=kind,
                                           rtp_parameters=rtp_parameters.model_dump(exclude_none=True),
                                           app_data=app_data or {})
            return str(answer["id"])

        producer = await transport.produce(track=self._track, stopTracks=False, appData={"type": "mic"})
        self._mic_id = producer.id
        self._rtp_sender = producer.rtpSender
        self._track.attach_sender(producer.rtpSender)
        self._correlator = Correlator(producer.id, self._complete, self._clock)
        await self._consume_translated()
        return await asyncio.wait_for(transport.connected_at, self.options.connect_timeout_s)

    async def _open_listener(self, join: dict[str, Any]) -> None:
        assert self._listener is not None
        device = await self._device(join["rtp_capabilities"], [])
        self._listener_caps = device.rtpCapabilities.model_dump(exclude_none=True)
        self._recv_transport = await self._create_transport(self._listener, device, "recv")
        for info in join.get("producers") or []:
            self._announce(info)

    # ---- listener side -------------------------------------------------------------------------

    def _register_listener_events(self, channel: SignalingChannel) -> None:
        profile = self.options.profile
        channel.on(profile.producers.announce_event, self._on_new_producer)
        for kind, spec in profile.events.items():
            channel.on(spec.event, self._event_handler(kind))

    def _event_handler(self, kind: str) -> Callable[[Any], None]:
        def handle(payload: Any) -> None:
            t = self._clock()
            try:
                event = self._parser.parse(kind, payload)
            except MalformedEvent as exc:
                self.result.malformed_events += 1
                log.debug("malformed %s event ignored: %s", kind, exc)
                return
            if self._correlator is not None:
                self._correlator.on_event(event, t)

        return handle

    def _on_new_producer(self, payload: Any) -> None:
        self._announce(payload)
        if self._mic_id is not None:
            asyncio.get_running_loop().create_task(self._consume_translated())

    def _announce(self, info: Any) -> None:
        spec = self.options.profile.producers
        try:
            pid = str(lookup(info, spec.id))
        except Exception:
            self.result.malformed_events += 1
            return
        self._announced[pid] = info

    async def _consume_translated(self) -> None:
        spec = self.options.profile.producers
        for pid, info in list(self._announced.items()):
            if pid in self._consuming:
                continue
            try:
                is_ours = (lookup(info, spec.type) == spec.translated_type
                           and str(lookup(info, spec.source)) == self._mic_id)
            except Exception:
                continue
            if is_ours:
                self._consuming.add(pid)
                await self._consume(pid)

    async def _consume(self, producer_id: str) -> None:
        assert self._listener is not None
        info = await self._listener.request("consume", transport_id=self._recv_transport.id,
                                            producer_id=producer_id, rtp_capabilities=self._listener_caps)
        consumer = await self._recv_transport.consume(
            id=info["id"], producerId=info["producer_id"], kind=info["kind"],
            rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
        self._receiver = consumer.rtpReceiver or _receiver_of(self._recv_transport, consumer)
        self._monitor.attach(self._receiver)
        await self._listener.request("resume_consumer", consumer_id=info["id"])
        self._translated_ready.set()

    def _on_onset(self, onset: Any) -> None:
        if self._correlator is not None:
            self._correlator.on_onset(onset)

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
        assert self._correlator is not None
        loop = asyncio.get_running_loop()
        t0 = self._clock() + first_slot_delay_s
        wall0 = time.time() + first_slot_delay_s
        for seq, item in enumerate(plan, start=1):
            planned = t0 + item.offset_s
            if await self._stopped_before(planned - SCHEDULE_AHEAD_S, stop):
                break
            tl = UtteranceTimeline(
                utterance_id=f"{self.conversation}-{seq}", conversation=self.conversation, seq=seq,
                fixture_id=item.fixture_id, source_language=self.options.source_language,
                target_language=self.options.target_language, t_planned=planned,
                wall_start=wall0 + item.offset_s)
            self._pending[tl.utterance_id] = tl
            self._correlator.expect(tl)
            self._track.schedule(PlannedUtterance(tl, item.clip))
            self.result.utterances += 1
            # Its clip plus the response timeout, then it is a timeout (loop.time() is time.monotonic()).
            deadline = planned + item.clip.duration_s + self.options.response_timeout_s
            loop.call_at(deadline, self._expire, tl.utterance_id)
        while self._pending:
            self._all_done.clear()
            await self._all_done.wait()

    async def _stopped_before(self, moment: float, stop: asyncio.Event | None) -> bool:
        """Wait until ``moment`` (the schedule's horizon); True when asked to stop first."""
        remaining = moment - self._clock()
        if stop is None:
            if remaining > 0:
                await asyncio.sleep(remaining)
            return False
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), remaining)
        return stop.is_set()

    def _expire(self, uid: str) -> None:
        tl = self._pending.pop(uid, None)
        if tl is not None:
            assert self._correlator is not None
            self._correlator.expire(tl)
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
        if self._rtp_sender is not None:
            for report in (await self._rtp_sender.getStats()).values():
                if getattr(report, "type", "") == "remote-inbound-rtp":
                    self.stats["rtt_ms"] = report.roundTripTime * 1000.0

    async def close(self) -> None:
        if self._correlator is not None:
            self.result.unmatched_events = self._correlator.stats.unmatched
        self.result.translated_packets = self._monitor.packets
        self._track.stop()
        for transport in (self._send_transport, self._recv_transport):
            if transport is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(transport.close(), 5)
        for channel in (self._speaker, self._listener):
            if channel is not None:
                await channel.close()
