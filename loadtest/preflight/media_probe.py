"""One media round trip through the SFU: a speaker sends one second of Opus, a listener in the same room
consumes it back, and RTP stats on both ends confirm the packets. Optionally forced through a TURN relay
(iceTransportPolicy "relay") on both transports. Every step is timed; everything is bounded.

Same handshake as loadtest/webrtc_client.py (pymediasoup on aiortc, the profile's dialect), but the
track sends exactly the probe's packets, only once both transports are connected and the consumer is
resumed, so "sent" and "received" count the same packets.
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
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from loadtest.fixtures import silence_packet
from loadtest.preflight.config import TurnServer
from loadtest.profile import SignalingProfile
from loadtest.signaling import SignalingChannel, SignalingError
from loadtest.webrtc_client import _receiver_of

FRAME_S = 0.020
TIME_BASE = fractions.Fraction(1, 48000)
LATE_PACKETS_S = 1.0  # after the last probe packet left, how long the last ones may take to come back


@dataclass(frozen=True)
class ProbeOptions:
    url: str
    profile: SignalingProfile
    ssl_context: Any
    timeout_s: float
    seconds: float = 1.0
    relay: TurnServer | None = None
    auth_token: str = ""
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


@dataclass
class _Transport:
    transport: Any
    connected: asyncio.Future[None]
    ice_at: float | None = None
    dtls_at: float | None = None


def _ice_servers(relay: TurnServer | None) -> list[RTCIceServer]:
    if relay is None:
        return []  # no STUN: the tester and media server talk host to host
    return [RTCIceServer(urls=relay.url, username=relay.username or None,
                         credential=relay.credential or None)]


async def _join(channel: SignalingChannel, opts: ProbeOptions, room: str, role: str) -> dict[str, Any]:
    variables = {"room": room, "peer": f"{room}-{role}", "role": role, "token": opts.auth_token,
                 "source_language": opts.source_language, "target_language": opts.target_language}
    answer: dict[str, Any] = {}
    for step in opts.profile.join_sequence:
        answer.update(await channel.request(step, **variables))
    if "rtp_capabilities" not in answer:
        raise SignalingError("the join sequence gave no router RTP capabilities")
    return answer


async def _create(channel: SignalingChannel, device: Device, direction: str,
                  opts: ProbeOptions) -> _Transport:
    info = await channel.request("create_transport", direction=direction)
    create = device.createSendTransport if direction == "send" else device.createRecvTransport
    transport = create(id=info["id"], iceParameters=info["ice_parameters"],
                       iceCandidates=info["ice_candidates"], dtlsParameters=info["dtls_parameters"],
                       sctpParameters=None, iceServers=[])
    pc = transport._handler.pc
    if opts.relay is not None:
        # pymediasoup 1.5.0 drops iceTransportPolicy when it builds the RTCPeerConnection; aiortc reads
        # its configuration when the first transceiver is added (at produce/consume), so set it here.
        pc._RTCPeerConnection__configuration = RTCConfiguration(
            iceServers=_ice_servers(opts.relay), iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    loop = asyncio.get_running_loop()
    state = _Transport(transport, loop.create_future())

    @transport.on("connect")
    async def on_connect(dtls_parameters: Any) -> None:
        await channel.request("connect_transport", transport_id=info["id"],
                              dtls_parameters=dtls_parameters.model_dump(exclude_none=True))

    @pc.on("iceconnectionstatechange")
    def on_ice() -> None:
        if pc.iceConnectionState in ("completed", "connected") and state.ice_at is None:
            state.ice_at = time.monotonic()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        # aiortc's connectionState is "connected" once ICE and DTLS both are.
        if pc.connectionState == "connected" and not state.connected.done():
            state.dtls_at = time.monotonic()
            state.connected.set_result(None)
        elif pc.connectionState in ("failed", "closed") and not state.connected.done():
            what = "ICE" if state.ice_at is None else "DTLS"
            error = SignalingError(f"{direction} transport {pc.connectionState} ({what})")
            state.connected.set_exception(error)

    return state


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


async def media_round_trip(opts: ProbeOptions) -> MediaOutcome:
    out = MediaOutcome()
    room = f"preflight-media-{uuid.uuid4().hex[:8]}"
    auth = {"token": opts.auth_token} if opts.auth_token else None
    speaker = SignalingChannel(opts.url, opts.profile, opts.ssl_context, opts.timeout_s, auth)
    listener = SignalingChannel(opts.url, opts.profile, opts.ssl_context, opts.timeout_s, auth)
    transports: list[_Transport] = []
    track = ProbeTrack(silence_packet())

    def step(name: str, since: float) -> float:
        now = time.monotonic()
        out.steps_ms[name] = round((now - since) * 1000.0, 1)
        return now

    try:
        t = time.monotonic()
        await asyncio.gather(speaker.connect(opts.timeout_s), listener.connect(opts.timeout_s))
        t = step("signaling", t)
        listener_join = await _join(listener, opts, room, "listener")
        speaker_join = await _join(speaker, opts, room, "speaker")
        t = step("join", t)
        send_device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[track]))
        recv_device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[]))
        await send_device.load(RtpCapabilities.model_validate(speaker_join["rtp_capabilities"]))
        await recv_device.load(RtpCapabilities.model_validate(listener_join["rtp_capabilities"]))
        send = await _create(speaker, send_device, "send", opts)
        recv = await _create(listener, recv_device, "recv", opts)
        transports += [send, recv]
        t = step("transports", t)

        @send.transport.on("produce")
        async def on_produce(kind: str, rtp_parameters: Any, app_data: Any) -> str:
            answer = await speaker.request("produce", transport_id=send.transport.id, kind=kind,
                                           rtp_parameters=rtp_parameters.model_dump(exclude_none=True),
                                           app_data=app_data or {})
            return str(answer["id"])

        t_connect = t
        producer = await send.transport.produce(track=track, stopTracks=False, appData={"type": "mic"})
        t = step("produce", t)
        caps = recv_device.rtpCapabilities.model_dump(exclude_none=True)
        info = await listener.request("consume", transport_id=recv.transport.id, producer_id=producer.id,
                                      rtp_capabilities=caps)
        consumer = await recv.transport.consume(
            id=info["id"], producerId=info["producer_id"], kind=info["kind"],
            rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
        receiver = consumer.rtpReceiver or _receiver_of(recv.transport, consumer)
        counter = PacketCounter(receiver)
        await listener.request("resume_consumer", consumer_id=info["id"])
        step("consume", t)
        await asyncio.wait_for(asyncio.gather(send.connected, recv.connected), opts.timeout_s)
        assert send.ice_at is not None and send.dtls_at is not None
        out.steps_ms["ice"] = round((send.ice_at - t_connect) * 1000.0, 1)
        out.steps_ms["dtls"] = round((send.dtls_at - send.ice_at) * 1000.0, 1)
        out.candidate_type, out.local_candidate, out.remote_candidate = _selected_pair(send.transport)
        out.listener_candidate_type = _selected_pair(recv.transport)[0]

        count = round(opts.seconds / FRAME_S)
        counter.target = count
        t = time.monotonic()
        track.arm(count)
        await asyncio.wait_for(track.done.wait(), opts.seconds + 2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.reached.wait(), LATE_PACKETS_S)
        step("audio", t)
        out.probe_sent, out.probe_received = track.sent, counter.packets
        sent_stats = await _stats(producer.rtpSender, "outbound-rtp")
        recv_stats = await _stats(receiver, "inbound-rtp")
        out.rtp_sent = int(getattr(sent_stats, "packetsSent", 0) or 0)
        out.rtp_received = int(getattr(recv_stats, "packetsReceived", 0) or 0)
        out.rtp_lost = int(getattr(recv_stats, "packetsLost", 0) or 0)
        return out
    finally:
        track.stop()
        for state in transports:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(state.transport.close(), 5)
        await asyncio.gather(speaker.close(), listener.close())
