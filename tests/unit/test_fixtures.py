"""The speech corpus: manifest ↔ audio consistency, validation errors, Opus pre-encoding."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from loadtest.fixtures import (
    DEFAULT_MANIFEST,
    DEFAULT_SOURCE_LANGUAGE,
    FRAME_SAMPLES,
    RATE,
    FixtureError,
    FixtureLibrary,
    SpeechSpan,
    analyse_speech,
    decode_opus,
    encode_opus,
    frame_levels_dbfs,
    load_manifest,
    load_pcm48k,
    read_mono,
    silence_packet,
    to_48k,
)
from tests.prereq import needs

pytestmark = pytest.mark.unit

MAX_PAUSE_S = 0.35  # the gateway's VAD would split an utterance at a pause this long
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fixtures():
    return load_manifest(DEFAULT_MANIFEST)


@pytest.fixture(scope="module")
def library():
    return FixtureLibrary(DEFAULT_MANIFEST)


def envelope_correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    ea = 10 ** (frame_levels_dbfs(a[:n]) / 20)
    eb = 10 ** (frame_levels_dbfs(b[:n]) / 20)
    return float(np.corrcoef(ea, eb)[0, 1])


# --------------------------------------------------------------------------- the committed corpus

def test_corpus_size_and_ids(fixtures):
    assert len(fixtures) >= 12
    assert len({f.id for f in fixtures}) == len(fixtures)


def test_each_fixture_matches_its_audio(fixtures):
    for f in fixtures:
        assert f.path.is_file(), f.id
        info = sf.info(str(f.path))
        assert info.channels == 1 and info.subtype == "PCM_16", f.id
        assert info.samplerate == f.sample_rate == 16000, f.id
        assert abs(info.frames / info.samplerate - f.duration_s) <= 0.020, f.id
        assert 1.0 <= f.duration_s <= 7.0, f.id
        assert f.language in ("en", "es") and f.transcript.strip() and f.source and f.licence, f.id
        other = "es" if f.language == "en" else "en"
        assert f.translations.get(other, "").strip(), f.id
        # Recorded English; the Spanish clips are synthesized, and say so.
        assert f.synthetic == (f.language == "es"), f.id
        assert not f.synthetic or (f.engine == "espeak-ng 1.51" and f.voice == "es"), f.id


def test_spanish_clips_speak_the_english_clips_references(fixtures):
    """es-<id> says <id>'s Spanish reference; its English reference is <id>'s transcript."""
    by_id = {f.id: f for f in fixtures}
    spanish = [f for f in fixtures if f.language == "es"]
    assert len(spanish) >= 10
    durations = sorted(f.duration_s for f in spanish)
    assert durations[0] < 1.5 and durations[-1] > 5.0  # short calls and long sentences
    for f in spanish:
        english = by_id[f.id.removeprefix("es-")]
        assert f.transcript == english.translations["es"], f.id
        assert f.translations == {"en": english.transcript}, f.id
    assert len({f.transcript for f in spanish}) == len(spanish)  # one clip per distinct text


def test_library_ids_are_the_default_language_and_ids_for_picks_one(library):
    """Plans that do not pick a language keep speaking English; two-way plans ask for Spanish."""
    assert DEFAULT_SOURCE_LANGUAGE == "en"
    assert library.ids == library.ids_for("en") == [i for i in library.ids if not i.startswith("es-")]
    assert all(library.fixture(i).language == "en" for i in library.ids)
    spanish = library.ids_for("es")
    assert spanish and all(i.startswith("es-") and library.fixture(i).language == "es" for i in spanish)
    assert library.ids_for("ES-mx") == spanish
    assert library.ids_for("fr") == []
    assert len(library.ids) + len(spanish) == len(load_manifest(DEFAULT_MANIFEST))


def test_speech_offsets_equal_a_fresh_analysis(fixtures):
    for f in fixtures:
        span = analyse_speech(load_pcm48k(f))
        assert 0 <= f.speech_start_s < f.speech_end_s <= f.duration_s, f.id
        assert f.speech_start_s == pytest.approx(span.speech_start_s, abs=1e-3), f.id
        assert f.speech_end_s == pytest.approx(span.speech_end_s, abs=1e-3), f.id
        assert f.max_internal_pause_s == pytest.approx(span.max_internal_pause_s, abs=1e-3), f.id
        assert f.max_internal_pause_s < MAX_PAUSE_S, f.id
        # The manifest offsets name the same frames the analysis found.
        assert (f.first_voiced, f.last_voiced) == (span.first_voiced, span.last_voiced), f.id


# --------------------------------------------------------------------------- the analysis itself

# The manifest's offsets were written by analyse_speech, so comparing them with it again only proves
# repeatability. Here it meets a signal whose onsets are known to the sample: a -70 dBFS noise floor
# and tone bursts (RMS in dBFS) at 16 kHz, written as a PCM_16 WAV like the fixtures and read back
# through the same path (read_mono, to_48k). Stated tolerance: the analysis works on 20 ms frames, so
# speech starts at the start of the frame holding the first onset and ends at the end of the frame
# holding the last offset -- start in (onset - 20 ms, onset], end in [offset, offset + 20 ms) -- and a
# pause is the whole unvoiced frames inside it, (gap - 40 ms, gap]. Onsets sit 2 ms from frame edges
# too: the resampler's ringing (< 1 ms) must not leak a frame either way.
SRC_RATE = 16000
BURSTS = {  # (onset s, offset s, RMS dBFS, tone Hz)
    "mid-frame": [(0.3071, 0.9133, -12.0, 440.0), (1.1447, 2.2289, -20.0, 300.0)],
    "near-edges": [(0.1020, 0.5390, -30.0, 1000.0), (0.7610, 1.5980, -15.0, 200.0)],
    "on-edges": [(0.2400, 0.8000, -25.0, 660.0), (1.2000, 2.5000, -10.0, 150.0)],
}


def synthetic_clip(tmp_path: Path, bursts: list[tuple[float, float, float, float]], seconds: float = 3.0
                   ) -> Path:
    rng = np.random.default_rng(3)
    n = int(seconds * SRC_RATE)
    x = rng.normal(0.0, 10 ** (-70 / 20), n)
    t = np.arange(n) / SRC_RATE
    for onset, offset, dbfs, hz in bursts:
        i0, i1 = round(onset * SRC_RATE), round(offset * SRC_RATE)
        x[i0:i1] += 10 ** (dbfs / 20) * math.sqrt(2) * np.sin(2 * np.pi * hz * t[i0:i1])
    path = tmp_path / "synthetic.wav"
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SRC_RATE, subtype="PCM_16")
    return path


def analyse_file(path: Path) -> SpeechSpan:
    samples, rate = read_mono(path)
    assert rate == SRC_RATE
    return analyse_speech(to_48k(samples, rate))


@pytest.mark.parametrize("case", sorted(BURSTS))
def test_analysis_finds_known_onsets_to_the_frame(tmp_path: Path, case: str) -> None:
    bursts = BURSTS[case]
    span = analyse_file(synthetic_clip(tmp_path, bursts))
    onset, offset = bursts[0][0], bursts[-1][1]
    gap = bursts[1][0] - bursts[0][1]
    frame = FRAME_SAMPLES / RATE
    eps = 1e-9  # float noise of the onsets' decimal seconds (1.2 - 0.8 < 0.4)
    assert onset - frame < span.speech_start_s <= onset + eps, (case, span)
    assert offset - eps <= span.speech_end_s < offset + frame, (case, span)
    assert gap - 2 * frame < span.max_internal_pause_s <= gap + eps, (case, span)
    assert (span.first_voiced, span.last_voiced) == (math.floor(onset / frame), math.ceil(offset / frame) - 1)


def test_analysis_threshold_is_minus_45_dbfs(tmp_path: Path) -> None:
    """A -50 dBFS burst (a breath, a room) is not speech; a -40 dBFS one is: the span is the latter's."""
    bursts = [(0.5110, 0.9050, -50.0, 440.0), (1.3030, 2.1170, -40.0, 440.0)]
    span = analyse_file(synthetic_clip(tmp_path, bursts))
    assert (span.speech_start_s, span.speech_end_s, span.max_internal_pause_s) == (1.30, 2.12, 0.0)


def test_make_fixtures_cuts_the_loud_phrase_not_a_breath_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/make_fixtures.py's phrase finder on the same kind of signal: a quiet voiced blip (-42
    dBFS: voiced, never loud) 160 ms before a two-burst phrase is left out, the phrase found by frame."""
    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "scripts" / "make_fixtures.py")
    assert spec and spec.loader
    make_fixtures = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_fixtures", make_fixtures)  # its dataclasses look it up there
    spec.loader.exec_module(make_fixtures)
    bursts = [(0.0330, 0.1450, -42.0, 300.0), *BURSTS["mid-frame"]]
    samples, rate = read_mono(synthetic_clip(tmp_path, bursts))
    first, last = make_fixtures.phrase_frames(frame_levels_dbfs(to_48k(samples, rate)))
    assert (first, last) == (15, 111)  # 0.3071 s is in frame 15 (0.30-0.32), 2.2289 s in frame 111


def test_clips_keep_a_margin_of_recorded_audio(fixtures):
    """Trimmed around the speech, not padded with digital silence (a synthesizer's silence is digital:
    those clips have the 160 ms margins of the recordings, of nothing)."""
    for f in fixtures:
        pcm = load_pcm48k(f)
        if f.synthetic:
            assert f.speech_start_s == pytest.approx(0.16), f.id
            assert f.duration_s - f.speech_end_s == pytest.approx(0.16), f.id
            continue
        assert np.count_nonzero(pcm[: RATE // 100]) > 0 and np.count_nonzero(pcm[-RATE // 100:]) > 0, f.id


@needs(shutil.which("espeak-ng") is not None, "espeak-ng not installed")
def test_spanish_clips_are_what_the_script_synthesizes() -> None:
    """scripts/make_spanish_fixtures.py --check: a fresh espeak-ng synthesis equals the committed WAVs."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_spanish_fixtures.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- validation

def _copy_corpus(tmp_path: Path, edit) -> Path:
    doc = json.loads(DEFAULT_MANIFEST.read_text(encoding="utf-8"))
    for entry in doc[:2]:
        shutil.copy(DEFAULT_MANIFEST.parent / entry["file"], tmp_path / entry["file"])
    doc = doc[:2]
    edit(doc)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_copied_manifest_loads(tmp_path):
    assert len(load_manifest(_copy_corpus(tmp_path, lambda doc: None))) == 2


def test_missing_file_names_fixture_and_file(tmp_path):
    def edit(doc):
        doc[1]["file"] = "nowhere.wav"

    with pytest.raises(FixtureError, match=r"cards-002.*nowhere\.wav"):
        load_manifest(_copy_corpus(tmp_path, edit))


@pytest.mark.parametrize(
    ("field", "value"),
    [("transcript", ""), ("duration_s", "long"), ("speech_end_s", 99.0), ("sample_rate", 44100),
     ("translations", {"es": ""}), ("duration_s", 9.5), ("synthetic", "yes"), ("engine", 3)],
)
def test_bad_field_names_fixture_and_field(tmp_path, field, value):
    def edit(doc):
        doc[0][field] = value

    with pytest.raises(FixtureError, match=rf"cards-001.*{field}"):
        load_manifest(_copy_corpus(tmp_path, edit))


def test_synthetic_clip_names_its_synthesizer(tmp_path):
    def edit(doc):
        doc[0]["synthetic"] = True
        doc[1].update(synthetic=True, engine="espeak-ng 1.51", voice="es")

    with pytest.raises(FixtureError, match=r"cards-001.*'engine'.*synthetic"):
        load_manifest(_copy_corpus(tmp_path, edit))
    named = _copy_corpus(tmp_path, lambda doc: doc[1].update(synthetic=True, engine="e 1", voice="v"))
    second = load_manifest(named)[1]
    assert (second.synthetic, second.engine, second.voice) == (True, "e 1", "v")


def test_missing_field_and_missing_manifest(tmp_path):
    def edit(doc):
        del doc[0]["licence"]

    with pytest.raises(FixtureError, match=r"cards-001.*licence"):
        load_manifest(_copy_corpus(tmp_path, edit))
    with pytest.raises(FixtureError, match="not found"):
        load_manifest(tmp_path / "absent.json")


def test_library_unknown_ids(library):
    library.require(library.ids[:2])
    with pytest.raises(FixtureError, match="nope"):
        library.require(["nope"])
    with pytest.raises(FixtureError, match="nope"):
        library.get("nope")


# --------------------------------------------------------------------------- Opus

@pytest.mark.parametrize("samples", [960, 961, 48000 + 100, 959])
def test_packet_count_is_one_per_started_frame(samples):
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(samples) * 0.1).astype(np.float32)
    assert len(encode_opus(pcm)) == math.ceil(samples / FRAME_SAMPLES)


def test_packets_decode_in_step_with_the_source():
    """Packet i decodes to source frame i: the encoder's look-ahead is compensated (no lag)."""
    t = np.arange(RATE) / RATE
    # A 200 ms tone burst every 500 ms: its envelope pins the timing down.
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 0.5) < 0.2)).astype(np.float32)
    decoded = decode_opus(encode_opus(pcm))
    assert len(decoded) == len(encode_opus(pcm)) * FRAME_SAMPLES
    ref = pcm[4000:40000]
    lags = range(-200, 201)
    scores = [float(np.dot(decoded[4000 + k:40000 + k], ref)) for k in lags]
    assert abs(lags[int(np.argmax(scores))]) <= 8  # samples at 48 kHz (< 0.2 ms)


def test_fixture_clip_round_trip(library):
    for fixture_id in (library.ids[0], "austen-0880"):
        fixture = library.fixture(fixture_id)
        clip = library.get(fixture_id)
        assert library.get(fixture_id) is clip  # encoded once, then shared
        pcm = load_pcm48k(fixture)
        assert len(clip.packets) == math.ceil(len(pcm) / FRAME_SAMPLES)
        assert clip.duration_s == pytest.approx(len(clip.packets) * 0.02)
        assert (clip.first_voiced, clip.last_voiced) == (fixture.first_voiced, fixture.last_voiced)
        assert 0 <= clip.first_voiced < clip.last_voiced < len(clip.packets)
        decoded = decode_opus(clip.packets)
        assert envelope_correlation(pcm, decoded) > 0.9, fixture_id
        # What the gateway hears ends where the manifest says (within a frame at the same threshold).
        assert abs(analyse_speech(decoded[: len(pcm)]).last_voiced - clip.last_voiced) <= 1, fixture_id


def test_silence_packet_decodes_to_near_zero():
    packet = silence_packet()
    assert packet is silence_packet()  # cached
    decoded = decode_opus([packet] * 10)
    assert len(decoded) == 10 * FRAME_SAMPLES
    assert float(np.sqrt(np.mean(decoded.astype(np.float64) ** 2))) < 10 ** (-80 / 20)
