"""The speech corpus: manifest ↔ audio consistency, validation errors, Opus pre-encoding."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from loadtest.fixtures import (
    DEFAULT_MANIFEST,
    FRAME_SAMPLES,
    RATE,
    FixtureError,
    FixtureLibrary,
    analyse_speech,
    decode_opus,
    encode_opus,
    frame_levels_dbfs,
    load_manifest,
    load_pcm48k,
    silence_packet,
)

pytestmark = pytest.mark.unit

MAX_PAUSE_S = 0.35  # the gateway's VAD would split an utterance at a pause this long


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
        assert f.language == "en" and f.transcript.strip() and f.source and f.licence, f.id
        assert f.translations.get("es", "").strip(), f.id


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


def test_clips_keep_a_margin_of_recorded_audio(fixtures):
    """Trimmed around the speech, not padded with digital silence."""
    for f in fixtures:
        pcm = load_pcm48k(f)
        assert np.count_nonzero(pcm[: RATE // 100]) > 0 and np.count_nonzero(pcm[-RATE // 100:]) > 0, f.id


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
     ("translations", {"es": ""}), ("duration_s", 9.5)],
)
def test_bad_field_names_fixture_and_field(tmp_path, field, value):
    def edit(doc):
        doc[0][field] = value

    with pytest.raises(FixtureError, match=rf"cards-001.*{field}"):
        load_manifest(_copy_corpus(tmp_path, edit))


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
