#!/usr/bin/env python3
"""Synthesize the Spanish speech fixtures (fixtures/audio/es-*.wav) that the es→en direction speaks.

    .venv/bin/python scripts/make_spanish_fixtures.py          # synthesize the WAVs, rewrite manifest.json
    .venv/bin/python scripts/make_spanish_fixtures.py --check  # exit 1: a WAV differs from a fresh synthesis

Nothing here was recorded. Each clip is espeak-ng 1.51 (voice "es", its default rate and pitch) reading
one of the Spanish reference translations written by hand for the English clips (SPECS in
scripts/make_fixtures.py); a text shared by two English clips (forever-2, forever-4) is spoken once.
espeak-ng's 22.05 kHz output is resampled to 16 kHz (polyphase), given 160 ms of digital silence on each
side (espeak-ng starts speaking at once), then 80 Hz high-passed and trimmed to the phrase plus 160 ms on
each side exactly as make_fixtures.py --build treats a recording, and analysed by
make_fixtures.py with the same rule (voiced = 20 ms frame > -45 dBFS). The whole chain is deterministic:
the same espeak-ng version gives the same samples (--check verifies it, to CHECK_TOLERANCE).

Manifest entry: id ``es-<English id>``, ``language: "es"``, transcript = the Spanish text as written,
``translations: {"en": <the English clip's transcript>}``, ``synthetic: true``, ``engine``, ``voice``.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass

import make_fixtures as mf
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ENGINE = "espeak-ng 1.51"
VOICE = "es"
RATE = 16000  # as the English clips
ESPEAK_TIMEOUT_S = 30.0
# Samples a fresh synthesis may differ by (int16 steps): the filters' float rounding is not promised
# bit-exact across CPUs; espeak-ng's own output is.
CHECK_TOLERANCE = 2
LICENCE = ("Synthesized from this repository's own reference text (SPECS in scripts/make_fixtures.py); "
           "no third-party recording or text")


@dataclass(frozen=True)
class SpanishSpec:
    id: str
    english: mf.ClipSpec  # the clip whose Spanish reference is spoken

    @property
    def text(self) -> str:
        return self.english.es

    @property
    def source(self) -> str:
        return (f"synthesized with {ENGINE} (voice {VOICE}) from the Spanish reference translation of "
                f"fixture {self.english.id} in this manifest (16 kHz, 80 Hz high-pass, trimmed)")


def spanish_specs() -> list[SpanishSpec]:
    """One clip per distinct Spanish reference, in the English clips' order."""
    seen: set[str] = set()
    out = []
    for spec in mf.SPECS:
        if spec.es not in seen:
            seen.add(spec.es)
            out.append(SpanishSpec(f"es-{spec.id}", spec))
    return out


def espeak_version() -> str:
    proc = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True,
                          timeout=ESPEAK_TIMEOUT_S)
    return proc.stdout.strip()


def synthesize(text: str) -> np.ndarray:
    """The trimmed 16 kHz int16 clip of `text` (text on stdin: never read as an option)."""
    proc = subprocess.run(["espeak-ng", "-v", VOICE, "--stdout"], input=text.encode(), capture_output=True,
                          check=True, timeout=ESPEAK_TIMEOUT_S)
    native, native_rate = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if native_rate != 22050:
        raise RuntimeError(f"espeak-ng answered {native_rate} Hz, expected 22050")
    resampled = resample_poly(native, 320, 441)  # 22050 × 320/441 = 16000
    # espeak-ng starts speaking within a frame or two: room for the 160 ms lead-in the recordings have.
    pad = np.zeros(mf.MARGIN_FRAMES * round(RATE * mf.FRAME_S))
    speech = np.concatenate([pad, resampled, pad])
    samples = mf.highpass(np.clip(np.round(speech * 32768), -32768, 32767).astype(np.int16), RATE)
    start, end = mf.phrase_window(samples, RATE, text)
    return samples[start:end]


def spanish_entries() -> list[tuple[dict[str, object], dict[str, float]]]:
    """Manifest entries (and report numbers) of the committed Spanish WAVs, analysed like the English."""
    out = []
    for spec in spanish_specs():
        head: dict[str, object] = {
            "id": spec.id, "file": f"{spec.id}.wav", "language": "es", "transcript": spec.text,
            "translations": {"en": spec.english.transcript},
        }
        tail: dict[str, object] = {
            "synthetic": True, "engine": ENGINE, "voice": VOICE, "source": spec.source, "licence": LICENCE,
        }
        out.append(mf.analyse_wav(head, tail))
    return out


def differs(current: np.ndarray, fresh: np.ndarray) -> bool:
    """Whether a committed clip is not what a fresh synthesis gives (beyond CHECK_TOLERANCE)."""
    if current.shape != fresh.shape:
        return True
    return bool(np.abs(current.astype(np.int32) - fresh.astype(np.int32)).max(initial=0) > CHECK_TOLERANCE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only verify the WAVs equal a fresh synthesis")
    args = ap.parse_args(argv)
    version = espeak_version()
    if f"eSpeak NG text-to-speech: {ENGINE.split()[1]}" not in version:
        print(f"need {ENGINE} (its output differs between versions); found: {version}", file=sys.stderr)
        return 1
    stale = []
    for spec in spanish_specs():
        samples = synthesize(spec.text)
        path = mf.OUT_DIR / f"{spec.id}.wav"
        if args.check:
            current = sf.read(str(path), dtype="int16")[0] if path.exists() else np.zeros(0, np.int16)
            if differs(current, samples):
                stale.append(spec.id)
            continue
        sf.write(str(path), samples, RATE, subtype="PCM_16")
        print(f"{spec.id:<15} {len(samples) / RATE:5.2f} s  {spec.text}")
    if args.check:
        if stale:
            print(f"differ from a fresh synthesis: {', '.join(stale)}", file=sys.stderr)
        return 1 if stale else 0
    return mf.main([])  # re-analyse every clip and rewrite manifest.json


if __name__ == "__main__":
    sys.exit(main())
