#!/usr/bin/env python3
"""Build the speech fixtures: fixtures/audio/*.wav and fixtures/audio/manifest.json.

    .venv/bin/python scripts/make_fixtures.py            # re-analyse the committed WAVs → manifest.json
    .venv/bin/python scripts/make_fixtures.py --build    # first re-cut the WAVs from the recordings
    .venv/bin/python scripts/make_fixtures.py --check    # exit 1 if manifest.json is not up to date

The manifest also lists the Spanish clips synthesized by scripts/make_spanish_fixtures.py (es-*.wav),
analysed here the same way.

Hand-typed (in SPECS below): transcript, Spanish translation, source, licence. Everything else in the
manifest comes from the audio: duration, sample rate and the speech analysis of loadtest.fixtures
(20 ms frames at 48 kHz, voiced = RMS > -45 dBFS).

--build cuts each recording to its phrase plus 160 ms ("~150 ms" on the 20 ms grid) of the original
audio on each side, less where the recording starts or ends sooner. Before anything else the recording
is high-passed at 80 Hz (see highpass(): rumble the gateway never hears). The phrase is found with the
manifest's own rule (voiced = 20 ms frame > -45 dBFS), its runs grouped across pauses shorter than
0.35 s; exactly one run with a loud frame must remain; quiet blips at its ends are left out. Cuts fall
on the source's 20 ms grid and keep its sample rate (16 kHz stays 16 kHz), so the clip's analysis
reproduces the phrase span.
Sources: Debian pocketsphinx-testdata, and the pocketsphinx 5.1.1 sdist from PyPI (downloaded with pip
unless --sdist points at it).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadtest.fixtures import (  # noqa: E402
    FRAME_S,
    VOICED_DBFS,
    analyse_speech,
    frame_levels_dbfs,
    read_mono,
    to_48k,
)

OUT_DIR = REPO / "fixtures" / "audio"
MANIFEST = OUT_DIR / "manifest.json"
DEB_DATA = Path("/usr/share/pocketsphinx/test/data")
SDIST = "pocketsphinx==5.1.1"
SDIST_ROOT = "pocketsphinx-5.1.1/"
MARGIN_FRAMES = 8  # 160 ms: "~150 ms" on the 20 ms grid
LOUD_DBFS = -35.0  # a run of voiced frames with none this loud is a breath or a click
BLIP_GAP_FRAMES = 5  # 100 ms
MIN_S, MAX_S = 1.0, 7.0
MAX_PAUSE_S = 0.35  # the gateway's VAD (400 ms hangover, 20 ms frames) would split at this
SPLIT_GAP_FRAMES = math.ceil(MAX_PAUSE_S / FRAME_S - 1e-9)  # 18 unvoiced frames
GATEWAY_DBFS = -50.0
HIGHPASS_HZ = 80.0
EDGE_MAX_DBFS = -35.0

DEB = "Debian package pocketsphinx-testdata 0.8+5prealpha+1-15, /usr/share/pocketsphinx/test/data/"
SDIST_SRC = "PyPI pocketsphinx 5.1.1 source distribution, pocketsphinx-5.1.1/test/data/"
CMU_BSD = ("BSD-2-Clause (Carnegie Mellon University; Debian copyright file of pocketsphinx-testdata, "
           "'Files: *')")
SDIST_BSD = "BSD-2-Clause (Carnegie Mellon University; LICENSE of the pocketsphinx source distribution)"
LIBRIVOX = ("Public domain (LibriVox recording of Jane Austen, Sense and Sensibility, chapter 1); "
            "shipped in pocketsphinx-testdata under its BSD-2-Clause terms (Debian copyright, 'Files: *')")


@dataclass(frozen=True)
class ClipSpec:
    id: str
    origin: str  # "deb:<path under DEB_DATA>" or "sdist:<path under the sdist root>"
    transcript: str  # lowercase, no punctuation, as spoken (the sources' own convention)
    es: str
    licence: str

    @property
    def source(self) -> str:
        kind, rel = self.origin.split(":", 1)
        return (DEB if kind == "deb" else SDIST_SRC) + rel + " (80 Hz high-pass, trimmed)"


_SS = "deb:librivox/sense_and_sensibility_01_austen_64kb-{}.wav"
SPECS: list[ClipSpec] = [
    ClipSpec("cards-001", "deb:cards/001.wav", "ten of clubs", "Diez de tréboles.", CMU_BSD),
    ClipSpec("cards-002", "deb:cards/002.wav", "four queen of clubs", "Cuatro, reina de tréboles.", CMU_BSD),
    ClipSpec("cards-003", "deb:cards/003.wav", "seven of clubs", "Siete de tréboles.", CMU_BSD),
    ClipSpec("cards-004", "deb:cards/004.wav", "five five", "Cinco, cinco.", CMU_BSD),
    ClipSpec("cards-005", "deb:cards/005.wav", "eight of spades four of clubs seven of hearts",
             "Ocho de picas, cuatro de tréboles, siete de corazones.", CMU_BSD),
    ClipSpec("austen-0870", _SS.format("0870"),
             "and mister john dashwood had then leisure to consider how much there might be prudently "
             "in his power to do for them",
             "Y el señor John Dashwood tuvo entonces tiempo para considerar cuánto podría estar "
             "prudentemente en su mano hacer por ellas.", LIBRIVOX),
    ClipSpec("austen-0880", _SS.format("0880"), "he was not an ill disposed young man",
             "No era un joven malintencionado.", LIBRIVOX),
    ClipSpec("austen-0890", _SS.format("0890"),
             "unless to be rather cold hearted and rather selfish is to be ill disposed",
             "A menos que ser algo frío de corazón y algo egoísta equivalga a ser malintencionado.",
             LIBRIVOX),
    # The testdata transcription reads "a more a amiable"; the book, pocketsphinx and whisper-tiny all
    # have "a more amiable", and forced alignment squeezes the second "a" into its 40 ms minimum.
    ClipSpec("austen-0920", _SS.format("0920"),
             "had he married a more amiable woman he might have been made still more respectable than "
             "he was",
             "Si se hubiera casado con una mujer más amable, podría haber llegado a ser aún más "
             "respetable de lo que era.", LIBRIVOX),
    ClipSpec("austen-0930", _SS.format("0930"), "he might even have been made amiable himself",
             "Incluso él mismo podría haberse vuelto amable.", LIBRIVOX),
    ClipSpec("goforward", "deb:goforward.raw", "go forward ten meters", "Avanza diez metros.", CMU_BSD),
    ClipSpec("something", "deb:something.raw", "go somewhere and do something",
             "Ve a algún sitio y haz algo.", CMU_BSD),
    ClipSpec("forever-2", "sdist:test/data/forever/input_2_16k.wav", "feels like these days go on forever",
             "Parece que estos días no se acaban nunca.", SDIST_BSD),
    ClipSpec("forever-4", "sdist:test/data/forever/input_4_16k.wav", "feels like these days go on forever",
             "Parece que estos días no se acaban nunca.", SDIST_BSD),
]


# --------------------------------------------------------------------------- sources

class Sources:
    """Reads the original recordings as int16 16 kHz mono; fetches the sdist once, if needed."""

    def __init__(self, sdist: Path | None) -> None:
        self._sdist = sdist
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def _sdist_tar(self) -> Path:
        if self._sdist is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pocketsphinx-sdist-")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", SDIST, "-d", self._tmp.name], check=True)
            self._sdist = next(Path(self._tmp.name).glob("pocketsphinx-*.tar.gz"))
        return self._sdist

    def read(self, origin: str) -> tuple[np.ndarray, int]:
        kind, rel = origin.split(":", 1)
        if kind == "deb":
            path = DEB_DATA / rel
            if path.suffix == ".raw":  # headerless: 16 kHz, 16-bit little-endian, mono
                return np.fromfile(path, dtype="<i2"), 16000
            data, rate = sf.read(str(path), dtype="int16")
            return data, rate
        sdist = self._sdist_tar()
        if sdist.is_dir():
            data, rate = sf.read(str(sdist / rel), dtype="int16")
            return data, rate
        with tarfile.open(sdist) as tar:
            member = tar.extractfile(SDIST_ROOT + rel)
            assert member is not None, rel
            data, rate = sf.read(io.BytesIO(member.read()), dtype="int16")
            return data, rate


def _loud(levels: np.ndarray, run: np.ndarray) -> bool:
    return bool(run.size) and bool(levels[run].max() > LOUD_DBFS)


def phrase_frames(levels: np.ndarray) -> tuple[int, int]:
    """First and last voiced frame of the one spoken phrase in a (high-passed) recording.

    Voiced frames are grouped into runs split by pauses the gateway would split at (>= 0.35 s); runs
    with no frame above LOUD_DBFS (a breath, a click) are dropped. More than one remaining run means
    several phrases: such a recording needs a hand-chosen window and a matching transcript. A quiet
    blip at either end of the phrase, >= 100 ms from the rest, is dropped too (it is not speech, and
    counting it would move speech_start/end and inflate the internal pause).
    """
    voiced = np.flatnonzero(levels > VOICED_DBFS)
    runs = np.split(voiced, np.flatnonzero(np.diff(voiced) - 1 >= SPLIT_GAP_FRAMES) + 1)
    speech = [r for r in runs if _loud(levels, r)]
    if len(speech) != 1:
        spans = ", ".join(f"{r[0] * FRAME_S:.2f}-{(r[-1] + 1) * FRAME_S:.2f} s" for r in speech)
        raise RuntimeError(f"expected one phrase, found {len(speech)}: {spans}")
    parts = np.split(speech[0], np.flatnonzero(np.diff(speech[0]) - 1 >= BLIP_GAP_FRAMES) + 1)
    while not _loud(levels, parts[0]):
        parts.pop(0)
    while not _loud(levels, parts[-1]):
        parts.pop()
    return int(parts[0][0]), int(parts[-1][-1])


def highpass(samples: np.ndarray, rate: int) -> np.ndarray:
    """Remove sub-speech rumble and DC drift (int16 in, int16 out; zero-phase, so no time shift).

    The recordings carry 40-50 dBFS of rumble below 80 Hz in their pauses. A WebRTC client's audio
    processing (high-pass on by default) and Opus in VoIP mode (60-100 Hz high-pass) both remove it,
    so the gateway never hears it; left in, it made the -45 dBFS analysis end speech 100-260 ms later
    than the decoded Opus stream does. Speech (F0 >= 85 Hz) loses at most ~3 dB at its lowest partial.
    """
    sos = butter(2, HIGHPASS_HZ, "highpass", fs=rate, output="sos")
    filtered = sosfiltfilt(sos, samples.astype(np.float64))
    return np.clip(np.round(filtered), -32768, 32767).astype(np.int16)


def phrase_window(samples: np.ndarray, rate: int, clip_id: str) -> tuple[int, int]:
    """[start, end) in samples of the phrase plus up to MARGIN_FRAMES of the audio on each side."""
    levels = frame_levels_dbfs(to_48k(samples.astype(np.float32) / 32768.0, rate))
    try:
        first, last = phrase_frames(levels)
    except RuntimeError as exc:
        raise RuntimeError(f"{clip_id}: {exc}") from None
    # Margins stop short of any other voiced frame (a dropped blip), so they hold none and the
    # clip's analysis reproduces the phrase span exactly.
    voiced = np.flatnonzero(levels > VOICED_DBFS)
    lo = max([first - MARGIN_FRAMES, 0] + [int(i) + 1 for i in voiced if i < first])
    hi = min([last + 1 + MARGIN_FRAMES, len(levels)] + [int(i) for i in voiced if i > last])
    step = round(rate * FRAME_S)  # 20 ms in source samples: cutting on the grid keeps the frames
    return lo * step, min(len(samples), hi * step)


def cut(spec: ClipSpec, sources: Sources) -> tuple[Path, str]:
    """Write the high-passed phrase plus up to MARGIN_FRAMES of the recording on each side."""
    samples, rate = sources.read(spec.origin)
    if samples.ndim != 1:
        raise RuntimeError(f"{spec.id}: expected mono, got {samples.shape}")
    samples = highpass(samples, rate)
    start, end = phrase_window(samples, rate, spec.id)
    path = OUT_DIR / f"{spec.id}.wav"
    sf.write(str(path), samples[start:end], rate, subtype="PCM_16")
    return path, f"source {start / rate:.2f}-{end / rate:.2f} s of {len(samples) / rate:.2f}"


# --------------------------------------------------------------------------- analysis

def analyse(spec: ClipSpec) -> tuple[dict[str, object], dict[str, float]]:
    """The manifest entry for a committed WAV, and extra numbers for the report table."""
    head = {"id": spec.id, "file": f"{spec.id}.wav", "language": "en", "transcript": spec.transcript,
            "translations": {"es": spec.es}}
    return analyse_wav(head, {"source": spec.source, "licence": spec.licence})


def analyse_wav(head: dict[str, object], tail: dict[str, object]
                ) -> tuple[dict[str, object], dict[str, float]]:
    """An entry: `head` (id, file, ...), the fields analysed from OUT_DIR/<file>, then `tail`."""
    samples, rate = read_mono(OUT_DIR / str(head["file"]))
    pcm = to_48k(samples, rate)
    span = analyse_speech(pcm)
    entry: dict[str, object] = {
        **head,
        "duration_s": round(len(samples) / rate, 4),
        "speech_start_s": round(span.speech_start_s, 3),
        "speech_end_s": round(span.speech_end_s, 3),
        "max_internal_pause_s": round(span.max_internal_pause_s, 3),
        "sample_rate": rate,
        **tail,
    }
    levels = frame_levels_dbfs(pcm)
    loud = np.flatnonzero(levels > GATEWAY_DBFS)
    extra = {
        "gateway_end_s": (int(loud[-1]) + 1) * FRAME_S,  # where a -50 dBFS VAD last hears sound
        # Loudest of the first and last 40 ms: a word cut in half would show here.
        "edge_dbfs": float(max(levels[:2].max(), levels[-2:].max())),
    }
    return entry, extra


def problems(entry: dict[str, object], extra: dict[str, float]) -> list[str]:
    out = []
    if extra["edge_dbfs"] > EDGE_MAX_DBFS:
        out.append(f"clip edge at {extra['edge_dbfs']:.0f} dBFS: cut inside speech?")
    duration = float(entry["duration_s"])  # type: ignore[arg-type]
    if not MIN_S <= duration <= MAX_S:
        out.append(f"duration {duration} s outside {MIN_S}-{MAX_S} s")
    if float(entry["max_internal_pause_s"]) >= MAX_PAUSE_S:  # type: ignore[arg-type]
        out.append(f"internal pause {entry['max_internal_pause_s']} s would split the utterance")
    return out


def render(entries: list[dict[str, object]]) -> str:
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="re-cut the WAVs from the original recordings")
    ap.add_argument("--sdist", type=Path, help="pocketsphinx 5.1.1 sdist (.tar.gz or extracted directory)")
    ap.add_argument("--check", action="store_true", help="only verify manifest.json is up to date")
    args = ap.parse_args(argv)

    notes: dict[str, str] = {}
    if args.build:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        sources = Sources(args.sdist)
        for spec in SPECS:
            _, notes[spec.id] = cut(spec, sources)

    from make_spanish_fixtures import spanish_entries  # it imports this module: import it late

    entries, failed = [], False
    print(f"{'id':<15} {'dur':>5} {'speech':>11} {'pause':>5} {'-50dB end':>9} {'edges':>6}  notes")
    for entry, extra in [analyse(spec) for spec in SPECS] + spanish_entries():
        entries.append(entry)
        bad = problems(entry, extra)
        failed |= bool(bad)
        clip_id = str(entry["id"])
        print(f"{clip_id:<15} {entry['duration_s']:>5.2f} {entry['speech_start_s']:>5.2f}-"
              f"{entry['speech_end_s']:<5.2f} {entry['max_internal_pause_s']:>5.2f} "
              f"{extra['gateway_end_s']:>9.2f} {extra['edge_dbfs']:>6.1f}  "
              f"{'; '.join(bad + [notes.get(clip_id, '')])}")
    text = render(entries)
    if args.check:
        current = MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else ""
        if current != text:
            print(f"{MANIFEST} is out of date: run scripts/make_fixtures.py", file=sys.stderr)
            return 1
        return 1 if failed else 0
    if failed:
        print("some clips break the corpus rules (see above): manifest not written", file=sys.stderr)
        return 1
    MANIFEST.write_text(text, encoding="utf-8")
    print(f"wrote {MANIFEST.relative_to(REPO)} ({len(entries)} fixtures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
