"""The model STT service over HTTP (python -m sut.services.stt, the repo's fixture set) on a request
holding three fixtures in a row, as a gateway whose VAD merged three sentences of a monologue sends it:
16 kHz WAV of the take after Opus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from sut.services.audio import resample, write_wav
from sut.services.corpus import load_corpus
from sut.services.testkit import ServiceProcess, opus_round_trip, write_stack_toml

pytestmark = pytest.mark.integration

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "manifest.json"


@pytest.fixture(scope="module")
def stt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    body = (f'[stack]\nfixtures = "{MANIFEST}"\n'
            '[stt]\nworkers = 1\n[stt.latency]\ndistribution = "constant"\nms = 100\n')
    proc = ServiceProcess("stt", ["--config", str(write_stack_toml(tmp_path_factory.mktemp("stt"), body))])
    proc.start()
    yield proc
    proc.stop()


def merged_wav(ids: list[str]) -> tuple[bytes, str]:
    entries = {e.id: e for e in load_corpus(MANIFEST)}
    pieces = []
    for i, clip_id in enumerate(ids):
        if i:
            pieces.append(np.zeros(int((0.45, 0.8)[i % 2] * 48000)))  # the monologue's pauses
        samples, rate = sf.read(entries[clip_id].path, dtype="int16")
        pieces.append(resample(samples, rate, 48000))
    take = opus_round_trip(np.concatenate(pieces).astype(np.int16), 48000)
    wav = write_wav(resample(take, 48000, 16000).astype(np.int16), 16000)
    return wav, " ".join(entries[i].transcript for i in ids)


async def test_three_merged_sentences_come_back_as_one_transcript(stt: ServiceProcess) -> None:
    ids = ["cards-002", "austen-0930", "cards-004"]
    wav, transcript = merged_wav(ids)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stt.url}/transcribe?language=en", data=wav) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["text"] == transcript and body["matched"] is True, body
        assert body["fixture_id"] == "+".join(ids) and body["parts"] == 3, body
        assert body["processing_ms"] >= 100  # the modelled latency is still served
        async with http.post(f"{stt.url}/transcribe?language=es", data=wav) as resp:
            body = await resp.json()
        assert body["text"] == "" and body["matched"] is False and "parts" not in body, body
    assert stt.wait_for_line(r"match=cards-002\+austen-0930\+cards-004 ") is not None
