"""Model STT on audio holding several fixtures in a row (a VAD whose hangover outlasted the pauses of a
monologue): split at the pauses, each part matched, the transcripts joined in order.

Audio is fed as the gateway sends it to STT with its level-header VAD (every stack config): the take
through Opus, decoded at 16 kHz (here: decoded at 48 kHz and resampled). Corpus: the repo's fixture set
(fixtures/audio), what the stack serves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sut.config import LatencyModel
from sut.services.audio import resample
from sut.services.common import LatencySampler, Slot
from sut.services.corpus import CorpusEntry, load_corpus
from sut.services.envelope import MIN_PAUSE_FRAMES, band_envelope, voiced_parts
from sut.services.stt import ModelStt, SttResult
from sut.services.testkit import opus_round_trip

pytestmark = pytest.mark.unit

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"
GATEWAY_RATE = 16000  # the STT WAV's rate with vad.source = "audio-level" (docs/reference-stack.md)


class CountingSampler(LatencySampler):
    """A constant 0 ms model that counts its draws."""

    def __init__(self) -> None:
        super().__init__(LatencyModel("constant", ms=0))
        self.draws = 0

    def draw_ms(self) -> float:
        self.draws += 1
        return super().draw_ms()


@pytest.fixture(scope="module")
def corpus() -> list[CorpusEntry]:
    return load_corpus(MANIFEST)


@pytest.fixture(scope="module")
def engine(corpus: list[CorpusEntry]) -> ModelStt:
    return ModelStt(corpus, CountingSampler())


@pytest.fixture(scope="module")
def clips(corpus: list[CorpusEntry]) -> dict[str, np.ndarray]:
    """Each fixture as spoken (its own edge silence kept), float at 48 kHz."""
    out = {}
    for e in corpus:
        samples, rate = sf.read(e.path, dtype="int16")
        out[e.id] = resample(samples, rate, 48000)
    return out


def received(take: np.ndarray, rate: int = GATEWAY_RATE) -> np.ndarray:
    """A 48 kHz take as STT receives it: through Opus, at ``rate``."""
    decoded = opus_round_trip(np.clip(take, -32768, 32767).astype(np.int16), 48000)
    return resample(decoded, 48000, rate).astype(np.int16)


def pause(rng: np.random.Generator, lo: float = 0.4, hi: float = 0.8) -> np.ndarray:
    return rng.normal(0, 3, int(rng.uniform(lo, hi) * 48000))  # a faint noise floor


def take_of(clips: dict[str, np.ndarray], ids: list[str], rng: np.random.Generator) -> np.ndarray:
    pieces: list[np.ndarray] = []
    for i, clip_id in enumerate(ids):
        pieces += [pause(rng)] if i else []
        pieces.append(clips[clip_id])
    return np.concatenate(pieces) * rng.uniform(0.5, 1.5)  # the caller's own level


async def stt(engine: ModelStt, audio: np.ndarray, language: str, rate: int = GATEWAY_RATE) -> SttResult:
    return await engine.transcribe(audio, rate, language, Slot(0, 0.0))


def test_no_fixture_has_a_pause_the_split_would_cut_at(clips: dict[str, np.ndarray]) -> None:
    """The split threshold's premise (0.3 s > every pause inside a fixture): each fixture, as received,
    is one voiced part, and stays one at a threshold of 0.25 s (the longest pause measured by the split's
    rule: 0.20 s, in forever-4)."""
    for clip_id, clip in clips.items():
        env = band_envelope(received(clip), GATEWAY_RATE)
        assert len(voiced_parts(env, MIN_PAUSE_FRAMES - 5)) == 1, clip_id


async def test_two_and_three_fixtures_in_a_row_are_transcribed_in_order(
    engine: ModelStt, corpus: list[CorpusEntry], clips: dict[str, np.ndarray]
) -> None:
    rng = np.random.default_rng(7)
    by_language = {lang: [e.id for e in corpus if e.language == lang] for lang in ("en", "es")}
    for n in range(12):
        language = ("en", "es")[n % 2]
        ids = [str(i) for i in rng.choice(by_language[language], 2 + n % 3 // 2, replace=False)]
        result = await stt(engine, received(take_of(clips, ids, rng)), language)
        assert result.text == " ".join(engine.entries[i].transcript for i in ids), (ids, result)
        assert result.matched and result.fixture_id == "+".join(ids) and result.parts == len(ids), result


async def test_a_long_fixture_does_not_swallow_a_short_one_beside_it(
    engine: ModelStt, clips: dict[str, np.ndarray]
) -> None:
    """austen-0870 alone passes the duration check for the whole take (6.5 s of speech, +30 % allowed):
    the speech it leaves uncovered sends the take to the split."""
    rng = np.random.default_rng(8)
    for ids in (["austen-0870", "cards-001"], ["cards-001", "austen-0890"]):
        result = await stt(engine, received(take_of(clips, ids, rng)), "en")
        assert result.text == " ".join(engine.entries[i].transcript for i in ids), (ids, result)


async def test_a_quiet_fixture_cut_at_its_own_pause_is_put_back_together(
    engine: ModelStt, clips: dict[str, np.ndarray]
) -> None:
    """A fixture 20 dB quieter than the one before it: its own short pauses fall further below the
    take's speech threshold and split it; its parts together match it."""
    rng = np.random.default_rng(14)
    for quiet_id in ("forever-4", "cards-004", "austen-0880"):
        audio = received(np.concatenate([clips["cards-003"], pause(rng), clips[quiet_id] * 0.1]))
        assert len(voiced_parts(band_envelope(audio, GATEWAY_RATE))) > 2, quiet_id  # more than fixtures
        result = await stt(engine, audio, "en")
        assert result.text == "seven of clubs " + engine.entries[quiet_id].transcript, (quiet_id, result)
        assert result.parts == 2


async def test_at_48_khz_too(engine: ModelStt, clips: dict[str, np.ndarray]) -> None:
    """vad.source = "energy" sends 48 kHz."""
    ids = ["cards-003", "austen-0880", "forever-2"]
    audio = received(take_of(clips, ids, np.random.default_rng(9)), 48000)
    result = await stt(engine, audio, "en", 48000)
    assert result.text == " ".join(engine.entries[i].transcript for i in ids), result


async def test_a_single_fixture_is_answered_as_before(
    engine: ModelStt, corpus: list[CorpusEntry], clips: dict[str, np.ndarray]
) -> None:
    rng = np.random.default_rng(10)
    for e in corpus:
        audio = received(np.concatenate([pause(rng, 0, 0.5), clips[e.id], pause(rng, 0, 0.5)]))
        result = await stt(engine, audio, e.language)
        assert result.matched and result.text == e.transcript, (e.id, result)
        assert result.fixture_id == e.id and result.parts is None, result  # no split was needed


async def test_noise_and_silence_are_still_empty(engine: ModelStt) -> None:
    rng = np.random.default_rng(11)
    bursts = np.concatenate([np.concatenate([rng.normal(0, 3000, int(s * 48000)), np.zeros(24000)])
                             for s in (0.6, 1.2, 2.0, 0.9)])  # pauses to split at, nothing to find
    assert len(voiced_parts(band_envelope(received(bursts), GATEWAY_RATE))) == 4
    for audio in (rng.normal(0, 3000, 3 * 48000), np.zeros(2 * 48000), bursts):
        result = await stt(engine, received(audio), "en")
        assert result.text == "" and result.matched is False and result.parts is None, result


async def test_a_fixture_cut_in_half_matches_nothing_and_is_skipped(
    engine: ModelStt, clips: dict[str, np.ndarray]
) -> None:
    """A half fixture (the VAD cut it) matches nothing, alone or as a part: alone the answer is empty;
    next to a whole fixture only the whole one is transcribed (the half's words are lost)."""
    rng = np.random.default_rng(12)
    for long_id in ("austen-0870", "cards-005", "forever-4"):
        clip = clips[long_id]
        first, second = clip[: len(clip) // 2], clip[len(clip) // 2 :]
        for half in (first, second):
            result = await stt(engine, received(half), "en")
            assert result.text == "" and result.matched is False, (long_id, result)
        result = await stt(engine, received(np.concatenate([clips["cards-001"], pause(rng), first])), "en")
        assert (result.text, result.parts) == ("ten of clubs", 1), (long_id, result)
        result = await stt(engine, received(np.concatenate([second, pause(rng), clips["cards-003"]])), "en")
        assert (result.text, result.parts) == ("seven of clubs", 1), (long_id, result)


async def test_parts_are_matched_in_the_requested_language_with_one_latency_draw(
    corpus: list[CorpusEntry], clips: dict[str, np.ndarray]
) -> None:
    sampler = CountingSampler()
    engine = ModelStt(corpus, sampler)
    audio = received(take_of(clips, ["cards-001", "cards-004", "austen-0930"], np.random.default_rng(13)))
    result = await stt(engine, audio, "es")
    assert result.text == "" and result.matched is False  # English audio, Spanish candidates only
    result = await stt(engine, audio, "en")
    assert result.parts == 3 and sampler.draws == 2  # one draw per request, not per part
