"""Model translation lookup, TTS model signal, and request validation (in-process apps)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sut.config import LatencyModel
from sut.services.common import LatencySampler, ServiceState, WorkerPool, make_app
from sut.services.corpus import CorpusEntry, normalise_text
from sut.services.envelope import band_envelope
from sut.services.translation import _MARKERS, ModelTranslation, lang
from sut.services.tts import ModelTts, model_duration_s, speech_like

pytestmark = pytest.mark.unit

ZERO = LatencySampler(LatencyModel("constant", ms=0))
CORPUS = [
    CorpusEntry(
        "a",
        None,
        "en",
        "He was not an ill-disposed young man.",  # type: ignore[arg-type]
        {"es": "No era un joven mal dispuesto."},
    ),
    CorpusEntry("b", None, "en-US", "Ten of clubs", {"es": "Diez de tréboles", "fr": "Dix de trèfle"}),  # type: ignore[arg-type]
]


def test_normalise_text() -> None:
    assert (
        normalise_text("  He was NOT an ill-disposed, young man! ") == "he was not an ill disposed young man"
    )
    assert normalise_text("Don't") == normalise_text("dont")
    assert normalise_text("¿Qué tal?") == "qué tal"


def test_lang_tags() -> None:
    assert lang("en-US") == "en" and lang("ES_mx") == "es" and lang(" es ") == "es"


def test_model_lookup_ignores_case_and_punctuation() -> None:
    engine = ModelTranslation(CORPUS, ZERO)
    assert (
        engine.lookup("he was not an ill disposed young man", "en", "es") == "No era un joven mal dispuesto."
    )
    assert engine.lookup("TEN OF CLUBS", "en", "fr") == "Dix de trèfle"
    assert engine.lookup("diez de tréboles", "es", "en") == "Ten of clubs"  # the reverse direction too
    assert engine.lookup("ten of clubs", "en", "de") is None
    assert engine.lookup("nine of clubs", "en", "es") is None


async def test_model_passthrough_is_marked() -> None:
    engine = ModelTranslation(CORPUS, ZERO)
    assert await engine.translate("nine of clubs", "en", "es") == "[es] nine of clubs"
    assert await engine.translate("Ten of clubs.", "en", "es") == "Diez de tréboles"


def test_apertium_markers_are_stripped() -> None:
    raw = "*Mister *Dashwood Tuvo ocio para considerar #flibbertigibbet @foo. Precio *5* euros"
    assert (
        _MARKERS.sub("", raw)
        == "Mister Dashwood Tuvo ocio para considerar flibbertigibbet foo. Precio 5* euros"
    )


@pytest.mark.parametrize("text", ["hi", "ten of clubs", "x" * 40, "y" * 500])
def test_tts_model_length_follows_text(text: str) -> None:
    audio = speech_like(text, 48000)
    expected = min(6.0, max(0.4, 0.06 * len(text)))
    assert model_duration_s(text) == pytest.approx(expected)
    assert len(audio) == pytest.approx(expected * 48000, abs=1)


def test_tts_model_level_and_shape() -> None:
    text = "No era un joven mal dispuesto, pero era bastante frío de corazón."
    x = speech_like(text, 48000).astype(np.float64)
    assert x.dtype == np.float64 and np.abs(x).max() < 32767
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768)
    assert -21.0 < rms_dbfs < -19.0
    # Voiced: most energy below 1 kHz, a fundamental in the speaking range.
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 48000)
    assert spectrum[freqs < 1000].sum() > 0.6 * spectrum.sum()
    f0 = freqs[(freqs > 60) & (freqs < 400)][np.argmax(spectrum[(freqs > 60) & (freqs < 400)])]
    assert 80 < f0 < 250
    # Syllabic: the energy envelope is modulated at a few Hz, like speech (≈ 3–7 syllables/s).
    env = band_envelope(x, 48000).mean(axis=1)
    mod = np.abs(np.fft.rfft(env - env.mean()))
    mod_freqs = np.fft.rfftfreq(len(env), 0.01)
    assert 2.5 < mod_freqs[np.argmax(mod)] < 8.0
    assert np.array_equal(speech_like(text, 48000), speech_like(text, 48000))  # repeatable per text


async def test_tts_model_engine_rate() -> None:
    speech = await ModelTts(ZERO).synthesize("hola", "es", 16000)
    assert speech.rate == 16000 and speech.duration_ms == pytest.approx(400.0, abs=0.1)


# ---------------------------------------------------------------- request validation, in-process apps


async def _client(app: web.Application) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def translation_client() -> AsyncIterator[TestClient]:
    from sut.services import translation

    app = make_app(
        ServiceState("translation", "model", WorkerPool(2)), [web.post("/translate", translation.translate)]
    )
    app[translation.ENGINE_KEY] = ModelTranslation(CORPUS, ZERO)
    async for client in _client(app):
        yield client


@pytest.fixture
async def tts_client() -> AsyncIterator[TestClient]:
    from sut.services import tts

    app = make_app(ServiceState("tts", "model", WorkerPool(2)), [web.post("/synthesize", tts.synthesize)])
    app[tts.ENGINE_KEY] = ModelTts(ZERO)
    async for client in _client(app):
        yield client


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"source": "en", "target": "es"}, "missing field 'text'"),
        ({"text": "  ", "source": "en", "target": "es"}, "field 'text' is empty"),
        ({"text": "hi", "source": "en"}, "missing field 'target'"),
        ({"text": 3, "source": "en", "target": "es"}, "field 'text' must be a string"),
        ([1, 2], "JSON object"),
    ],
)
async def test_translation_bad_requests(translation_client: TestClient, body: object, needle: str) -> None:
    resp = await translation_client.post("/translate", json=body)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]


async def test_translation_ok_and_health(translation_client: TestClient) -> None:
    resp = await translation_client.post(
        "/translate", json={"text": "ten of clubs", "source": "en", "target": "es"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["text"] == "Diez de tréboles" and body["engine"] == "model" and body["processing_ms"] >= 0
    health = await (await translation_client.get("/health")).json()
    assert health == {
        **health,
        "status": "ok",
        "engine": "model",
        "workers": 2,
        "busy": 0,
        "queued": 0,
        "served": 1,
    }
    resp = await translation_client.post("/translate", data=b"not json")
    assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"text": "", "language": "es"}, "field 'text' is empty"),
        ({"text": "hola"}, "missing field 'language'"),
        ({"text": "hola", "language": "--help"}, "field 'language'"),
        ({"text": "hola", "language": "es", "sample_rate": "48k"}, "field 'sample_rate'"),
        ({"text": "hola", "language": "es", "sample_rate": 1000}, "field 'sample_rate'"),
        ({"text": "hola", "language": "es", "format": "mp3"}, "field 'format'"),
        ({"text": "hola", "language": "es", "format": "ogg_opus", "bitrate": "32k"}, "field 'bitrate'"),
        ({"text": "hola", "language": "es", "format": "ogg_opus", "sample_rate": 16000}, "must be 48000"),
    ],
)
async def test_tts_bad_requests(tts_client: TestClient, body: object, needle: str) -> None:
    resp = await tts_client.post("/synthesize", json=body)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]


async def test_tts_returns_wav_with_duration_header(tts_client: TestClient) -> None:
    resp = await tts_client.post("/synthesize", json={"text": "diez de tréboles", "language": "es"})
    assert resp.status == 200 and resp.content_type == "audio/wav"
    audio, rate = sf.read(io.BytesIO(await resp.read()), dtype="int16")
    assert rate == 48000 and audio.ndim == 1
    assert float(resp.headers["X-Audio-Duration-Ms"]) == pytest.approx(1000 * len(audio) / rate, abs=0.1)


async def test_tts_returns_ogg_opus_when_asked(tts_client: TestClient) -> None:
    """What the gateway asks for: Opus packets it only packetizes (48 kHz mono, 20 ms, ~bitrate)."""
    import av

    text = "diez de tréboles"
    req = {"text": text, "language": "es", "format": "ogg_opus", "bitrate": 24000}
    resp = await tts_client.post("/synthesize", json=req)
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg; codecs=opus"
    body = await resp.read()
    duration_ms = float(resp.headers["X-Audio-Duration-Ms"])
    assert duration_ms == pytest.approx(1000 * len(speech_like(text, 48000)) / 48000, abs=0.1)
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.rate == 48000
        assert stream.codec_context.layout.nb_channels == 1
        packets = [p for p in container.demux(stream) if p.size]
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in p.decode()])
    assert {p.duration for p in packets[:-1]} == {960}  # 20 ms packets (the last one is trimmed)
    kbps = 8 * sum(p.size for p in packets) / duration_ms
    assert 12 < kbps < 36
    # Speech in, speech out: the decoded level is the synthesized one (-20 dBFS RMS, ±3 dB).
    full_scale = 1.0 if decoded.dtype.kind == "f" else 32768.0  # FFmpeg's decoder answers floats
    level = 20 * np.log10(np.sqrt(np.mean(np.square(decoded.astype(np.float64)))) / full_scale)
    assert -23 < level < -17
    again = await tts_client.post("/synthesize", json=req)
    assert await again.read() == body  # the model engine's encodes are cached per text

