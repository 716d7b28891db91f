"""The real engines' es→en direction as subprocesses over HTTP, on the repo's own corpus (the synthesized
Spanish fixtures): STT (pocketsphinx has no Spanish model: the corpus-match fallback), Apertium spa-eng,
espeak-ng in English."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from loadtest.quality import chrf
from sut.services.audio import write_wav
from sut.services.testkit import TESTDATA, ServiceProcess, opus_round_trip, write_stack_toml
from tests.prereq import needs

pytestmark = [pytest.mark.integration]
MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"
ENTRIES = json.loads(MANIFEST.read_text(encoding="utf-8"))
SPANISH = [e for e in ENTRIES if e["language"] == "es"]
# Apertium spa-eng (Debian's apertium-eng-spa 0.8.1) against the English transcripts, measured on the 13
# Spanish references: chrF 25-72, mean 43.5 (echoing the Spanish back scores 4-27). Apertium is
# deterministic; each clip must beat its echo (a translation, not a copy), the mean the floor below.
MIN_MEAN_CHRF = 40.0


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    """Real engines, one worker each, started on first use (a skipped test starts none)."""
    directory = tmp_path_factory.mktemp("es-en")
    body = "".join(f'[{s}]\nengine = "real"\nworkers = 1\n' for s in ("stt", "translation", "tts"))
    toml = write_stack_toml(directory, f'[stack]\nfixtures = "{MANIFEST}"\n{body}')
    procs: dict[str, ServiceProcess] = {}

    class Lazy(dict[str, ServiceProcess]):
        def __missing__(self, name: str) -> ServiceProcess:
            procs[name] = self[name] = ServiceProcess(name, ["--config", str(toml)]).start()
            return procs[name]

    yield Lazy()
    for proc in procs.values():
        proc.stop()


def received(entry: dict[str, object]) -> bytes:
    """The clip as the gateway sends it to STT: 48 kHz WAV after an Opus round trip."""
    samples, rate = sf.read(MANIFEST.parent / str(entry["file"]), dtype="int16")
    return write_wav(opus_round_trip(samples, rate), 48000)


@needs(TESTDATA.exists(), "Debian package pocketsphinx-testdata not installed")
async def test_real_stt_answers_spanish_from_the_corpus_and_english_from_pocketsphinx(
    real: dict[str, ServiceProcess],
) -> None:
    url = f"{real['stt'].url}/transcribe"
    async with aiohttp.ClientSession() as http:
        for entry in (SPANISH[0], SPANISH[5]):
            async with http.post(f"{url}?language=es", data=received(entry)) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["engine"] == "real" and body["fallback"] == "corpus-match", body
            assert body["text"] == entry["transcript"] and body["fixture_id"] == entry["id"], body
        english = next(e for e in ENTRIES if e["id"] == "cards-001")
        async with http.post(f"{url}?language=en", data=received(english)) as resp:
            body = await resp.json()
        assert resp.status == 200 and "fallback" not in body and "matched" not in body, body  # pocketsphinx
        async with http.post(f"{url}?language=fr", data=received(english)) as resp:
            assert resp.status == 400 and "language 'fr'" in (await resp.json())["error"]
        async with http.get(f"{real['stt'].url}/health") as resp:
            assert (await resp.json())["fallback_languages"] == ["es"]


@needs(shutil.which("apertium") is not None, "apertium not installed")
async def test_real_translation_es_to_en(real: dict[str, ServiceProcess]) -> None:
    scores, echoes = {}, {}
    async with aiohttp.ClientSession() as http:
        for entry in SPANISH:
            req = {"text": entry["transcript"], "source": "es", "target": "en"}
            async with http.post(f"{real['translation'].url}/translate", json=req) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["engine"] == "real" and (body["source"], body["target"]) == ("es", "en")
            reference = entry["translations"]["en"]
            scores[entry["id"]] = chrf(body["text"], reference)
            echoes[entry["id"]] = chrf(entry["transcript"], reference)
            assert scores[entry["id"]] > echoes[entry["id"]], (entry["id"], body["text"], reference)
    print(f"\nApertium spa-eng chrF per clip: {scores}\necho chrF: {echoes}")
    assert sum(scores.values()) / len(scores) >= MIN_MEAN_CHRF, scores


@needs(shutil.which("espeak-ng") is not None, "espeak-ng not installed")
async def test_real_tts_speaks_english_as_ogg_opus(real: dict[str, ServiceProcess]) -> None:
    text = SPANISH[4]["translations"]["en"]  # "eight of spades four of clubs seven of hearts"
    req = {"text": text, "language": "en", "sample_rate": 48000}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{real['tts'].url}/synthesize", json=req) as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            audio, rate = sf.read(io.BytesIO(await resp.read()), dtype="int16")
        async with http.post(f"{real['tts'].url}/synthesize", json={**req, "format": "ogg_opus"}) as resp:
            assert resp.status == 200 and resp.content_type == "audio/ogg"
            duration_ms = float(resp.headers["X-Audio-Duration-Ms"])
    assert duration_ms == pytest.approx(1000 * len(audio) / rate, abs=1)
    assert rate == 48000 and 1.5 < len(audio) / rate < 5.0  # 9 English words at espeak-ng's default rate
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 300  # speech, not silence
