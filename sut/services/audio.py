"""WAV in and out of the services, Ogg Opus out of TTS, and resampling. Samples are int16 mono throughout
the HTTP API."""

from __future__ import annotations

import io
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sut.services.common import BadRequest


def read_wav_mono16(body: bytes) -> tuple[np.ndarray, int]:
    """Parse a request body as a mono 16-bit PCM WAV → (int16 samples, sample rate)."""
    if len(body) < 12 or body[:4] not in (b"RIFF", b"RIFX") or body[8:12] != b"WAVE":
        raise BadRequest("body is not a WAV file (expected a RIFF/WAVE header)")
    try:
        with sf.SoundFile(io.BytesIO(body)) as snd:
            if snd.channels != 1:
                raise BadRequest(f"audio must be mono, got {snd.channels} channels")
            if snd.subtype != "PCM_16":
                raise BadRequest(f"audio must be 16-bit PCM, got {snd.subtype}")
            rate = int(snd.samplerate)
            samples = snd.read(dtype="int16")
    except sf.LibsndfileError as exc:
        raise BadRequest(f"body is not a readable WAV file: {exc}") from None
    if samples.size == 0:
        raise BadRequest("audio is empty (0 samples)")
    return samples.reshape(-1), rate


def read_wav_bytes_any(data: bytes) -> tuple[np.ndarray, int]:
    """Engine output (e.g. espeak-ng's streamed WAV, whose header length is a placeholder) → int16 mono."""
    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples[:, 0].copy(), int(rate)


def write_wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, to_int16(samples), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


OPUS_RATE = 48000  # Opus over RTP always runs a 48 kHz clock
OPUS_FRAME_MS = 20


def write_ogg_opus(samples: np.ndarray, bitrate: int) -> bytes:
    """48 kHz mono int16 samples → Ogg Opus (RFC 7845): 20 ms packets, VoIP mode, VBR around
    ``bitrate``, complexity 5 — what the gateway's own encoder used, so a listener hears the same."""
    import av  # here, not at module level: only TTS encodes, and PyAV is slow to import

    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = bitrate
        stream.codec_context.options = {
            "application": "voip", "frame_duration": str(OPUS_FRAME_MS), "compression_level": "5",
        }
        frame = av.AudioFrame.from_ndarray(to_int16(samples).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        for packet in stream.encode(frame):  # PyAV cuts the frame into the encoder's 20 ms frames
            out.mux(packet)
        for packet in stream.encode(None):  # flush: the encoder's look-ahead holds the last samples
            out.mux(packet)
    return buf.getvalue()


def to_int16(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.int16:
        return x
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    """Polyphase resampling (float64 out, same scale as the input)."""
    if rate_from == rate_to:
        return x.astype(np.float64)
    g = gcd(int(rate_from), int(rate_to))
    return resample_poly(x.astype(np.float64), rate_to // g, rate_from // g)
