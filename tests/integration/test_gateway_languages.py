"""Translated speech per target language, through the real gateway's signaling and media.

The real Node gateway with its mediasoup worker, the model services on the repo's corpus, aiortc
clients (tests/integration/gateway_clients.py), all on 127.0.0.1:

* a group call: an English speaker, a listener wanting es from the start and one wanting fr who joins
  after the mic exists: her joinRoom answer already lists a fr TTS producer, each listener hears the
  utterance on its own language's producer, with one transcription and a translation and tts event per
  language;
* es→en: a speaker of the synthesized Spanish fixtures (source es, target en) and a listener wanting en.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from tests.integration.gateway_clients import ClipTrack, Peer, RtpArrivals
from tests.integration.gateway_harness import (
    GATEWAY_DIR,
    REPO,
    gt_lines,
    pin_ice_to_loopback,
    read_48k,
    services_available,
    start_stack,
    worker_bin,
)
from tests.prereq import missing

pytestmark = pytest.mark.integration
MANIFEST = REPO / "fixtures" / "audio" / "manifest.json"


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    if not (GATEWAY_DIR / "node_modules" / "mediasoup").is_dir():
        missing("sut/gateway/node_modules missing: run npm install in sut/gateway")
    if worker_bin() is None:
        missing("no mediasoup worker: set MEDIASOUP_WORKER_BIN or build it (/tmp/speechload-worker-path.txt)")
    if not services_available():
        missing("sut/services/{stt,translation,tts}.py not all present")
    pin_ice_to_loopback(monkeypatch)
    info, procs = await start_stack(tmp_path, with_services=True)
    if info["engine"] != "model":
        missing("the model engines need the fixture corpus (fixtures/audio/manifest.json)")
    try:
        yield info
    finally:
        for proc in reversed(procs):
            await proc.stop()


async def join(peer: Peer, room: str, role: str, source: str, target: str,
               tracks: list[MediaStreamTrack]) -> dict[str, Any]:
    """gateway_clients.Peer.join, with the peer's languages."""
    await peer.sio.connect(peer.url, transports=["websocket"], wait_timeout=10)
    data = await peer.request("joinRoom", {"roomId": room, "peerId": peer.name, "role": role,
                                           "sourceLanguage": source, "targetLanguage": target})
    peer.device = Device(handlerFactory=AiortcHandler.createFactory(tracks=tracks))
    await peer.device.load(RtpCapabilities.model_validate(data["rtpCapabilities"]))
    return data


async def listen(peer: Peer, producer_id: str) -> RtpArrivals:
    """Consume one producer on a fresh recv transport; RTP arrivals from then on."""
    recv, connected, _ = await peer.transport("recv")
    consumer, data = await peer.consume(recv, producer_id)
    assert data["producerId"] == producer_id
    receiver = next(r for r in recv.handler.pc.getReceivers() if r.track is consumer.track)
    arrivals = RtpArrivals(receiver)
    await asyncio.wait_for(connected, 10)
    await peer.request("resumeConsumer", {"consumerId": consumer.id})
    return arrivals


async def start_speaker(info: dict[str, Any], room: str, source: str, target: str, fixture: dict[str, Any]
                        ) -> tuple[Peer, ClipTrack]:
    """A speaker whose microphone sends silence until `track.start_clip()` (the caller says when)."""
    track = ClipTrack(read_48k(MANIFEST.parent / fixture["file"]))
    speaker = Peer(info["url"], "speaker-1")
    await join(speaker, room, "speaker", source, target, [track])
    send, connected, _ = await speaker.transport("send")
    await send.produce(track=track, stopTracks=False)
    await asyncio.wait_for(connected, 10)
    return speaker, track


def fixture(fixture_id: str) -> dict[str, Any]:
    entries = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return next(e for e in entries if e["id"] == fixture_id)


def tts_producers(events: list[tuple[float, str, dict[str, Any]]], mic: str) -> dict[str, str]:
    """language → TTS producer id of `mic`, as announced to a peer."""
    return {d["appData"]["language"]: d["id"] for _, n, d in events if n == "newProducer"
            and d["appData"]["type"] == "tts" and d["appData"]["sourceProducerId"] == mic}


async def heard(arrivals: RtpArrivals, tts: dict[str, Any]) -> None:
    """The utterance's translated audio arrived at this listener, from its announced first packet on."""
    def enough() -> bool:
        ours = [p for p in arrivals.packets if (p[2] - tts["rtpTimestamp"]) % 2**32 < 2**31]
        return len(ours) >= int(tts["durationMs"] / 20) - 1 and any(p[2] == tts["rtpTimestamp"] for p in ours)

    await arrivals.wait_for(enough, tts["durationMs"] / 1000 + 10, "translated audio at the listener")


async def test_group_call_each_listener_hears_its_own_language(stack: dict[str, Any]) -> None:
    room, clip = "group-room", fixture("cards-005")
    spanish_ear = Peer(stack["url"], "listener-es")
    french_ear = Peer(stack["url"], "listener-fr")
    speaker = None
    try:
        await join(spanish_ear, room, "listener", "en", "es", [])
        speaker, track = await start_speaker(stack, room, "en", "es", clip)
        _, mic = await spanish_ear.wait_event("newProducer", 5, lambda d: d["appData"]["type"] == "mic")
        await spanish_ear.wait_event("newProducer", 5, lambda d: d["appData"]["type"] == "tts")
        assert list(tts_producers(spanish_ear.events, mic["id"])) == ["es"]

        # The fr listener joins after the mic exists: the answer already lists a fr TTS producer.
        answer = await join(french_ear, room, "listener", "en", "fr", [])
        listed = {p["appData"]["language"]: p["id"] for p in answer["producers"]
                  if p["appData"]["type"] == "tts"}
        assert set(listed) == {"es", "fr"}, answer["producers"]
        await spanish_ear.wait_event("newProducer", 5, lambda d: d["appData"].get("language") == "fr")
        assert tts_producers(spanish_ear.events, mic["id"]) == listed
        ears = {"es": await listen(spanish_ear, listed["es"]), "fr": await listen(french_ear, listed["fr"])}

        track.start_clip()
        _, tr = await spanish_ear.wait_event("transcription", 30)
        for language, peer in (("es", spanish_ear), ("fr", french_ear)):
            _, tl = await peer.wait_event("translation", 30,
                                          lambda d, lang=language: d["targetLanguage"] == lang)
            _, tts = await peer.wait_event("tts", 30, lambda d, lang=language: d["language"] == lang)
            assert tl["utteranceId"] == tts["utteranceId"] == tr["utteranceId"]
            assert tts["ttsProducerId"] == listed[language]
            await heard(ears[language], tts)
        # Model translation: the reference for es, a marked pass-through for fr (no fr reference).
        texts = {d["targetLanguage"]: d["text"] for _, n, d in french_ear.events if n == "translation"}
        assert texts == {"es": clip["translations"]["es"], "fr": f"[fr] {clip['transcript']}"}
        # Per utterance: one transcription, and a translation and a tts per language.
        names = [n for _, n, d in french_ear.events if d.get("utteranceId") == tr["utteranceId"]]
        assert sorted(names) == ["transcription", "translation", "translation", "tts", "tts"], names
        # The es listener's stream carried only its own language's audio: one utterance, one marker.
        assert sum(1 for p in ears["es"].packets if p[3]) == 1
    finally:
        for peer in (speaker, spanish_ear, french_ear):
            if peer is not None:
                await peer.close()
    await stack["gateway"].stop()  # flushes the ground truth
    lines = [ln for ln in gt_lines(stack["groundtruth"]) if ln.get("utteranceId") == tr["utteranceId"]]
    per_language = sorted((ln["kind"], ln.get("targetLanguage")) for ln in lines)
    assert per_language == [("speech_end", None), ("transcription", None), ("translation", "es"),
                            ("translation", "fr"), ("tts_first_packet", "es"), ("tts_first_packet", "fr")]


async def test_spanish_speaker_english_listener(stack: dict[str, Any]) -> None:
    room, clip = "es-en-room", fixture("es-cards-005")
    ear = Peer(stack["url"], "listener-en")
    speaker = None
    try:
        await join(ear, room, "listener", "en", "en", [])
        speaker, track = await start_speaker(stack, room, "es", "en", clip)
        _, tts_info = await ear.wait_event("newProducer", 5, lambda d: d["appData"]["type"] == "tts")
        assert tts_info["appData"]["language"] == "en"
        arrivals = await listen(ear, tts_info["id"])
        track.start_clip()
        _, tr = await ear.wait_event("transcription", 30)
        assert (tr["language"], tr["text"]) == ("es", clip["transcript"])
        _, tl = await ear.wait_event("translation", 30)
        assert (tl["sourceLanguage"], tl["targetLanguage"]) == ("es", "en")
        assert tl["text"] == clip["translations"]["en"]
        _, tts = await ear.wait_event("tts", 30)
        assert tts["language"] == "en" and tts["ttsProducerId"] == tts_info["id"]
        await heard(arrivals, tts)
        # The mic's own language is never a target: one TTS producer (en), nothing in es.
        announced = [d for _, n, d in ear.events if n == "newProducer" and d["appData"]["type"] == "tts"]
        assert [d["appData"]["language"] for d in announced] == ["en"]
        assert not [d for _, n, d in ear.events if n == "pipelineError"]
        assert np.isfinite(tts["serverTs"]) and tts["serverTs"] > tr["serverTs"]
    finally:
        for peer in (speaker, ear):
            if peer is not None:
                await peer.close()
