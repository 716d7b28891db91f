"""The three services as subprocesses (python -m sut.services.<name>), exercised over HTTP.

Corpus: Debian's pocketsphinx-testdata clips (sut/services/testkit.py), so these tests do not depend
on the fixture set. Real engines need pocketsphinx-testdata, apertium + apertium-eng-spa, espeak-ng.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jiwer
import numpy as np
import pytest
import soundfile as sf

from loadtest.quality import chrf
from sut.config import load_stack_config, stack_config_to_doc
from sut.services.audio import write_wav
from sut.services.testkit import (
    SAMPLE_CLIPS,
    TESTDATA,
    ServiceProcess,
    opus_round_trip,
    write_sample_manifest,
    write_stack_toml,
)
from tests.prereq import needs

pytestmark = [
    pytest.mark.integration,
    needs(TESTDATA.exists(), "Debian package pocketsphinx-testdata not installed"),
]
needs_apertium = needs(shutil.which("apertium") is not None, "apertium not installed")
needs_espeak = needs(shutil.which("espeak-ng") is not None, "espeak-ng not installed")
FIXTURE_MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"


def clip_wav(clip_id: str, *, opus: bool) -> tuple[bytes, str]:
    rel, transcript, _ = SAMPLE_CLIPS[clip_id]
    samples, rate = sf.read(TESTDATA / rel, dtype="int16")
    if opus:  # as the gateway would send it: 48 kHz, after the WebRTC codec
        return write_wav(opus_round_trip(samples, rate), 48000), transcript
    return write_wav(samples, rate), transcript


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("services")
    write_sample_manifest(path / "corpus")
    return path


def stack_toml(workdir: Path, name: str, body: str) -> Path:
    directory = workdir / name
    directory.mkdir(exist_ok=True)
    return write_stack_toml(
        directory, f'[stack]\nfixtures = "{workdir / "corpus" / "manifest.json"}"\n{body}'
    )


class Services:
    """Services started on first use and stopped with the module: a test that is skipped (e.g.
    apertium missing) never starts, and so never fails, the service it would have used."""

    def __init__(self, toml: Path) -> None:
        self.toml = toml
        self.procs: dict[str, ServiceProcess] = {}

    def __getitem__(self, name: str) -> ServiceProcess:
        if name not in self.procs:
            self.procs[name] = ServiceProcess(name, ["--config", str(self.toml)]).start()
        return self.procs[name]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def real(workdir: Path) -> Iterator[Services]:
    """Real engines, one worker each (2 shared cores)."""
    body = "".join(f'[{s}]\nengine = "real"\nworkers = 1\n' for s in ("stt", "translation", "tts"))
    services = Services(stack_toml(workdir, "real", body))
    yield services
    services.stop()


@pytest.fixture(scope="module")
def model(workdir: Path) -> Iterator[Services]:
    """Model engines with one worker and a constant 200 ms: queueing is easy to see."""
    latency = '[{0}.latency]\ndistribution = "constant"\nms = 200\n'
    body = "".join(f"[{s}]\nworkers = 1\n" + latency.format(s) for s in ("stt", "translation", "tts"))
    services = Services(stack_toml(workdir, "model", body))
    yield services
    services.stop()


# ----------------------------------------------------------------------------- real engines


@pytest.mark.parametrize(
    ("clip_id", "opus"), [("cards-003", False), ("cards-001", True), ("austen-0920", True)]
)
async def test_real_stt_transcribes(real: Services, clip_id: str, opus: bool) -> None:
    wav, transcript = clip_wav(clip_id, opus=opus)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{real['stt'].url}/transcribe?language=en", data=wav) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["engine"] == "real" and body["language"] == "en"
    assert jiwer.wer(transcript, body["text"]) <= 0.35, body
    assert body["audio_ms"] > 500 and body["processing_ms"] > 0


async def test_real_stt_rejects_unsupported_language(real: Services) -> None:
    wav, _ = clip_wav("cards-001", opus=False)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{real['stt'].url}/transcribe?language=ko", data=wav) as resp:
            assert resp.status == 400
            assert "language 'ko'" in (await resp.json())["error"]


# Fixtures whose transcripts the real engine translates (fixtures/audio/manifest.json holds human
# reference translations). Apertium's chrF against them: 24, 53, 55, 66 (mean ≈ 50); echoing the English
# back scores 12-20, and a one-word answer such as "no" about 4.
TRANSLATED_FIXTURES = ("austen-0880", "austen-0920", "austen-0930", "cards-005")
MIN_CHRF, MIN_MEAN_CHRF = 20.0, 40.0


@needs_apertium
async def test_real_translation(real: Services) -> None:
    url = f"{real['translation'].url}/translate"
    references = {e["id"]: e for e in json.loads(FIXTURE_MANIFEST.read_text(encoding="utf-8"))}
    scores = {}
    async with aiohttp.ClientSession() as http:
        for fixture_id in TRANSLATED_FIXTURES:
            entry = references[fixture_id]
            req = {"text": entry["transcript"], "source": "en", "target": "es"}
            async with http.post(url, json=req) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["engine"] == "real" and body["text"]
            assert "*" not in body["text"] and "#" not in body["text"]
            reference = entry["translations"]["es"]
            scores[fixture_id] = chrf(body["text"], reference)
            # A translation, not an echo: closer to the Spanish reference than the English source is.
            assert scores[fixture_id] >= max(MIN_CHRF, chrf(entry["transcript"], reference) + 5), (
                fixture_id, body["text"], reference, scores[fixture_id])
        assert sum(scores.values()) / len(scores) >= MIN_MEAN_CHRF, scores
        async with http.post(
            url, json={"text": "el hombre no era malo", "source": "es", "target": "en"}
        ) as resp:
            assert resp.status == 200
            assert "man" in (await resp.json())["text"].lower()
        async with http.post(url, json={"text": "hello", "source": "en", "target": "ko"}) as resp:
            assert resp.status == 400
            assert "en→ko" in (await resp.json())["error"]


@needs_espeak
async def test_real_tts(real: Services) -> None:
    url = f"{real['tts'].url}/synthesize"
    async with aiohttp.ClientSession() as http:
        text = "No era un joven mal dispuesto."
        async with http.post(url, json={"text": text, "language": "es", "sample_rate": 48000}) as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            audio, rate = sf.read(io.BytesIO(await resp.read()), dtype="int16")
            header_ms = float(resp.headers["X-Audio-Duration-Ms"])
        assert rate == 48000 and audio.ndim == 1
        assert 1.0 < len(audio) / rate < 4.0  # ~6 words of Spanish at espeak's default rate
        assert header_ms == pytest.approx(1000 * len(audio) / rate, abs=1)
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 300  # speech, not silence
        async with http.post(url, json={"text": "hola", "language": "xx"}) as resp:
            assert resp.status == 400
            assert "'xx'" in (await resp.json())["error"]


# ----------------------------------------------------------------------------- model engines


async def test_model_stt_recognises_the_received_audio(model: Services) -> None:
    wav, transcript = clip_wav("austen-0930", opus=True)
    noise = write_wav(np.random.default_rng(0).normal(0, 2000, 3 * 48000), 48000)
    url = f"{model['stt'].url}/transcribe?language=en"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=wav) as resp:
            body = await resp.json()
        assert body["text"] == transcript and body["matched"] is True and body["fixture_id"] == "austen-0930"
        async with http.post(url, data=noise) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["text"] == "" and body["matched"] is False


async def test_model_translation_and_tts(model: Services) -> None:
    async with aiohttp.ClientSession() as http:
        req = {"text": "Ten of clubs.", "source": "en", "target": "es"}
        async with http.post(f"{model['translation'].url}/translate", json=req) as resp:
            assert (await resp.json())["text"] == SAMPLE_CLIPS["cards-001"][2]
        req = {"text": "diez de tréboles", "language": "es", "sample_rate": 48000}
        async with http.post(f"{model['tts'].url}/synthesize", json=req) as resp:
            assert float(resp.headers["X-Audio-Duration-Ms"]) == pytest.approx(960.0, abs=1)


async def test_worker_pool_queues(model: Services) -> None:
    """workers = 1, constant 200 ms: three concurrent requests are served one after the other."""
    base = model["translation"].url
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> dict[str, float]:
            req = {"text": f"request {i}", "source": "en", "target": "es"}
            async with http.post(f"{base}/translate", json=req) as resp:
                return await resp.json()

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(3)]
        queued_seen = 0
        while not all(t.done() for t in tasks):
            async with http.get(f"{base}/health") as resp:
                health = await resp.json()
            assert health["busy"] <= 1
            queued_seen = max(queued_seen, health["queued"])
            await asyncio.sleep(0.02)
        results = [t.result() for t in tasks]
        wall = time.perf_counter() - t0
    waits = sorted(r["queue_ms"] for r in results)
    assert queued_seen == 2
    assert waits[0] < 100 and 150 < waits[1] < 350 and 350 < waits[2] < 600, waits
    assert max(r["processing_ms"] for r in results) >= 550 and wall >= 0.55


@pytest.mark.parametrize(
    ("service", "path", "kwargs", "needle"),
    [
        ("stt", "/transcribe", {"data": b"hello, not audio"}, "not a WAV"),
        ("stt", "/transcribe", {"data": write_wav(np.zeros(0, np.int16), 16000)}, "audio is empty"),
        ("translation", "/translate", {"json": {"text": "hi", "source": "en"}}, "'target'"),
        ("tts", "/synthesize", {"json": {"text": "", "language": "es"}}, "'text' is empty"),
    ],
)
async def test_bad_input_is_400_naming_the_problem(
    model: Services, service: str, path: str, kwargs: dict[str, object], needle: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{model[service].url}{path}", **kwargs) as resp:
            assert resp.status == 400
            assert needle in (await resp.json())["error"]
    assert model[service].wait_for_line(r"POST 400 ")  # and logged, one line


async def test_stereo_wav_is_rejected(model: Services) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((1600, 2), np.int16), 16000, format="WAV", subtype="PCM_16")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{model['stt'].url}/transcribe", data=buf.getvalue()) as resp:
            assert resp.status == 400 and "mono" in (await resp.json())["error"]


# ----------------------------------------------------------------------------- lifecycle


async def test_stack_json_and_graceful_sigterm(workdir: Path) -> None:
    cfg = load_stack_config("fixed-delays")
    doc = stack_config_to_doc(cfg)
    doc["stack"]["fixtures"] = str(workdir / "corpus" / "manifest.json")
    path = workdir / "stack.json"
    path.write_text(json.dumps(doc))
    proc = ServiceProcess("translation", ["--stack-json", str(path)]).start()
    try:
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(f"{proc.url}/health")).json()
            assert health["status"] == "ok" and health["workers"] == 64 and health["engine"] == "model"
            req = {"text": "five five", "source": "en", "target": "es"}
            in_flight = asyncio.create_task(http.post(f"{proc.url}/translate", json=req))
            await asyncio.sleep(0.03)  # the 100 ms request is being served...
            code = await asyncio.to_thread(proc.stop)  # ...when SIGTERM arrives: it still completes
            resp = await in_flight
            assert resp.status == 200 and (await resp.json())["text"] == "cinco cinco"
    finally:
        proc.stop()
    assert code == 0
    assert any("shutting down" in line for line in proc.lines)


def test_model_stt_without_corpus_fails_fast(workdir: Path) -> None:
    toml = stack_toml(workdir, "nocorpus", "")
    toml.write_text(toml.read_text().replace("corpus/manifest.json", "missing/manifest.json"))
    proc = ServiceProcess("stt", ["--config", str(toml)])
    with pytest.raises(RuntimeError, match="fixture manifest not found"):
        proc.start(timeout_s=30)
    assert proc.proc is not None and proc.proc.wait(5) == 2
