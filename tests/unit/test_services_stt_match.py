"""Model STT: recognising which fixture the received audio is (energy-envelope matching)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from sut.config import LatencyModel
from sut.services import common, stt
from sut.services.common import LatencySampler, Slot
from sut.services.corpus import CorpusEntry, load_corpus
from sut.services.envelope import EnvelopeMatcher
from sut.services.stt import ModelStt
from sut.services.testkit import SAMPLE_CLIPS, TESTDATA, opus_round_trip, write_sample_manifest
from tests.prereq import needs

pytestmark = [
    pytest.mark.unit,
    needs(TESTDATA.exists(), "Debian package pocketsphinx-testdata not installed"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[CorpusEntry]:
    return load_corpus(write_sample_manifest(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def matcher(corpus: list[CorpusEntry]) -> EnvelopeMatcher:
    m = EnvelopeMatcher()
    for e in corpus:
        samples, rate = sf.read(e.path, dtype="int16")
        m.add(e.id, samples, rate, e.speech_start_s, e.speech_end_s)
    return m


@pytest.fixture(scope="module")
def received(corpus: list[CorpusEntry]) -> dict[str, np.ndarray]:
    """Each clip as the gateway would hand it over: 48 kHz after Opus, with its own level."""
    rng = np.random.default_rng(11)
    out = {}
    for e in corpus:
        samples, rate = sf.read(e.path, dtype="int16")
        out[e.id] = opus_round_trip(samples, rate).astype(np.float64) * rng.uniform(0.4, 1.8)
    return out


def pad(x: np.ndarray, rng: np.random.Generator, max_s: float = 0.5) -> np.ndarray:
    """Extra silence (with a faint noise floor) before and after, as a VAD's pre-roll/hangover leaves."""
    lead = rng.normal(0, 3, int(rng.uniform(0, max_s) * 48000))
    trail = rng.normal(0, 3, int(rng.uniform(0, max_s) * 48000))
    return np.concatenate([lead, x, trail])


def test_each_fixture_matches_itself(matcher: EnvelopeMatcher, received: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    for clip_id, audio in received.items():
        res = matcher.match(pad(audio, rng), 48000)
        assert res.matched and res.id == clip_id, (clip_id, res)
        assert res.score > 0.93, (clip_id, res)


def test_match_survives_low_bitrate_and_offset(matcher: EnvelopeMatcher, corpus: list[CorpusEntry]) -> None:
    rng = np.random.default_rng(6)
    for e in corpus[:3]:
        samples, rate = sf.read(e.path, dtype="int16")
        audio = opus_round_trip(samples, rate, bitrate=12000).astype(np.float64)
        res = matcher.match(pad(audio[int(0.05 * 48000) :], rng), 48000)  # VAD clipped 50 ms of onset
        assert res.matched and res.id == e.id, (e.id, res)


def test_white_noise_is_not_matched(matcher: EnvelopeMatcher) -> None:
    rng = np.random.default_rng(1)
    for seconds in (1.0, 2.0, 5.0):
        res = matcher.match(rng.normal(0, 3000, int(seconds * 48000)), 48000)
        assert not res.matched, res


def test_silence_is_not_matched(matcher: EnvelopeMatcher) -> None:
    res = matcher.match(np.zeros(48000), 48000)
    assert not res.matched and res.reason == "no speech in audio"


def test_other_clip_reversed_is_not_matched(
    matcher: EnvelopeMatcher, received: dict[str, np.ndarray]
) -> None:
    rng = np.random.default_rng(9)
    ids = list(received)
    for i, clip_id in enumerate(ids):
        other = ids[(i + 1) % len(ids)]
        res = matcher.match(pad(received[other][::-1].copy(), rng), 48000)
        assert not res.matched, (clip_id, other, res)
        assert res.score < 0.85


def test_partial_or_merged_audio_is_not_matched(
    matcher: EnvelopeMatcher, received: dict[str, np.ndarray]
) -> None:
    long_clip = received["austen-0870"]
    res = matcher.match(long_clip[: len(long_clip) // 2], 48000)  # the VAD cut an utterance in half
    assert not res.matched, res
    merged = np.concatenate([received["cards-001"], np.zeros(4800), received["cards-003"]])
    res = matcher.match(merged, 48000)  # two utterances in one request
    assert not res.matched, res


def test_language_filter(matcher: EnvelopeMatcher, received: dict[str, np.ndarray]) -> None:
    res = matcher.match(received["cards-004"], 48000, candidates=set())
    assert not res.matched


class FakeClock:
    """perf_counter for the engine and sut.services.common: advanced by the (fake) matching work and by
    the (fake) sleeps, so the service time the engine accounts for is exact and not subject to load."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("match_ms", "sleep_ms", "service_ms"), [(40.0, 110.0, 150.0), (200.0, None, 200.0)])
async def test_model_engine_counts_its_matching_inside_the_modelled_latency(
    corpus: list[CorpusEntry],
    received: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    match_ms: float,
    sleep_ms: float | None,
    service_ms: float,
) -> None:
    """Modelled 150 ms: the engine sleeps only what the matching left of it (40 ms of matching -> a
    110 ms sleep, 150 ms in all), and a matching slower than the model is not padded on top (200 ms,
    no sleep). How long matching really takes is measured by bench/stt_match.py, not asserted here."""
    engine = ModelStt(corpus, LatencySampler(LatencyModel("constant", ms=150)))
    clock = FakeClock()
    real_match = engine.matcher.match

    def slow_match(*args: object, **kwargs: object) -> object:
        clock.now += match_ms / 1000
        return real_match(*args, **kwargs)

    monkeypatch.setattr(engine.matcher, "match", slow_match)
    monkeypatch.setattr(stt, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(common, "asyncio", SimpleNamespace(sleep=clock.sleep))
    audio = received["austen-0880"].astype(np.int16)
    t0 = clock.now
    result = await engine.transcribe(audio, 48000, "en", Slot(0, 0.0))
    assert result.text == SAMPLE_CLIPS["austen-0880"][1] and result.matched
    assert (clock.now - t0) * 1000 == pytest.approx(service_ms)
    assert clock.sleeps == ([] if sleep_ms is None else [pytest.approx(sleep_ms / 1000)])


async def test_model_engine_answers_transcript_after_latency(
    corpus: list[CorpusEntry], received: dict[str, np.ndarray]
) -> None:
    engine = ModelStt(corpus, LatencySampler(LatencyModel("constant", ms=150)))
    audio = received["austen-0880"].astype(np.int16)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await engine.transcribe(audio, 48000, "en", Slot(0, 0.0))
    assert loop.time() - t0 > 0.14  # the modelled 150 ms is served (how much longer: bench/stt_match.py)
    assert result.text == SAMPLE_CLIPS["austen-0880"][1] and result.matched
    result = await engine.transcribe(audio, 48000, "es", Slot(0, 0.0))  # no Spanish fixtures
    assert result.text == "" and result.matched is False


def test_manifest_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "a.wav", np.zeros(1600, np.int16), 16000)
    item = {
        "id": "a",
        "file": "clips/a.wav",
        "language": "en",
        "transcript": "x",
        "translations": {"es": "b"},
    }
    (tmp_path / "manifest.json").write_text(json.dumps([item]))
    (entry,) = load_corpus(tmp_path / "manifest.json")
    assert entry.path == (tmp_path / "clips" / "a.wav").resolve() and entry.translations == {"es": "b"}


REPO_MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"


@needs(REPO_MANIFEST.exists(), "fixture set not present")
def test_repo_fixture_set_matches_itself_and_rejects_reversals() -> None:
    """The corpus the stack really serves (fixtures/audio): each clip after Opus is recognised."""
    corpus = load_corpus(REPO_MANIFEST)
    m = EnvelopeMatcher()
    audio = {}
    for e in corpus:
        samples, rate = sf.read(e.path, dtype="int16")
        m.add(e.id, samples, rate, e.speech_start_s, e.speech_end_s)
        audio[e.id] = opus_round_trip(samples, rate).astype(np.float64)
    transcripts = {e.id: e.transcript for e in corpus}
    rng = np.random.default_rng(21)
    ids = list(audio)
    for i, clip_id in enumerate(ids):
        res = m.match(pad(audio[clip_id], rng), 48000)
        # Two recordings of one sentence may match each other: the transcript is what must be right.
        assert res.matched and transcripts[res.id] == transcripts[clip_id], (clip_id, res)
        other = ids[(i + 1) % len(ids)]
        assert not m.match(audio[other][::-1].copy(), 48000).matched, other
