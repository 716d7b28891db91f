"""TTS service: ``POST /synthesize`` ``{"text", "language", "sample_rate": 48000}`` → mono 16-bit WAV.

With ``"format": "ogg_opus"`` (and optionally ``"bitrate"``, bit/s, default 32000) the answer is Ogg Opus
instead (``audio/ogg; codecs=opus``: 48 kHz mono, 20 ms packets), ready for RTP: the gateway only
packetizes and paces it, so it keeps no Opus encoder per caller.

The audio's duration is also in the ``X-Audio-Duration-Ms`` header (and processing/queue times in
``X-Processing-Ms`` / ``X-Queue-Ms``) so a caller need not parse the audio to log it.

Engines:
* ``model``: a speech-shaped synthetic signal (harmonics of a gliding f0 under a syllable-rate
  envelope, about -20 dBFS RMS) whose length follows the text; modelled latency.
* ``real``: espeak-ng (22.05 kHz) resampled to ``sample_rate`` with a polyphase filter.

Run: ``python -m sut.services.tts --config default`` or ``--stack-json PATH``.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from aiohttp import web

from sut.services.audio import OPUS_RATE, read_wav_bytes_any, resample, to_int16, write_ogg_opus, write_wav
from sut.services.common import (
    STATE_KEY,
    BadRequest,
    LatencySampler,
    ServiceArgs,
    ServiceState,
    StartupError,
    WorkerPool,
    make_app,
    read_json_object,
    require_str,
    run_service,
    set_log_detail,
    short,
    sleep_remaining,
)

MS_PER_CHAR = 60.0
MIN_S, MAX_S = 0.4, 6.0
TARGET_RMS_DBFS = -20.0
ESPEAK_TIMEOUT_S = 20.0
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
FORMATS = ("wav", "ogg_opus")
DEFAULT_OPUS_BITRATE = 32000
OPUS_CACHE_SIZE = 256  # encoded answers of the model engine (same text, same audio): as speech_like


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # int16 mono
    rate: int
    cache_key: str | None = None  # set when the same key always gives the same samples (model engine)

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.rate


def model_duration_s(text: str) -> float:
    return float(np.clip(len(text.strip()) * MS_PER_CHAR / 1000.0, MIN_S, MAX_S))


@functools.lru_cache(maxsize=256)
def speech_like(text: str, rate: int) -> np.ndarray:
    """Deterministic (per text) voiced-speech stand-in: what a listener-side onset detector and
    codec see from real TTS — periodic, band-limited, syllable-modulated, realistically loud.

    Cached: under load the same fixture translations come back again and again. Read-only result.
    """
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    n = int(round(model_duration_s(text) * rate))
    t = np.arange(n) / rate
    dur = n / rate
    # f0: a speaker-ish base, gentle declination across the phrase and a slow intonation wobble.
    f0 = rng.uniform(105.0, 190.0) * (1.0 - 0.15 * t / dur) * (1.0 + 0.06 * np.sin(2 * np.pi * 0.8 * t))
    cycles = np.cumsum(f0) / rate
    # One glottal period looked up by phase: 15 harmonics for the price of one gather (a direct sum
    # of sines cost ~150 ms for 6 s at 48 kHz). 15 × 200 Hz stays below Nyquist down to 8 kHz.
    voiced = _PERIOD[(cycles * _PERIOD.size).astype(np.int64) % _PERIOD.size]
    voiced = voiced + 0.03 * rng.standard_normal(n)  # breath noise, so the spectrum is not a bare comb
    out = to_int16(_scale_to_dbfs(voiced * _syllable_envelope(n, rate, rng), TARGET_RMS_DBFS))
    out.flags.writeable = False
    return out


def _one_period(size: int = 4096, harmonics: int = 15) -> np.ndarray:
    phase = 2 * np.pi * np.arange(size) / size
    k = np.arange(1, harmonics + 1)[:, None]
    # 1/k roll-off with a broad first-formant bump around harmonic 3–5 (~500 Hz).
    weights = (1.0 / k) * (1.0 + 1.5 * np.exp(-((k - 4) ** 2) / 4.0))
    return (weights * np.sin(k * phase)).sum(axis=0)


_PERIOD = _one_period()


def _syllable_envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Raised-cosine syllables of 140–260 ms (≈4–5 per second), with short word gaps."""
    env = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.14, 0.26) * rate)
        seg = np.hanning(length) ** 0.7 * rng.uniform(0.55, 1.0)
        end = min(n, pos + length)
        env[pos:end] = seg[: end - pos]
        pos = end + (int(rng.uniform(0.03, 0.09) * rate) if rng.random() < 0.3 else 0)
    return env


def _scale_to_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    if rms == 0.0:
        return x
    return x * (32768.0 * 10 ** (dbfs / 20.0) / rms)


class TtsEngine(Protocol):
    name: str

    async def synthesize(self, text: str, language: str, rate: int) -> Speech: ...


ENGINE_KEY: web.AppKey[TtsEngine] = web.AppKey("tts_engine")


class ModelTts:
    name = "model"

    def __init__(self, sampler: LatencySampler) -> None:
        self.sampler = sampler

    async def synthesize(self, text: str, language: str, rate: int) -> Speech:
        started = time.perf_counter()
        delay_ms = self.sampler.draw_ms()
        samples = await asyncio.to_thread(speech_like, text, rate)
        await sleep_remaining(delay_ms, started)
        return Speech(samples, rate, cache_key=f"{rate}:{text}")


class EspeakTts:
    name = "real"

    async def synthesize(self, text: str, language: str, rate: int) -> Speech:
        # Text on stdin, never argv: text starting with '-' must not read as an option.
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "-v", language, "--stdout",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(text.encode()), ESPEAK_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"espeak-ng took longer than {ESPEAK_TIMEOUT_S:.0f} s") from None
        message = err.decode(errors="replace").strip()
        if proc.returncode != 0 or not out:
            if "voice does not exist" in message:
                raise BadRequest(f"language '{language}' has no espeak-ng voice")
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {message[:200]}")
        native, native_rate = read_wav_bytes_any(out)
        samples = await asyncio.to_thread(lambda: to_int16(resample(native, native_rate, rate)))
        return Speech(samples, rate)


async def check_espeak() -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise StartupError("real TTS needs espeak-ng (apt-get install espeak-ng)") from None
    await proc.communicate()


def parse_rate(doc: dict[str, object]) -> int:
    rate = doc.get("sample_rate", 48000)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate != int(rate):
        raise BadRequest(f"field 'sample_rate' must be an integer, got {rate!r}")
    if not 8000 <= int(rate) <= 96000:
        raise BadRequest(f"field 'sample_rate' must be 8000..96000, got {int(rate)}")
    return int(rate)


def parse_format(doc: dict[str, object], rate: int) -> tuple[str, int]:
    """(format, bitrate) of a request; the bitrate only matters for ogg_opus."""
    fmt = doc.get("format", "wav")
    if fmt not in FORMATS:
        raise BadRequest(f"field 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
    bitrate = doc.get("bitrate", DEFAULT_OPUS_BITRATE)
    if isinstance(bitrate, bool) or not isinstance(bitrate, int) or not 6000 <= bitrate <= 510000:
        raise BadRequest(f"field 'bitrate' must be an integer 6000..510000 (bit/s), got {bitrate!r}")
    if fmt == "ogg_opus" and rate != OPUS_RATE:
        raise BadRequest(f"format ogg_opus is {OPUS_RATE} Hz: field 'sample_rate' must be {OPUS_RATE}, "
                         f"got {rate}")
    return str(fmt), bitrate


_opus_cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
_opus_cache_lock = threading.Lock()  # encodes run in worker threads


def ogg_opus_body(speech: Speech, bitrate: int) -> bytes:
    """The speech as Ogg Opus; the model engine's answers are cached (its audio repeats per text)."""
    if speech.cache_key is None:
        return write_ogg_opus(speech.samples, bitrate)
    key = (speech.cache_key, bitrate)
    with _opus_cache_lock:
        if key in _opus_cache:
            _opus_cache.move_to_end(key)
            return _opus_cache[key]
    body = write_ogg_opus(speech.samples, bitrate)
    with _opus_cache_lock:
        _opus_cache[key] = body
        while len(_opus_cache) > OPUS_CACHE_SIZE:
            _opus_cache.popitem(last=False)
    return body


async def synthesize(request: web.Request) -> web.Response:
    t0 = time.perf_counter()
    doc = await read_json_object(request)
    text = require_str(doc, "text")
    language = require_str(doc, "language").strip()
    if not _LANGUAGE.match(language):
        raise BadRequest(f"field 'language' must be a language tag like 'es' or 'en-us', got {language!r}")
    rate = parse_rate(doc)
    fmt, bitrate = parse_format(doc, rate)
    engine = request.app[ENGINE_KEY]
    state = request.app[STATE_KEY]
    async with state.pool.slot() as slot:
        speech = await engine.synthesize(text, language, rate)
    if fmt == "ogg_opus":
        # Encoding a few seconds takes ~10–40 ms: off the loop, which serves every other request.
        body = await asyncio.to_thread(ogg_opus_body, speech, bitrate)
        content_type = "audio/ogg; codecs=opus"
    else:
        body = write_wav(speech.samples, speech.rate)
        content_type = "audio/wav"
    processing_ms = (time.perf_counter() - t0) * 1000.0
    set_log_detail(request, f"{language} q={slot.queue_ms:.0f}ms audio={speech.duration_ms / 1000:.2f}s "
                            f"{fmt} {short(text)}")
    return web.Response(body=body, headers={
        "Content-Type": content_type,
        "X-Audio-Duration-Ms": f"{speech.duration_ms:.3f}",  # the gateway announces it as durationMs
        "X-Processing-Ms": f"{processing_ms:.1f}",  # arrival → answer, queueing included
        "X-Queue-Ms": f"{slot.queue_ms:.1f}",
        "X-Engine": engine.name,
    })


async def build(args: ServiceArgs) -> web.Application:
    svc = args.service
    engine: TtsEngine
    if svc.engine == "real":
        await check_espeak()
        engine = EspeakTts()
    else:
        engine = ModelTts(LatencySampler(svc.latency, args.seed))
    app = make_app(ServiceState("tts", engine.name, WorkerPool(svc.workers)),
                   [web.post("/synthesize", synthesize)])
    app[ENGINE_KEY] = engine
    return app


def main(argv: list[str] | None = None) -> None:
    run_service("tts", build, argv)


if __name__ == "__main__":
    main()
