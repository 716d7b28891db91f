"""The speech corpus as the tester sees it: manifest, audio, speech analysis, Opus pre-encoding.

Timing conventions (the tester times "last voiced packet" by index, so these must hold exactly):

* Analysis frames are 20 ms (960 samples) of the clip resampled to 48 kHz, aligned to the clip's
  first sample; the last partial frame is zero-padded. That is the grid the tester packetizes on.
* A frame is voiced when its RMS exceeds ``VOICED_DBFS`` (-45 dBFS). The gateway's VAD uses
  -50 dBFS (400 ms hangover) on the decoded stream and so hears speech end 0-100 ms later on this
  corpus. ``speech_start_s`` is the start of the first voiced frame, ``speech_end_s`` the end of the
  last one (clamped to the clip's duration): the last voiced frame is ceil(t*50)-1, not floor(t*50).
* Packet i of ``encode_opus`` decodes (with no pre-skip, as a WebRTC receiver does) to clip time
  [20 i, 20 i + 20) ms: the encoder's look-ahead (pre-skip, 312 samples for libopus) is compensated
  by feeding it the clip advanced by that many samples. So frame index == packet index.
"""

from __future__ import annotations

import fractions
import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf

from loadtest.errors import UsageError

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz: one Opus packet
FRAME_S = FRAME_SAMPLES / RATE
FRAMES_PER_S = RATE // FRAME_SAMPLES
VOICED_DBFS = -45.0
DURATION_TOLERANCE_S = 0.020
DEFAULT_BITRATE = 32000
# The language a speaker speaks unless a plan picks another (FixtureLibrary.ids vs ids_for).
DEFAULT_SOURCE_LANGUAGE = "en"
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "fixtures" / "audio" / "manifest.json"


class FixtureError(UsageError):
    """The manifest or one of its clips is unusable; the message names the fixture and field/file."""


@dataclass(frozen=True)
class Fixture:
    id: str
    path: Path
    language: str
    transcript: str
    translations: dict[str, str]
    duration_s: float
    speech_start_s: float
    speech_end_s: float
    max_internal_pause_s: float
    sample_rate: int
    source: str
    licence: str
    synthetic: bool = False  # spoken by a speech synthesizer, not recorded
    engine: str = ""  # the synthesizer and its version (synthetic clips)
    voice: str = ""  # the synthesizer's voice (synthetic clips)

    @property
    def first_voiced(self) -> int:
        """Index of the first voiced 20 ms frame (== Opus packet index)."""
        return math.floor(self.speech_start_s * FRAMES_PER_S + 1e-6)

    @property
    def last_voiced(self) -> int:
        """Index of the last voiced frame. speech_end_s is that frame's *end*: floor(t*50) would be
        the packet after it, hence ceil - 1 (the epsilon absorbs float noise like 3.46*50)."""
        return math.ceil(self.speech_end_s * FRAMES_PER_S - 1e-6) - 1


@dataclass(frozen=True)
class SpeechSpan:
    """Result of the frame-energy analysis of one clip (see module docstring)."""

    first_voiced: int
    last_voiced: int
    speech_start_s: float
    speech_end_s: float
    max_internal_pause_s: float


@dataclass(frozen=True)
class EncodedClip:
    fixture_id: str
    packets: tuple[bytes, ...]  # one Opus payload per 20 ms frame; a tuple: shared by every caller
    first_voiced: int
    last_voiced: int
    duration_s: float
    # RFC 6464 audio level of each packet's source frame: -dBov, 0 (loudest) .. 127 (silence).
    levels: tuple[int, ...] = ()
    snr_db: float | None = None  # noise mixed in at this SNR (loadtest/noise.py); None: the clean clip


# --------------------------------------------------------------------------- manifest

_STR_FIELDS = ("file", "language", "transcript", "source", "licence")
_FLOAT_FIELDS = ("duration_s", "speech_start_s", "speech_end_s", "max_internal_pause_s")


def _entries(doc: Any, where: Path) -> list[Any]:
    # A bare list is the format; an object with a "fixtures" list is accepted for forward growth.
    if isinstance(doc, dict) and isinstance(doc.get("fixtures"), list):
        return doc["fixtures"]
    if isinstance(doc, list):
        return doc
    raise FixtureError(f"{where}: expected a JSON list of fixtures")


def _parse_entry(item: Any, index: int, base: Path) -> Fixture:
    if not isinstance(item, dict):
        raise FixtureError(f"manifest entry {index}: must be an object")
    fid = item.get("id")
    if not isinstance(fid, str) or not fid:
        raise FixtureError(f"manifest entry {index}: field 'id' missing or not a non-empty string")

    def bad(field: str, why: str) -> FixtureError:
        return FixtureError(f"fixture {fid!r}: field {field!r} {why}")

    for key in _STR_FIELDS:
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise bad(key, "missing or not a non-empty string")
    floats: dict[str, float] = {}
    for key in _FLOAT_FIELDS:
        value = item.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad(key, "missing or not a number")
        floats[key] = float(value)
    rate = item.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise bad("sample_rate", "missing or not a positive integer")
    translations = item.get("translations")
    if not isinstance(translations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in translations.items()
    ):
        raise bad("translations", "must map language codes to non-empty strings")

    duration, start, end = floats["duration_s"], floats["speech_start_s"], floats["speech_end_s"]
    if duration <= 0:
        raise bad("duration_s", f"must be positive (got {duration})")
    if not 0 <= start < duration:
        raise bad("speech_start_s", f"must lie in [0, duration_s={duration}) (got {start})")
    if not start < end <= duration + 1e-6:
        raise bad("speech_end_s", f"must lie in (speech_start_s={start}, duration_s={duration}] (got {end})")
    if not 0 <= floats["max_internal_pause_s"] < end - start:
        raise bad("max_internal_pause_s", "must be within the speech span")
    synthetic = item.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise bad("synthetic", "must be true or false")
    for key in ("engine", "voice"):
        if key in item and not isinstance(item[key], str):
            raise bad(key, "must be a string")
        if synthetic and not str(item.get(key, "")).strip():
            raise bad(key, "is required for a synthetic clip (which synthesizer, which voice)")

    path = (base / item["file"]).resolve()
    if not path.is_file():
        raise FixtureError(f"fixture {fid!r}: audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise FixtureError(f"fixture {fid!r}: cannot read audio file {path}: {exc}") from None
    if info.samplerate != rate:
        raise bad("sample_rate", f"is {rate} but {path.name} is {info.samplerate} Hz")
    actual = info.frames / info.samplerate
    if abs(actual - duration) > DURATION_TOLERANCE_S:
        raise bad("duration_s", f"is {duration} but {path.name} lasts {actual:.3f} s (stale manifest?)")

    return Fixture(
        id=fid, path=path, language=item["language"], transcript=item["transcript"],
        translations=dict(translations), duration_s=duration, speech_start_s=start, speech_end_s=end,
        max_internal_pause_s=floats["max_internal_pause_s"], sample_rate=rate,
        source=item["source"], licence=item["licence"],
        synthetic=synthetic, engine=str(item.get("engine", "")), voice=str(item.get("voice", "")),
    )


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> list[Fixture]:
    """Read and validate a manifest; files are resolved relative to the manifest's directory."""
    path = Path(path)
    if not path.is_file():
        raise FixtureError(f"fixture manifest not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FixtureError(f"{path}: not valid JSON: {exc}") from None
    fixtures: list[Fixture] = []
    seen: set[str] = set()
    for i, item in enumerate(_entries(doc, path)):
        fixture = _parse_entry(item, i, path.parent)
        if fixture.id in seen:
            raise FixtureError(f"fixture {fixture.id!r}: field 'id' is duplicated in {path}")
        seen.add(fixture.id)
        fixtures.append(fixture)
    if not fixtures:
        raise FixtureError(f"{path}: no fixtures")
    return fixtures


# --------------------------------------------------------------------------- audio and analysis

def to_48k(samples: np.ndarray, rate: int) -> np.ndarray:
    """float mono at ``rate`` → float32 at 48 kHz (polyphase: exact for 16 kHz → ×3)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == RATE:
        return samples
    from scipy.signal import resample_poly  # 0.6 s to import: only when a clip needs resampling

    g = math.gcd(RATE, rate)
    return resample_poly(samples, RATE // g, rate // g).astype(np.float32)


def read_mono(path: Path | str) -> tuple[np.ndarray, int]:
    """float32 mono samples in [-1, 1) and the file's sample rate (channels are averaged)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32), int(rate)


def load_pcm48k(fixture: Fixture) -> np.ndarray:
    samples, rate = read_mono(fixture.path)
    return to_48k(samples, rate)


def frame_levels_dbfs(pcm48k: np.ndarray) -> np.ndarray:
    """RMS in dBFS of each 20 ms frame, aligned to the first sample, last frame zero-padded."""
    n = max(1, math.ceil(len(pcm48k) / FRAME_SAMPLES))
    frames = np.zeros(n * FRAME_SAMPLES, dtype=np.float64)
    frames[: len(pcm48k)] = pcm48k
    rms = np.sqrt(np.mean(frames.reshape(n, FRAME_SAMPLES) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def audio_levels(pcm48k: np.ndarray) -> tuple[int, ...]:
    """Per-frame RFC 6464 levels, as a browser sends them in the ssrc-audio-level header extension.

    Rounded toward silence (floor of -dBFS) so that a frame is above VOICED_DBFS exactly when its
    level is below -VOICED_DBFS: a gateway that segments on the header sees the manifest's speech span.
    """
    dbfs = frame_levels_dbfs(pcm48k)
    return tuple(int(min(127, max(0, math.floor(-x)))) for x in dbfs)


def analyse_speech(pcm48k: np.ndarray, threshold_dbfs: float = VOICED_DBFS) -> SpeechSpan:
    """Voiced frames = RMS > threshold; span from the first to the last, longest unvoiced run inside."""
    voiced = frame_levels_dbfs(pcm48k) > threshold_dbfs
    idx = np.flatnonzero(voiced)
    if idx.size == 0:
        raise ValueError(f"no frame above {threshold_dbfs} dBFS")
    first, last = int(idx[0]), int(idx[-1])
    gaps = np.diff(idx) - 1  # unvoiced frames between consecutive voiced ones
    longest = int(gaps.max()) if gaps.size else 0
    duration = len(pcm48k) / RATE
    return SpeechSpan(
        first_voiced=first, last_voiced=last,
        speech_start_s=round(first * FRAME_S, 6),
        speech_end_s=round(min((last + 1) * FRAME_S, duration), 6),
        max_internal_pause_s=round(longest * FRAME_S, 6),
    )


# --------------------------------------------------------------------------- Opus

def _new_encoder(bitrate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.time_base = fractions.Fraction(1, RATE)
    # voip: what browsers and aiortc use for a microphone; 20 ms frames: the packetization above.
    ctx.options = {"application": "voip", "frame_duration": "20"}
    ctx.open()
    return ctx


def encoder_preskip(ctx: av.AudioCodecContext) -> int:
    """The encoder's look-ahead in 48 kHz samples, from its OpusHead (RFC 7845: bytes 10-11, LE)."""
    head = bytes(ctx.extradata or b"")
    if len(head) < 12 or not head.startswith(b"OpusHead"):
        raise RuntimeError("libopus encoder gave no OpusHead: cannot compensate its look-ahead")
    return int.from_bytes(head[10:12], "little")


def encode_opus(pcm48k: np.ndarray, bitrate: int = DEFAULT_BITRATE) -> list[bytes]:
    """Raw Opus payloads, one per 20 ms frame, ceil(len/960) of them; packet i ↔ clip [20i, 20i+20) ms.

    The encoder delays its output by its look-ahead (pre-skip). RTP receivers do not skip it, so we
    drop that many samples from the clip's head (margin noise, ~6.5 ms) and pad the tail with zeros:
    decoded packet i then lines up with analysis frame i instead of lagging it by 312 samples.
    """
    n_packets = max(1, math.ceil(len(pcm48k) / FRAME_SAMPLES))
    ctx = _new_encoder(bitrate)
    skip = encoder_preskip(ctx)
    pcm = np.clip(np.asarray(pcm48k, dtype=np.float32)[skip:] * 32768.0, -32768, 32767).astype(np.int16)
    padded = np.zeros(n_packets * FRAME_SAMPLES, dtype=np.int16)
    padded[: len(pcm)] = pcm
    packets: list[bytes] = []
    for i in range(n_packets):
        frame = av.AudioFrame.from_ndarray(
            padded[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = i * FRAME_SAMPLES
        frame.time_base = ctx.time_base
        packets.extend(bytes(p) for p in ctx.encode(frame))
    packets.extend(bytes(p) for p in ctx.encode(None))  # flush: the look-ahead's worth is still inside
    # The flush yields one extra packet carrying only the zero padding past the clip's end.
    if len(packets) < n_packets:
        raise RuntimeError(f"libopus returned {len(packets)} packets for {n_packets} frames")
    return packets[:n_packets]


@functools.cache
def silence_packet(bitrate: int = DEFAULT_BITRATE) -> bytes:
    """One 20 ms Opus frame of digital silence (steady state, not the encoder's first packet)."""
    return encode_opus(np.zeros(5 * FRAME_SAMPLES, dtype=np.float32), bitrate)[2]


def decode_opus(packets: Iterable[bytes]) -> np.ndarray:
    """float32 48 kHz mono; no pre-skip applied (like an RTP receiver). For checks and tests."""
    ctx = av.CodecContext.create("libopus", "r")
    ctx.sample_rate = RATE
    ctx.layout = "mono"
    out: list[np.ndarray] = []
    for payload in packets:
        for frame in ctx.decode(av.Packet(payload)):
            pcm = frame.to_ndarray().reshape(-1)
            out.append(pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------- library

class FixtureLibrary:
    """A manifest loaded once; each clip Opus-encoded once, on first use, then shared.

    No lock: the worst race (two threads encoding the same clip at once) yields two equal results
    and one wins the dict slot; a lock would have to work across gevent and native threads.
    """

    def __init__(self, manifest: Path | str = DEFAULT_MANIFEST, bitrate: int = DEFAULT_BITRATE) -> None:
        self.manifest = Path(manifest)
        self.bitrate = bitrate
        self._fixtures = {f.id: f for f in load_manifest(self.manifest)}
        self._clips: dict[Any, EncodedClip] = {}

    @property
    def ids(self) -> list[str]:
        """The clips a speaker says by default: those in DEFAULT_SOURCE_LANGUAGE (en)."""
        return self.ids_for(DEFAULT_SOURCE_LANGUAGE)

    def ids_for(self, language: str) -> list[str]:
        """The clips spoken in `language` ("es", or "es-MX": primary subtags compared), manifest order."""
        def primary(tag: str) -> str:
            return tag.strip().lower().replace("_", "-").split("-")[0]

        return [i for i, f in self._fixtures.items() if primary(f.language) == primary(language)]

    def fixture(self, fixture_id: str) -> Fixture:
        try:
            return self._fixtures[fixture_id]
        except KeyError:
            raise FixtureError(f"unknown fixture {fixture_id!r} (manifest {self.manifest})") from None

    def require(self, fixture_ids: Iterable[str]) -> None:
        """Fail early, naming every id the manifest lacks."""
        missing = [i for i in fixture_ids if i not in self._fixtures]
        if missing:
            raise FixtureError(f"unknown fixture(s) {', '.join(map(repr, missing))} in {self.manifest}; "
                               f"known: {', '.join(self._fixtures)}")

    def get(self, fixture_id: str, snr_db: float | None = None, noise: str = "pink",
            noise_seed: int = 0) -> EncodedClip:
        """The clip encoded once; with ``snr_db``, once per (clip, SNR, noise kind, seed)."""
        key = fixture_id if snr_db is None else (fixture_id, snr_db, noise, noise_seed)
        clip = self._clips.get(key)
        if clip is None:
            fixture = self.fixture(fixture_id)
            pcm = load_pcm48k(fixture)
            if snr_db is not None:
                from loadtest.noise import mix_at_snr

                pcm = mix_at_snr(pcm, fixture.first_voiced, fixture.last_voiced, snr_db, noise, noise_seed,
                                 fixture.id)
            packets = tuple(encode_opus(pcm, self.bitrate))
            clip = EncodedClip(
                fixture_id=fixture.id, packets=packets,
                first_voiced=fixture.first_voiced,
                last_voiced=min(fixture.last_voiced, len(packets) - 1),
                duration_s=len(packets) * FRAME_S,
                levels=audio_levels(pcm)[: len(packets)],
                snr_db=snr_db,
            )
            self._clips[key] = clip
        return clip

    def clips(self) -> list[EncodedClip]:
        return [self.get(i) for i in self._fixtures]
