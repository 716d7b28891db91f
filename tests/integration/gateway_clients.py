"""aiortc/pymediasoup clients of the gateway smoke tests: a clip-speaking track, peers, RTP arrivals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
import socketio
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters

from tests.integration.gateway_harness import (
    FRAME,
    RATE,
)


class ClipTrack(MediaStreamTrack):
    """A microphone: the clip, then digital silence, 20 ms frames paced by absolute time.

    `send_times[n]` is time.monotonic() when frame n went to aiortc's encoder.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self.samples = samples
        self.n = 0
        self.t0: float | None = None
        self.send_times: list[float] = []
        self.clip_start: int | None = None  # frame index where the clip begins; silence before

    def start_clip(self) -> None:
        """Play the clip from the next frame on. Until then the microphone sends silence, as a real
        one does while the call is being set up (audio before the server's producer exists is lost)."""
        self.clip_start = self.n

    def clip_frame_send_time(self, i: int) -> float:
        """Send time of the clip's frame i."""
        assert self.clip_start is not None
        return self.send_times[self.clip_start + i]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.t0 = self.t0 or time.monotonic()
        delay = self.t0 + self.n * FRAME / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # real-time media pacing
        chunk = np.zeros(FRAME, np.int16)
        if self.clip_start is not None:
            i = self.n - self.clip_start
            part = self.samples[i * FRAME : (i + 1) * FRAME]
            chunk[: len(part)] = part
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.n * FRAME, Fraction(1, RATE)
        self.n += 1
        self.send_times.append(time.monotonic())
        return frame


class Peer:
    """A Socket.IO client + pymediasoup Device; server events are kept with their arrival time."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.sio = socketio.AsyncClient(reconnection=False)
        self.device: Device | None = None
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.changed = asyncio.Condition()
        for event in (
            "transcription",
            "translation",
            "tts",
            "pipelineError",
            "newProducer",
            "producerClosed",
        ):
            self.sio.on(event, self._recorder(event))

    def _recorder(self, event: str) -> Callable[[dict[str, Any]], Any]:
        async def record(data: dict[str, Any]) -> None:
            self.events.append((time.monotonic(), event, data))
            async with self.changed:
                self.changed.notify_all()

        return record

    async def wait_event(
        self, event: str, timeout: float, where: Callable[[dict[str, Any]], bool] = lambda d: True
    ) -> tuple[float, dict[str, Any]]:
        """First `event` (past or future) matching `where`, as (arrival time, payload); bounded."""

        def find() -> tuple[float, dict[str, Any]] | None:
            return next(((t, d) for t, n, d in self.events if n == event and where(d)), None)

        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(find), timeout)
        except TimeoutError:
            seen = [(n, d.get("stage"), d.get("error")) for _, n, d in self.events]
            raise AssertionError(f"{self.name}: no '{event}' within {timeout} s; events: {seen}") from None
        found = find()
        assert found is not None
        return found

    async def request(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        ack = await self.sio.call(event, payload, timeout=10)
        assert isinstance(ack, dict) and ack.get("ok"), f"{self.name}: {event} failed: {ack}"
        return ack["data"]

    async def join(self, room: str, role: str, tracks: list[MediaStreamTrack]) -> dict[str, Any]:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=10)
        data = await self.request("joinRoom", {"roomId": room, "peerId": self.name, "role": role})
        self.device = Device(handlerFactory=AiortcHandler.createFactory(tracks=tracks))
        await self.device.load(RtpCapabilities.model_validate(data["rtpCapabilities"]))
        return data

    async def transport(self, direction: str) -> tuple[Any, asyncio.Future[float], dict[str, float]]:
        """A wired send/recv transport, a future of its `connected` time, and request timings."""
        assert self.device is not None
        timings = {"t_create": time.monotonic()}
        info = await self.request("createWebRtcTransport", {"direction": direction})
        timings["t_created"] = time.monotonic()
        create = self.device.createSendTransport if direction == "send" else self.device.createRecvTransport
        transport = create(
            id=info["id"],
            iceParameters=info["iceParameters"],
            iceCandidates=info["iceCandidates"],
            dtlsParameters=info["dtlsParameters"],
            sctpParameters=None,
            iceServers=[],
        )
        connected: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        @transport.on("connect")
        async def on_connect(dtlsParameters: Any) -> None:
            await self.request(
                "connectWebRtcTransport",
                {"transportId": transport.id, "dtlsParameters": dtlsParameters.model_dump(exclude_none=True)},
            )
            timings["t_connect_acked"] = time.monotonic()

        @transport.on("produce")
        async def on_produce(kind: str, rtpParameters: Any, appData: Any) -> str:
            t = time.monotonic()
            data = await self.request(
                "produce",
                {
                    "transportId": transport.id,
                    "kind": kind,
                    "rtpParameters": rtpParameters.model_dump(exclude_none=True),
                    "appData": appData or {},
                },
            )
            timings["produce_ms"] = (time.monotonic() - t) * 1000
            return data["id"]

        @transport.on("connectionstatechange")
        def on_state(state: str) -> None:
            if connected.done():
                return
            if state == "connected":
                connected.set_result(time.monotonic())
            elif state in ("failed", "closed"):
                connected.set_exception(AssertionError(f"{self.name} {direction} transport {state}"))

        @transport.on("error")
        def on_error(err: Exception) -> None:  # pymediasoup reports handler exceptions only here
            if not connected.done():
                connected.set_exception(err)

        return transport, connected, timings

    async def consume(self, transport: Any, producer_id: str) -> Any:
        assert self.device is not None
        data = await self.request(
            "consume",
            {
                "transportId": transport.id,
                "producerId": producer_id,
                "rtpCapabilities": self.device.rtpCapabilities.model_dump(exclude_none=True),
            },
        )
        consumer = await transport.consume(
            id=data["id"],
            producerId=data["producerId"],
            kind=data["kind"],
            rtpParameters=RtpParameters.model_validate(data["rtpParameters"]),
        )
        return consumer, data

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class RtpArrivals:
    """RTP-level arrivals on an aiortc receiver: (monotonic s, seq, timestamp, marker, payload bytes).

    Wraps the receiver's packet handler, so times are before aiortc's ~80 ms jitter-buffer prefetch.
    """

    def __init__(self, receiver: Any) -> None:
        self.packets: list[tuple[float, int, int, bool, int]] = []
        self.arrived = asyncio.Condition()
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.packets.append(
                (
                    time.monotonic(),
                    packet.sequence_number,
                    packet.timestamp,
                    packet.marker,
                    len(packet.payload),
                )
            )
            async with self.arrived:
                self.arrived.notify_all()
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with self.arrived:
                await asyncio.wait_for(self.arrived.wait_for(pred), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{what}: not within {timeout} s ({len(self.packets)} RTP packets)"
            ) from None


async def speak(
    info: dict[str, Any], room: str, samples: np.ndarray
) -> tuple[Peer, ClipTrack, dict[str, float]]:
    """A speaker: silence until its producer is up and its transport connected, then `samples`, then
    silence again (a microphone never stops sending)."""
    track = ClipTrack(samples)
    speaker = Peer(info["url"], "speaker-1")
    await speaker.join(room, "speaker", [track])
    send, connected, timings = await speaker.transport("send")
    await send.produce(track=track, stopTracks=False)
    timings["t_connected"] = await asyncio.wait_for(connected, 10)
    track.start_clip()
    return speaker, track, timings

