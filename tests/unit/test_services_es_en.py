"""The services' es→en direction on the repo's own corpus (in-process engines): Spanish STT (model, and
the real engine's corpus-match fallback), es→en model translation, English model TTS."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from sut.config import LatencyModel
from sut.services.common import BadRequest, LatencySampler, Slot
from sut.services.corpus import CorpusEntry, load_corpus
from sut.services.stt import ModelStt, RealStt, real_fallback
from sut.services.testkit import opus_round_trip
from sut.services.translation import ModelTranslation
from sut.services.tts import ModelTts, model_duration_s

pytestmark = pytest.mark.unit

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"
ZERO = LatencySampler(LatencyModel("constant", ms=0))


@pytest.fixture(scope="module")
def corpus() -> list[CorpusEntry]:
    return load_corpus(MANIFEST)


@pytest.fixture(scope="module")
def spanish(corpus: list[CorpusEntry]) -> list[CorpusEntry]:
    entries = [e for e in corpus if e.language == "es"]
    assert len(entries) >= 10
    return entries


def received(entry: CorpusEntry) -> np.ndarray:
    """The clip as the gateway hands it to STT: 48 kHz after an Opus round trip."""
    samples, rate = sf.read(entry.path, dtype="int16")
    return opus_round_trip(samples, rate).astype(np.int16)


async def test_model_stt_recognises_each_spanish_clip_in_spanish_only(
    corpus: list[CorpusEntry], spanish: list[CorpusEntry]
) -> None:
    engine = ModelStt(corpus, ZERO)
    for entry in spanish:
        audio = received(entry)
        result = await engine.transcribe(audio, 48000, "es", Slot(0, 0.0))
        assert result.matched and result.fixture_id == entry.id and result.text == entry.transcript, (
            entry.id, result)
        # Asked for English, the same audio is no English clip.
        assert (await engine.transcribe(audio, 48000, "en", Slot(0, 0.0))).matched is False, entry.id


async def test_real_stt_falls_back_to_the_corpus_match_for_spanish(spanish: list[CorpusEntry]) -> None:
    """pocketsphinx has no Spanish model: the real engine answers Spanish from the corpus, and says so;
    a language the corpus lacks is still refused. (English goes to pocketsphinx: integration tests.)"""
    fallback = await real_fallback(SimpleNamespace(stack=SimpleNamespace(fixtures=MANIFEST)))  # type: ignore[arg-type]
    assert fallback is not None and {e.language for e in fallback.entries.values()} == {"es"}
    engine = RealStt(1, fallback)  # its process pool starts no process until English is asked for
    try:
        engine.check_language("en")
        engine.check_language("es")
        with pytest.raises(BadRequest, match="language 'ko'"):
            engine.check_language("ko")
        entry = spanish[-1]
        result = await engine.transcribe(received(entry), 48000, "es", Slot(0, 0.0))
        assert (result.text, result.fixture_id) == (entry.transcript, entry.id)
        assert result.fallback == "corpus-match"
    finally:
        await engine.close()


async def test_real_stt_has_no_fallback_without_other_languages(tmp_path: Path) -> None:
    english_only = tmp_path / "manifest.json"
    english_only.write_text('[{"id": "a", "file": "a.wav", "language": "en", "transcript": "hi"}]')
    assert await real_fallback(SimpleNamespace(stack=SimpleNamespace(fixtures=english_only))) is None  # type: ignore[arg-type]
    engine = RealStt(1, None)
    try:
        with pytest.raises(BadRequest, match="language 'es'"):
            engine.check_language("es")
    finally:
        await engine.close()


async def test_model_translation_es_to_en_gives_the_english_transcript(
    corpus: list[CorpusEntry], spanish: list[CorpusEntry]
) -> None:
    engine = ModelTranslation(corpus, ZERO)
    for entry in spanish:
        assert await engine.translate(entry.transcript, "es", "en") == entry.translations["en"], entry.id
        # What a recogniser would answer: no capitals, no punctuation.
        plain = entry.transcript.lower().replace(",", "").replace(".", "")
        assert engine.lookup(plain, "es", "en") == entry.translations["en"], entry.id


async def test_model_tts_speaks_english(spanish: list[CorpusEntry]) -> None:
    text = spanish[0].translations["en"]
    speech = await ModelTts(ZERO).synthesize(text, "en", 48000)
    assert speech.rate == 48000
    assert speech.duration_ms == pytest.approx(model_duration_s(text) * 1000, abs=0.1)
    assert np.sqrt(np.mean(speech.samples.astype(np.float64) ** 2)) > 1000  # speech-like, not silence
