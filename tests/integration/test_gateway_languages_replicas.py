"""Target languages across gateway replicas: the `replicas` stack (two gateways, Redis; offset 450).

A speaker on replica A; a listener on replica B wanting a language nobody on A wants. Before the mic
exists (a de listener) A's session reads the language from the room's directory; after it (a fr
listener) B tells A (`room.language`). Either way A adds a TTS producer, lists it, announces it through
the Redis adapter, and the listener on B pipes it in and hears its language.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sut.stack import StackInfo
from tests.integration.gateway_clients import Peer
from tests.integration.gateway_harness import pin_ice_to_loopback
from tests.integration.stackrun import running_stack
from tests.integration.test_gateway_languages import fixture, heard, join, listen, start_speaker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    with running_stack("replicas", tmp_path_factory.mktemp("stack"), 450) as info:
        yield info


async def announced(peer: Peer, language: str, mic: str) -> dict[str, Any]:
    """The announcement of `mic`'s TTS producer in `language` (past or within 10 s)."""
    _, info = await peer.wait_event("newProducer", 10, lambda d: d["appData"]["type"] == "tts"
                                    and d["appData"]["language"] == language
                                    and d["appData"]["sourceProducerId"] == mic)
    return info


def test_listeners_on_the_other_replica_get_their_languages(
    replicated: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_ice_to_loopback(monkeypatch)
    a, b = replicated.gateway_urls
    room, clip = "replicas-languages", fixture("cards-005")

    async def call() -> None:
        german = Peer(b, "listener-de")
        french = Peer(b, "listener-fr")
        speaker = None
        try:
            await join(german, room, "listener", "en", "de", [])  # before the mic: the directory
            speaker, track = await start_speaker({"url": a}, room, "en", "es", clip)
            _, mic = await german.wait_event("newProducer", 10, lambda d: d["appData"]["type"] == "mic")
            await join(french, room, "listener", "en", "fr", [])  # after the mic: room.language to A
            # Both producers live on A: B's peers hear of them through the directory and the Redis adapter.
            de, fr = await announced(german, "de", mic["id"]), await announced(french, "fr", mic["id"])
            assert de["peerId"] == fr["peerId"] == "speaker-1"
            ears = {"de": await listen(german, de["id"]), "fr": await listen(french, fr["id"])}  # piped in
            track.start_clip()
            heard_by = {}
            for language, peer, info in (("de", german, de), ("fr", french, fr)):
                _, tts = await peer.wait_event("tts", 30, lambda d, lang=language: d["language"] == lang)
                assert tts["ttsProducerId"] == info["id"]
                await heard(ears[language], tts)
                heard_by[language] = tts["utteranceId"]
            assert heard_by["de"] == heard_by["fr"]
            # B lists A's TTS producers from the directory: the speaker's own es, and both listeners'.
            listed = (await german.request("getProducers", {}))["producers"]
            tts = [p["appData"]["language"] for p in listed if p["appData"]["type"] == "tts"]
            assert sorted(tts) == ["de", "es", "fr"], listed
        finally:
            for peer in (speaker, german, french):
                if peer is not None:
                    await peer.close()

    asyncio.run(call())
    logs = {p.name: p.read_text() for p in replicated.state_dir.glob("gateway-*.log")}
    assert any("piped in from replica" in text for text in logs.values()), "no TTS producer was piped"
