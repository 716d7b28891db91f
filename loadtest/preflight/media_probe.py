"""One media round trip through the SFU: a speaker sends one second of Opus, a listener in the same room
consumes it back, and RTP stats on both ends confirm the packets. Optionally forced through a TURN relay
(iceTransportPolicy "relay") on both transports. Every step is timed; everything is bounded.

The same dialect code as the callers (PeerSession, create_transport, Announcements): the profile's join
and per-role steps, answers feeding later requests, value maps, list announcements, consume rules and an
optional resume. In mode "pipeline" the listener consumes the speaker's microphone producer by its id
(the SFU round trip, without the pipeline); in mode "sfu" it consumes what `producers.consume` picks from
the announcements, which is the speaker's producer. The track sends exactly the probe's packets, only
once both transports are connected and the consumer is live, so "sent" and "received" count the same
packets. A probe that stops making progress says at which step and which request was unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from pymediasoup.rtp_parameters import RtpParameters

from loadtest.announcements import Announcements
from loadtest.credentials import Credentials
from loadtest.fixtures import silence_packet
from loadtest.ice import TurnRelay
from loadtest.linkwatch import LinkWatch, wait_link, watch_link
from loadtest.preflight.config import TurnServer
from loadtest.profile import SignalingProfile
from loadtest.session import Party, PeerSession
from loadtest.signaling import Disconnected, SignalingError
from loadtest.tracing import open_traced, traced
from loadtest.transport import answer_produce, create_transport, load_device, receiver_of

FRAME_S = 0.020
TIME_BASE = fractions.Fraction(1, 48000)
LATE_PACKETS_S = 1.0  # after the last probe packet left, how long the last ones may take to come back


@dataclass(frozen=True)
class ProbeOptions:
    url: str
    profile: SignalingProfile
    ssl_context: Any
    timeout_s: float  # the whole probe up to the audio (the check's own timeout must be longer)
    seconds: float = 1.0
    relay: TurnServer | None = None
    credentials: Credentials = field(default_factory=Credentials)
    source_language: str = "en"
    target_language: str = "es"


@dataclass
class MediaOutcome:
    steps_ms: dict[str, float] = field(default_factory=dict)
    probe_sent: int = 0
    probe_received: int = 0
    rtp_sent: int = 0
    rtp_received: int = 0
    rtp_lost: int = 0
    candidate_type: str = "?"
    local_candidate: str = "?"
    remote_candidate: str = "?"
    listener_candidate_type: str = "?"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProbeTrack(MediaStreamTrack):
    """Sends nothing until armed, then exactly `count` pre-encoded Opus packets on the 20 ms grid."""

    kind = "audio"

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self._payload = payload
        self._armed = asyncio.Event()
        self.count = 0
        self.sent = 0
        self.done = asyncio.Event()
        self._t0 = 0.0  # send time of the first probe packet: the grid's origin

    def arm(self, count: int) -> None:
        self.count = count
        self._armed.set()

    async def recv(self) -> av.Packet:
        await self._armed.wait()
        if self.readyState != "live" or self.sent >= self.count:
            self.done.set()
            raise MediaStreamError  # the probe is over: aiortc's sender stops
        if self.sent == 0:
            self._t0 = time.monotonic()
        delay = self._t0 + self.sent * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # real-time pacing to the packet grid
        packet = av.Packet(self._payload)
        packet.pts = self.sent * 960
        packet.time_base = TIME_BASE
        self.sent += 1
        if self.sent >= self.count:
            self.done.set()
        return packet


class PacketCounter:
    """Counts RTP packets as a receiver gets them (before its jitter buffer); wakes a waiter at a target."""

    def __init__(self, receiver: Any) -> None:
        self.packets = 0
        self.target = 0
        self.reached = asyncio.Event()
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.packets += 1
            if self.target and self.packets >= self.target:
                self.reached.set()
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle


def _selected_pair(transport: Any) -> tuple[str, str, str]:
    """(candidate type, local candidate, remote address) of the nominated ICE pair."""
    for transceiver in transport._handler.pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        pair = connection._nominated.get(1)
        if pair is not None:
            lc, rc = pair.local_candidate, pair.remote_candidate
            return lc.type, f"{lc.type} {lc.host}:{lc.port}", f"{rc.type} {rc.host}:{rc.port}"
    return "?", "?", "?"


async def _stats(obj: Any, kind: str) -> Any:
    for report in (await obj.getStats()).values():
        if getattr(report, "type", "") == kind:
            return report
    return None


def rtp_capabilities_of(session: PeerSession) -> Any:
    """The router capabilities the join steps returned, or why there are none (naming what there was)."""
    if "rtp_capabilities" in session.answers:
        return session.answers["rtp_capabilities"]
    role = str(session.variables["role"])
    steps = ", ".join(session.profile.steps(role)) or "none"
    names = ", ".join(sorted(session.answers)) or "nothing"
    raise SignalingError(f"the {role}'s join steps ({steps}) gave no router RTP capabilities (their "
                         f"responses name: {names}): name them 'rtp_capabilities' in one step's response "
                         "table")


class _Probe:
    """The probe's state: which step it is in, and what has been announced, for a step that stalls."""

    def __init__(self, opts: ProbeOptions, speaker: PeerSession, listener: PeerSession) -> None:
        self.opts = opts
        self.speaker, self.listener = speaker, listener
        self.step = "signaling"
        self.announcements = Announcements(opts.profile.producers)
        self.changed = asyncio.Event()  # an announcement arrived, or a channel was lost
        self.lost: str | None = None
        self.links: list[LinkWatch] = []

    def on_announcement(self, payload: Any = None, *_extra: Any) -> None:
        self.announcements.add(payload)
        self.changed.set()

    def on_lost(self, reason: str) -> None:
        self.lost = self.lost or reason
        self.changed.set()

    def stalled(self) -> SignalingError:
        """Why the probe ran out of time, at the step it was in (its own words beat a bare timeout)."""
        if self.lost is not None:
            return Disconnected(f"{self.step}: {self.lost}")
        waiting = [f"request '{ch.pending}' ({ch.role}) unanswered"
                   for ch in (traced(self.speaker), traced(self.listener)) if ch.pending]
        if self.step == "consume" and self.opts.profile.mode == "sfu" and not waiting:
            waiting.append(f"no announced producer matched producers.consume "
                           f"({self.announcements.describe()})")
        if self.step == "ICE and DTLS":
            waiting += [f"{link.direction} transport: {link.state()}" for link in self.links]
        why = f": {'; '.join(waiting)}" if waiting else ""
        return SignalingError(f"stalled at step '{self.step}' for {self.opts.timeout_s:g} s{why}")

    async def wanted_producer(self, mic_id: str) -> str:
        """The producer the consume rules pick (mode "sfu"), as soon as it is announced."""
        variables = {**self.listener.variables, "mic_producer": mic_id}
        while True:  # bounded by the probe's timeout; each pass waits for a new announcement
            if self.lost is not None:
                raise Disconnected(self.lost)
            wanted = self.announcements.wanted(variables)
            if wanted:
                return wanted[0]
            self.changed.clear()
            await self.changed.wait()


def _relay(server: TurnServer | None) -> TurnRelay | None:
    return None if server is None else TurnRelay(server.url, server.username, server.credential)


async def media_round_trip(opts: ProbeOptions) -> MediaOutcome:
    room = f"preflight-media-{uuid.uuid4().hex[:8]}"

    def session(role: str) -> PeerSession:
        party = Party(room, role, 0, opts.source_language, opts.target_language)
        return open_traced(opts.url, opts.profile, opts.ssl_context, opts.timeout_s, party, opts.credentials)

    probe = _Probe(opts, session("speaker"), session("listener"))
    track = ProbeTrack(silence_packet())
    transports: list[Any] = []
    try:
        async with asyncio.timeout(opts.timeout_s):
            return await _round_trip(probe, track, transports)
    except TimeoutError:
        raise probe.stalled() from None
    finally:
        track.stop()
        for transport in transports:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), 5)
        await asyncio.gather(probe.speaker.close(), probe.listener.close())


async def _round_trip(probe: _Probe, track: ProbeTrack, transports: list[Any]) -> MediaOutcome:
    opts, speaker, listener = probe.opts, probe.speaker, probe.listener
    out = MediaOutcome()

    def step(name: str, since: float, following: str) -> float:
        now = time.monotonic()
        out.steps_ms[name] = round((now - since) * 1000.0, 1)
        probe.step = following
        return now

    t = time.monotonic()
    await asyncio.gather(speaker.connect(opts.timeout_s), listener.connect(opts.timeout_s))
    for peer in (speaker, listener):
        peer.channel.on_lost(probe.on_lost)
    listener.channel.on(opts.profile.producers.announce_event, probe.on_announcement)
    t = step("signaling", t, "join")
    await listener.join()  # first, so it hears the speaker's producer announced
    await speaker.join()
    if listener.answers.get("producers"):
        probe.on_announcement(listener.answers["producers"])
    t = step("join", t, "transports")
    send_device = await load_device(rtp_capabilities_of(speaker), [track])
    recv_device = await load_device(rtp_capabilities_of(listener), [])
    relay = _relay(opts.relay)
    send = await create_transport(speaker, send_device, "send", relay)
    transports.append(send)
    recv = await create_transport(listener, recv_device, "recv", relay)
    transports.append(recv)
    send_link, recv_link = watch_link(send, "send"), watch_link(recv, "recv")
    probe.links = [send_link, recv_link]
    t = step("transports", t, "produce")

    answer_produce(send, speaker)
    t_connect = send_link.started = recv_link.started = t
    producer = await send.produce(track=track, stopTracks=False, appData={"type": "mic"})
    t = step("produce", t, "consume")
    source = producer.id if opts.profile.mode != "sfu" else await probe.wanted_producer(producer.id)
    caps = recv_device.rtpCapabilities.model_dump(exclude_none=True)
    info = await listener.request("consume", transport_id=recv.id, producer_id=source, rtp_capabilities=caps)
    consumer = await recv.consume(id=info["id"], producerId=info["producer_id"], kind=info["kind"],
                                  rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
    receiver = consumer.rtpReceiver or receiver_of(recv, consumer)
    counter = PacketCounter(receiver)
    if opts.profile.has_request("resume_consumer"):
        await listener.request("resume_consumer", consumer_id=info["id"])
    step("consume", t, "ICE and DTLS")
    await asyncio.gather(wait_link(send, send_link, opts.timeout_s),
                         wait_link(recv, recv_link, opts.timeout_s))
    _record_links(out, send_link, t_connect)
    out.candidate_type, out.local_candidate, out.remote_candidate = _selected_pair(send)
    out.listener_candidate_type = _selected_pair(recv)[0]
    probe.step = "audio"
    count = round(opts.seconds / FRAME_S)
    counter.target = count
    t = time.monotonic()
    track.arm(count)
    await asyncio.wait_for(track.done.wait(), opts.seconds + 2.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.reached.wait(), LATE_PACKETS_S)
    step("audio", t, "stats")
    out.probe_sent, out.probe_received = track.sent, counter.packets
    sent_stats = await _stats(producer.rtpSender, "outbound-rtp")
    recv_stats = await _stats(receiver, "inbound-rtp")
    out.rtp_sent = int(getattr(sent_stats, "packetsSent", 0) or 0)
    out.rtp_received = int(getattr(recv_stats, "packetsReceived", 0) or 0)
    out.rtp_lost = int(getattr(recv_stats, "packetsLost", 0) or 0)
    return out


def _record_links(out: MediaOutcome, send: LinkWatch, t_connect: float) -> None:
    dtls_at = send.dtls_at if send.dtls_at is not None else time.monotonic()
    ice_at = send.ice_at if send.ice_at is not None else dtls_at
    out.steps_ms["ice"] = round((ice_at - t_connect) * 1000.0, 1)
    out.steps_ms["dtls"] = round((dtls_at - ice_at) * 1000.0, 1)
