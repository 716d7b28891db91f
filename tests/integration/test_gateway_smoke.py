"""Smoke tests of the reference gateway (sut/gateway) against a real mediasoup worker.

Everything is real and stays on 127.0.0.1: the Node gateway and its mediasoup worker, the Python
STT/translation/TTS services, aiortc clients through pymediasoup. aioice's host-candidate gathering
is pinned to 127.0.0.1 and no STUN server is configured (aiortc would otherwise ask a public one).

Run: ``.venv/bin/pytest tests/integration/test_gateway_smoke.py -m integration -s``
(``-s`` prints the measurements; they are also written to the test's tmp dir as measurements.json).
Needs the mediasoup worker (MEDIASOUP_WORKER_BIN or /tmp/speechload-worker-path.txt) and
sut/gateway/node_modules; skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
import pytest
import socketio
import soundfile as sf
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters
from scipy.signal import resample_poly

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO / "sut" / "gateway"
WORKER_PATH_FILE = Path("/tmp/speechload-worker-path.txt")
FALLBACK_CLIP = Path("/usr/share/pocketsphinx/test/data/cards/001.wav")
RATE = 48000
FRAME = 960  # 20 ms
VAD = {"thresholdDbfs": -50.0, "hangoverMs": 400, "maxUtteranceMs": 15000}


# --------------------------------------------------------------------------- environment


def worker_bin() -> str | None:
    """The locally built mediasoup worker: MEDIASOUP_WORKER_BIN, else the path the infra build wrote."""
    candidates = [os.environ.get("MEDIASOUP_WORKER_BIN", "")]
    if WORKER_PATH_FILE.is_file():
        candidates.append(WORKER_PATH_FILE.read_text().strip())
    return next((c for c in candidates if c and Path(c).is_file()), None)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_range(size: int) -> tuple[int, int]:
    """`size` consecutive UDP ports, none bound right now, for the mediasoup worker."""
    for base in range(42000 + (os.getpid() % 50) * 200, 64000, size):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                socks.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                socks[-1].bind(("127.0.0.1", port))
            return base, base + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range for the mediasoup worker")


def pin_ice_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips 127.0.0.1 when gathering host candidates: offer only it, so media stays on loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def read_48k(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        mono = resample_poly(mono, RATE, rate)
    return np.clip(np.round(mono), -32768, 32767).astype(np.int16)


def load_clips() -> tuple[list[dict[str, Any]], str]:
    """Two English clips (entry dicts with 48 kHz `samples`) and the engine kind: for the model engines
    (their STT recognises corpus audio) the corpus fixture nearest 3 s, then its shortest one, so the
    second utterance's TTS is ready while the first still plays; else (no corpus, or
    SPEECHLOAD_SMOKE_ENGINE=real) two Debian recordings with the real engines."""
    manifest = REPO / "fixtures" / "audio" / "manifest.json"
    usable: list[dict[str, Any]] = []
    if manifest.is_file():
        doc = json.loads(manifest.read_text())
        entries = doc["fixtures"] if isinstance(doc, dict) else doc
        usable = [e for e in entries if e.get("language") == "en" and (manifest.parent / e["file"]).is_file()]
    if usable and os.environ.get("SPEECHLOAD_SMOKE_ENGINE", "model") == "model":
        first = min(usable, key=lambda e: abs(float(e.get("duration_s", 0)) - 3.0))
        second = min(usable, key=lambda e: float(e.get("duration_s", 99)))
        clips, engine = [dict(first), dict(second)], "model"
        for c in clips:
            c["samples"] = read_48k(manifest.parent / c["file"])
        return clips, engine
    clips = [{"id": f"cards-00{i}", "file": str(FALLBACK_CLIP.with_name(f"00{i}.wav"))} for i in (1, 2)]
    for c in clips:
        c["samples"] = read_48k(Path(c["file"]))
    return clips, "real"


def frame_dbfs(samples: np.ndarray) -> np.ndarray:
    """RMS dBFS of each 20 ms frame, as the gateway's VAD computes it."""
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    rms = np.sqrt((frames**2).mean(axis=1))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(rms / 32768)


def opus_roundtrip(samples: np.ndarray) -> np.ndarray:
    """The clip as the gateway hears it: through aiortc's Opus encoder and a decoder (mono).

    Opus noticeably attenuates low-level noise (a -45 dBFS breath tail can come out below -55), so
    segmentation must be judged on decoded audio, not on the original file.
    """
    encoder, decoder = OpusEncoder(), OpusDecoder()
    padded = np.concatenate([samples, np.zeros(10 * FRAME, np.int16)])
    out = []
    for i in range(len(padded) // FRAME):
        frame = av.AudioFrame.from_ndarray(padded[i * FRAME : (i + 1) * FRAME].reshape(1, -1), "s16", "mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, i * FRAME, Fraction(1, RATE)
        payloads, ts = encoder.encode(frame)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=ts)):
                pcm = decoded.to_ndarray().reshape(-1)
                out.append(pcm[0::2] if len(decoded.layout.channels) == 2 else pcm)
    return np.concatenate(out)[: len(samples)]


# --------------------------------------------------------------------------- processes


class Proc:
    """A child process logging to a file; `ready()` waits for a line matching a pattern (no polling)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, ready: str, env: dict[str, str]) -> None:
        self.name, self.argv, self.log_path, self.env = name, argv, log_path, env
        self.pattern = re.compile(ready)
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> Proc:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._pump = asyncio.create_task(self._read())
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._pump}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if not self._ready.is_set():
            why = "exited" if self._pump in done else f"not ready within {timeout} s"
            raise RuntimeError(f"{self.name} {why}; {self.log_path}:\n{''.join(self.lines[-30:])}")
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        with self.log_path.open("w") as log:
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace")
                log.write(text)
                log.flush()
                self.lines.append(text)
                if self.pattern.search(text):
                    self._ready.set()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 8)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 5)


def services_available() -> bool:
    return all((REPO / "sut" / "services" / f"{n}.py").is_file() for n in ("stt", "translation", "tts"))


async def start_stack(
    tmp: Path, with_services: bool, vad: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Proc]]:
    """Services (optional) + gateway on free ports. Returns (info, processes to stop)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[Proc] = []
    ports = {n: free_tcp_port() for n in ("stt", "translation", "tts")}
    clips, engine = load_clips()
    if with_services:
        toml = tmp / "stack.toml"
        latency = {"stt": 300, "translation": 100, "tts": 400}  # the reference stack's defaults
        sections = "\n".join(
            f'[{n}]\nport = {p}\nengine = "{engine}"\nworkers = 2\n'
            f'[{n}.latency]\ndistribution = "constant"\nms = {latency[n]}\n'
            for n, p in ports.items()
        )
        toml.write_text(f'[stack]\nhost = "127.0.0.1"\n\n{sections}')
        for name, port in ports.items():
            proc = Proc(
                name,
                [sys.executable, "-m", f"sut.services.{name}", "--config", str(toml), "--port", str(port)],
                tmp / f"{name}.log",
                r"listening on http",
                env,
            )
            procs.append(await proc.start(timeout=90))
    rtc_min, rtc_max = free_udp_range(100)
    gw_port = free_tcp_port()
    config = {
        "host": "127.0.0.1",
        "port": gw_port,
        "rtcMinPort": rtc_min,
        "rtcMaxPort": rtc_max,
        "announcedIp": "127.0.0.1",
        "vad": {**VAD, **(vad or {})},
        "sourceLanguage": "en",
        "targetLanguage": "es",
        "services": {n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
        "requestTimeoutMs": 20000,
        "groundTruthPath": str(tmp / "groundtruth.jsonl"),
        "logLevel": "debug",
    }
    (tmp / "gateway.json").write_text(json.dumps(config))
    gw_env = dict(env, MEDIASOUP_WORKER_BIN=worker_bin() or "")
    gateway = Proc(
        "gateway",
        ["node", str(GATEWAY_DIR / "src" / "server.js"), "--config", str(tmp / "gateway.json")],
        tmp / "gateway.log",
        r"gateway listening on",
        gw_env,
    )
    procs.append(await gateway.start(timeout=30))
    info = {
        "url": f"http://127.0.0.1:{gw_port}",
        "clip": clips[0],
        "samples": clips[0]["samples"],
        "second": clips[1],
        "engine": engine,
        "groundtruth": tmp / "groundtruth.jsonl",
        "gateway": gateway,
    }
    return info, procs


@pytest.fixture
async def stack_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    if not (GATEWAY_DIR / "node_modules" / "mediasoup").is_dir():
        pytest.skip("sut/gateway/node_modules missing: run npm install in sut/gateway")
    if worker_bin() is None:
        pytest.skip(
            "no mediasoup worker: set MEDIASOUP_WORKER_BIN or build it (/tmp/speechload-worker-path.txt)"
        )
    pin_ice_to_loopback(monkeypatch)
    started: list[Proc] = []

    async def factory(with_services: bool, vad: dict[str, Any] | None = None) -> dict[str, Any]:
        info, procs = await start_stack(tmp_path, with_services, vad)
        started.extend(procs)
        return info

    yield factory
    for proc in reversed(started):
        await proc.stop()


# --------------------------------------------------------------------------- clients


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


async def scrape_metrics(url: str) -> dict[str, float]:
    """Unlabelled and labelled samples of the gateway's /metrics, keyed by the sample's text name."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(5)) as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lateness_summary(metrics: dict[str, float]) -> dict[str, float]:
    """The gateway's TTS send-lateness histogram as {bucket upper bound ms: share of packets ≤ it}."""
    name = "gateway_tts_send_lateness_ms"
    total = metrics.get(f"{name}_count", 0.0)
    out: dict[str, float] = {
        "packets": total,
        "mean": metrics.get(f"{name}_sum", 0.0) / total if total else 0.0,
    }
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket"):
            out["le_" + key.split('le="')[1].rstrip('"}')] = value / total if total else 0.0
    return out


def gt_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# --------------------------------------------------------------------------- tests


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


async def test_gateway_pipeline_end_to_end(stack_factory: Callable[..., Any], tmp_path: Path) -> None:
    """Speaker says clip A, pauses 0.6 s, says clip B; a listener hears both translations.

    Checks the result events (content, order per stage), the TTS audio at the listener at RTP level
    (marker bit, announced RTP timestamp, no overlap, >= 100 ms apart) and the ground-truth log, and
    measures signaling, VAD segmentation, stage latencies and injection pacing.
    """
    if not services_available():
        pytest.skip("sut/services/{stt,translation,tts}.py not all present yet")
    info = await stack_factory(with_services=True)
    room = "smoke-room"
    pause = np.zeros(int(0.6 * RATE), np.int16)

    listener = Peer(info["url"], "listener-1")
    await listener.join(room, "listener", [])
    recv, recv_connected, recv_timings = await listener.transport("recv")

    script = np.concatenate([info["samples"], pause, info["second"]["samples"]])
    speaker, track, send_timings = await speak(info, room, script)
    try:
        _, tts_info = await listener.wait_event("newProducer", 5, lambda d: d["appData"]["type"] == "tts")
        assert tts_info["appData"]["sourceProducerId"] and tts_info["peerId"] == "speaker-1"
        recv_timings["t_consume"] = time.monotonic()
        consumer, consumed = await listener.consume(recv, tts_info["id"])
        assert consumed["appData"]["type"] == "tts"
        # pymediasoup does not hand out the consumer's RTCRtpReceiver: find it by its track.
        receiver = next(r for r in recv.handler.pc.getReceivers() if r.track is consumer.track)
        arrivals = RtpArrivals(receiver)
        recv_timings["t_connected"] = await asyncio.wait_for(recv_connected, 10)
        await listener.request("resumeConsumer", {"consumerId": consumer.id})

        # Utterance 1: results on the speaker's socket and the listener's.
        t_tr, tr = await speaker.wait_event("transcription", 30)
        assert tr["text"].strip(), tr
        assert tr["final"] is True and tr["seq"] == 1 and tr["peerId"] == "speaker-1"
        t_tl, tl = await speaker.wait_event("translation", 30, lambda d: d["seq"] == 1)
        assert tl["text"].strip() and tl["targetLanguage"] == "es" and tl["utteranceId"] == tr["utteranceId"]
        t_tts, tts = await speaker.wait_event("tts", 30, lambda d: d["seq"] == 1)
        assert tts["ttsProducerId"] == tts_info["id"] and tts["durationMs"] > 0
        await listener.wait_event("tts", 5, lambda d: d["utteranceId"] == tr["utteranceId"])
        assert tr["speechEndTs"] < tr["serverTs"] < tl["serverTs"] < tts["serverTs"]

        # Utterance 2, and every stage's events in utterance order.
        _, tts2 = await speaker.wait_event("tts", 30, lambda d: d["seq"] == 2)
        for stage in ("transcription", "translation", "tts"):
            assert [d["seq"] for _, n, d in speaker.events if n == stage] == [1, 2], speaker.events
        assert not [d for _, n, d in speaker.events if n == "pipelineError"]
        # Injection is scheduled on absolute time: utterance 2 starts >= 100 ms after utterance 1's
        # audio ends. Exact on RTP time; send times also carry each first packet's lateness.
        assert (tts2["rtpTimestamp"] - tts["rtpTimestamp"]) % 2**32 >= (tts["durationMs"] + 100) * 48
        assert tts2["serverTs"] >= tts["serverTs"] + tts["durationMs"]

        # The listener hears both: the announced first packets carry the marker bit, and the packets
        # cover the audio's duration.
        def heard() -> bool:
            n2 = sum(1 for p in arrivals.packets if (p[2] - tts2["rtpTimestamp"]) % 2**32 < 2**31)
            return n2 >= int(tts2["durationMs"] / 20) - 1

        await arrivals.wait_for(heard, (tts2["durationMs"]) / 1000 + 5, "TTS audio at the listener")
        first = next(p for p in arrivals.packets if p[2] == tts["rtpTimestamp"])
        first2 = next(p for p in arrivals.packets if p[2] == tts2["rtpTimestamp"])
        assert first[3] and first2[3], "a first TTS packet lacks the marker bit"
        assert sum(1 for p in arrivals.packets if p[3]) == 2, (
            "marker bit on a packet that starts no utterance"
        )
        assert await consumer.getStats(), "consumer has no stats"

        # Ground truth: one line per fact, all on the shared monotonic clock.
        metrics = await scrape_metrics(info["url"])
        await asyncio.wait_for(speaker.sio.disconnect(), 10)
        await info["gateway"].stop()  # flushes the ground-truth stream
        lines = gt_lines(info["groundtruth"])
        for d in (tr, tts2):
            kinds = [ln["kind"] for ln in lines if ln["utteranceId"] == d["utteranceId"]]
            assert kinds == ["speech_end", "transcription", "translation", "tts_first_packet"], kinds

        obs = {"send": send_timings, "recv": recv_timings, "tr": tr, "tts": tts, "t_tr": t_tr, "t_tl": t_tl}
        obs.update({"t_tts": t_tts, "first": first, "lines": lines, "metrics": metrics, "tts2": tts2})
        measurements = measure(info, track, arrivals, obs)
    finally:
        await speaker.close()
        await listener.close()
    (tmp_path / "measurements.json").write_text(json.dumps(measurements, indent=2))
    print(json.dumps(measurements, indent=2))
    vad = measurements["vad"]
    assert vad["utterances"] == 2, vad
    # The gateway's segmentation matches the decoded clip to a frame or two (transit is ~1 ms).
    assert abs(vad["gateway_speech_start_s"] - vad["opus_first_voiced_s"]) <= 0.045, vad
    assert abs(vad["gateway_speech_end_s"] - vad["opus_last_voiced_end_s"]) <= 0.045, vad


def measure(
    info: dict[str, Any], track: ClipTrack, arrivals: RtpArrivals, o: dict[str, Any]
) -> dict[str, Any]:
    """The numbers the gateway's author reports: signaling, segmentation, pipeline, injection pacing."""
    voiced = np.flatnonzero(frame_dbfs(info["samples"]) >= VAD["thresholdDbfs"])
    last_voiced = int(voiced[-1])
    heard = np.flatnonzero(frame_dbfs(opus_roundtrip(info["samples"])) >= VAD["thresholdDbfs"])
    speech_ends = [ln for ln in o["lines"] if ln["kind"] == "speech_end"]
    tts_pkts = [p for p in arrivals.packets if (p[2] - o["tts"]["rtpTimestamp"]) % 2**32 < 2**31]
    n_tts = int(np.ceil(o["tts"]["durationMs"] / 20))
    tts_pkts = tts_pkts[:n_tts]
    gaps = np.diff([p[0] for p in tts_pkts]) * 1000
    offsets = [(p[0] - tts_pkts[0][0]) * 1000 - i * 20 for i, p in enumerate(tts_pkts)]
    gt = {ln["kind"]: ln for ln in o["lines"] if ln["utteranceId"] == o["tr"]["utteranceId"]}
    return {
        "engine": info["engine"],
        "clip": info["clip"]["id"],
        "clip_manifest_speech_end_s": info["clip"].get("speech_end_s"),
        "signaling_ms": {
            "send_create_ack": (o["send"]["t_created"] - o["send"]["t_create"]) * 1000,
            "send_create_to_connected": (o["send"]["t_connected"] - o["send"]["t_create"]) * 1000,
            "send_produce_ack": o["send"].get("produce_ms"),
            "recv_create_ack": (o["recv"]["t_created"] - o["recv"]["t_create"]) * 1000,
            # a recv transport connects on its first consume
            "recv_consume_to_connected": (o["recv"]["t_connected"] - o["recv"]["t_consume"]) * 1000,
        },
        "vad": {
            "utterances": len(speech_ends),
            "reasons": [ln["reason"] for ln in speech_ends],
            # the clip analysed at the gateway's threshold, before Opus coding (clip seconds)
            "clip_first_voiced_s": int(voiced[0]) * FRAME / RATE,
            "clip_last_voiced_end_s": (last_voiced + 1) * FRAME / RATE,
            # the same after an Opus round trip: what the gateway's VAD should find
            "opus_first_voiced_s": int(heard[0]) * FRAME / RATE,
            "opus_last_voiced_end_s": (int(heard[-1]) + 1) * FRAME / RATE,
            # the gateway's segmentation mapped to clip time via our frame send times (includes the
            # ~1 ms transit)
            "gateway_speech_start_s": speech_ends[0]["speechStart"] - track.clip_frame_send_time(0),
            "gateway_speech_end_s": speech_ends[0]["t"] - track.clip_frame_send_time(0) + FRAME / RATE,
            "gateway_voiced_ms": speech_ends[0]["voicedMs"],
            "speech_end_minus_last_voiced_send_ms": (
                speech_ends[0]["t"] - track.clip_frame_send_time(last_voiced)
            )
            * 1000,
        },
        "pipeline_ms": {
            "stt_server": gt["transcription"]["t"] * 1000 - o["tr"]["speechEndTs"],
            "transcription_event_delivery": (o["t_tr"] - gt["transcription"]["t"]) * 1000,
            "translation_server": (gt["translation"]["t"] - gt["transcription"]["t"]) * 1000,
            "tts_server": (gt["tts_first_packet"]["t"] - gt["translation"]["t"]) * 1000,
            "first_tts_packet_at_listener_after_send": (o["first"][0] - gt["tts_first_packet"]["t"]) * 1000,
            "e2e_listener": (o["first"][0] - track.clip_frame_send_time(last_voiced)) * 1000,
            "tts_duration": o["tts"]["durationMs"],
            "utterance2_tts_queued": next(
                ln["queuedMs"]
                for ln in o["lines"]
                if ln["kind"] == "tts_first_packet" and ln["utteranceId"] == o["tts2"]["utteranceId"]
            ),
            "tts_gap_between_utterances": o["tts2"]["serverTs"]
            - o["tts"]["serverTs"]
            - o["tts"]["durationMs"],
            "event_gaps_client": {
                "translation": (o["t_tl"] - o["t_tr"]) * 1000,
                "tts": (o["t_tts"] - o["t_tl"]) * 1000,
            },
        },
        "tts_send_lateness_server_ms": lateness_summary(o["metrics"]),
        "tts_pacing_at_listener_ms": {
            "packets": len(tts_pkts),
            "interarrival_mean": float(np.mean(gaps)),
            "interarrival_p99": pct(list(gaps), 99),
            "interarrival_max": float(np.max(gaps)),
            "drift_vs_20ms_grid_max_abs": float(np.max(np.abs(offsets))),
            "seq_contiguous": all(
                (b[1] - a[1]) % 65536 == 1 for a, b in zip(tts_pkts, tts_pkts[1:], strict=False)
            ),
            "ts_step_960": all(
                (b[2] - a[2]) % 2**32 == 960 for a, b in zip(tts_pkts, tts_pkts[1:], strict=False)
            ),
        },
    }


async def test_gateway_reports_stage_down(stack_factory: Callable[..., Any], tmp_path: Path) -> None:
    """No services running: the media path, tap and VAD (here on the sender's RFC 6464 audio level,
    the stack's default source) still work, and the STT failure is reported as a pipelineError
    naming the stage. Also checks signaling errors and cleanup, and measures the tap's packet rate."""
    info = await stack_factory(with_services=False, vad={"source": "audio-level", "levelThresholdDbov": -45})
    speaker, track, timings = await speak(info, "down-room", info["samples"])
    try:
        t_err, err = await speaker.wait_event("pipelineError", 15)
        assert err["stage"] == "stt" and err["seq"] == 1, err
        assert "ECONNREFUSED" in err["error"] or "refused" in err["error"], err
        m0 = await scrape_metrics(info["url"])
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.sleep(1.0), 2)  # a measured interval, not a synchronisation
        m1 = await scrape_metrics(info["url"])
        rate = (m1["gateway_tap_packets_total"] - m0["gateway_tap_packets_total"]) / (time.monotonic() - t0)
        assert 45 <= rate <= 55, f"tap packet rate {rate:.1f}/s, expected ~50"
        assert m1["gateway_rooms"] == 1 and m1["gateway_peers"] == 1 and m1["gateway_utterances_total"] == 1
        async with aiohttp.ClientSession() as s, s.get(f"{info['url']}/health") as r:
            health = await r.json()
        assert health["status"] == "degraded" and health["backends"]["stt"] == "down"
        assert health["workers"] and all(w["alive"] for w in health["workers"])

        # Signaling edge cases: clear errors, the caller's own mic excluded from getProducers.
        producers = (await speaker.request("getProducers", {}))["producers"]
        assert [p["appData"]["type"] for p in producers] == ["tts"], producers
        bad = await speaker.sio.call(
            "consume", {"transportId": "nope", "producerId": "x", "rtpCapabilities": {}}
        )
        assert bad["ok"] is False and "transportId" in bad["error"], bad
        bad = await speaker.sio.call("createWebRtcTransport", {"direction": "sideways"})
        assert bad["ok"] is False and "direction" in bad["error"], bad
        stranger = Peer(info["url"], "stranger")
        await stranger.sio.connect(info["url"], transports=["websocket"], wait_timeout=10)
        bad = await stranger.sio.call("getProducers", {}, timeout=10)
        assert bad["ok"] is False and "joinRoom" in bad["error"], bad
        bad = await stranger.sio.call(
            "joinRoom", {"roomId": "down-room", "peerId": "speaker-1", "role": "speaker"}
        )
        assert bad["ok"] is False and "already in room" in bad["error"], bad
        await stranger.close()
        await speaker.request("leaveRoom", {})
        _, closed = await speaker.wait_event("producerClosed", 5)
        assert closed["id"], closed
        m2 = await scrape_metrics(info["url"])
        assert m2["gateway_rooms"] == 0 and m2["gateway_peers"] == 0 and m2["gateway_pipelines"] == 0, m2
    finally:
        await speaker.close()
    out = {
        "tap_packets_per_s": rate,
        "send_create_to_connected_ms": (timings["t_connected"] - timings["t_create"]) * 1000,
        "error": err["error"],
    }
    print(json.dumps(out, indent=2))
