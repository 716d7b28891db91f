"""Harness for the gateway smoke tests: environment, a gateway + services stack, aiortc clients."""


from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
import pytest
import soundfile as sf
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from scipy.signal import resample_poly

REPO = Path(__file__).resolve().parents[2]


GATEWAY_DIR = REPO / "sut" / "gateway"


WORKER_PATH_FILE = Path("/tmp/speechload-worker-path.txt")


FALLBACK_CLIP = Path("/usr/share/pocketsphinx/test/data/cards/001.wav")


RATE = 48000


FRAME = 960  # 20 ms


VAD = {"thresholdDbfs": -50.0, "hangoverMs": 400, "maxUtteranceMs": 15000}


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

