"""Noisy speech: a fixture clip with generated noise mixed in at a given SNR (seeded, deterministic).

Noise kinds (both generated here; no recording is shipped):

* ``pink`` — 1/f power spectrum, band-limited to 80 Hz – 8 kHz (the fixtures' own band: 16 kHz
  recordings, high-passed at 80 Hz), the steady hum of a room, a fan, a car.
* ``babble`` — babble-like: six independent "talkers", each pink noise shaped to a speech spectrum
  (−6 dB/octave above 500 Hz) and switched on and off at a syllabic rate (a 4 Hz envelope), summed.
  It fluctuates like a crowd of voices without containing any words.

**SNR** is the ratio of the speech's active level — the mean power of its voiced frames (the manifest's
rule: 20 ms frames above −45 dBFS) — to the noise's mean power. The noise spans the clip's speech, from
the start of its first voiced frame to the end of its last (10 ms fades inside that span): the room is
noisy while the caller speaks, and the clip's margins stay as recorded, so the end of speech the tester
times (its last voiced packet) and the end of speech the gateway's VAD hears stay where they were on
the clean clip, and latencies at different SNRs remain comparable. The same noise (same seed, same clip)
is used at every SNR, scaled: only the level changes between conditions.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from loadtest.conditions import NOISE_KINDS

RATE = 48000
FRAME = 960
VOICED_DBFS = -45.0
FADE_S = 0.010
BABBLE_TALKERS = 6
SYLLABLE_HZ = 4.0


def _rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _shaped(rng: np.random.Generator, n: int, tilt: np.ndarray) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n)) * tilt
    out = np.fft.irfft(spectrum, n)
    return out / max(float(np.sqrt(np.mean(out**2))), 1e-12)


def _band(n: int, low: float = 80.0, high: float = 8000.0) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    inside = (freqs >= low) & (freqs <= high)
    return freqs, inside


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink noise (power ∝ 1/f) in 80 Hz – 8 kHz."""
    freqs, inside = _band(n)
    tilt = np.where(inside, 1.0 / np.sqrt(np.maximum(freqs, 1.0)), 0.0)
    return _shaped(rng, n, tilt)


def babble(n: int, rng: np.random.Generator, talkers: int = BABBLE_TALKERS) -> np.ndarray:
    """Unit-RMS babble-like noise: speech-shaped noise of several talkers with syllabic envelopes."""
    freqs, inside = _band(n)
    # Speech's long-term spectrum, roughly: flat to 500 Hz, then −6 dB/octave (on top of nothing: not pink).
    tilt = np.where(inside, 1.0 / np.maximum(freqs / 500.0, 1.0), 0.0)
    total = np.zeros(n)
    env_freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    envelope_band = np.where((env_freqs > 0.5) & (env_freqs < SYLLABLE_HZ * 2), 1.0, 0.0)
    for _ in range(talkers):
        voice = _shaped(rng, n, tilt)
        envelope = np.maximum(_shaped(rng, n, envelope_band) + 0.3, 0.0)  # on/off like syllables
        total += voice * envelope
    return total / max(float(np.sqrt(np.mean(total**2))), 1e-12)


def generate(kind: str, n: int, seed: int, key: str) -> np.ndarray:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r} (known: {', '.join(NOISE_KINDS)})")
    rng = _rng(seed, f"{kind}/{key}")
    return pink(n, rng) if kind == "pink" else babble(n, rng)


def active_power(pcm48k: np.ndarray, first: int, last: int) -> float:
    """Mean power of the voiced frames (RMS above −45 dBFS) between frames ``first`` and ``last``."""
    n = max(1, math.ceil(len(pcm48k) / FRAME))
    frames = np.zeros(n * FRAME)
    frames[: len(pcm48k)] = pcm48k
    power = np.mean(frames.reshape(n, FRAME) ** 2, axis=1)[first:last + 1]
    voiced = power[10 * np.log10(np.maximum(power, 1e-20)) > VOICED_DBFS]
    return float(voiced.mean()) if voiced.size else float(power.mean())


def mix_at_snr(pcm48k: np.ndarray, first_voiced: int, last_voiced: int, snr_db: float, kind: str,
               seed: int, key: str) -> np.ndarray:
    """The clip with ``kind`` noise over its speech span at ``snr_db`` (see the module docstring)."""
    pcm = np.asarray(pcm48k, dtype=np.float64)
    start = first_voiced * FRAME
    stop = min(len(pcm), (last_voiced + 1) * FRAME)
    span = stop - start
    if span <= 0:
        return pcm.astype(np.float32)
    noise = generate(kind, span, seed, key)  # unit RMS
    fade = min(int(FADE_S * RATE), span // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))
        noise[:fade] *= ramp
        noise[-fade:] *= ramp[::-1]
    gain = math.sqrt(active_power(pcm, first_voiced, last_voiced) / 10 ** (snr_db / 10.0))
    out = pcm.copy()
    out[start:stop] += gain * noise
    return np.clip(out, -1.0, 32767 / 32768).astype(np.float32)


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray, first_voiced: int, last_voiced: int) -> float:
    """The SNR actually mixed (for checks): speech active power over the added signal's mean power."""
    start, stop = first_voiced * FRAME, min(len(clean), (last_voiced + 1) * FRAME)
    added = np.asarray(noisy, dtype=np.float64)[start:stop] - np.asarray(clean, dtype=np.float64)[start:stop]
    return 10 * math.log10(active_power(np.asarray(clean, np.float64), first_voiced, last_voiced)
                           / max(float(np.mean(added**2)), 1e-20))
