"""A hostile gateway: 10 000 generated server messages into the tester's event path, nothing breaks.

A real Socket.IO server written for this test (python-socketio on aiohttp, loopback) speaks the
reference dialect's event names and floods one real tester channel (SignalingChannel) whose listener
inbox (loadtest.inbox.Inbox → Correlator, Announcements) is the one PipelineClient uses. The messages:
wrong types, missing and extra fields, 10 MB strings, deep nesting, unknown and duplicated utterance
ids, out-of-order and late events, events for other producers, binary frames, garbage announcements.
Every message must be counted exactly once (handled, malformed or unmatched), the channel must stay
up, and what is kept must stay bounded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
import socketio
from aiohttp import web

from loadtest.announcements import MAX_ANNOUNCED, Announcements
from loadtest.events import MAX_TEXT, Correlator
from loadtest.hearing import MAX_SPURTS
from loadtest.inbox import Inbox
from loadtest.profile_file import load_profile
from loadtest.signaling import SignalingChannel
from loadtest.timeline import UtteranceTimeline

pytestmark = pytest.mark.integration

MESSAGES = 10_000
BIG = "x" * (10 * 1024 * 1024)
MIC = "mic-1"


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"n": value}
    return value


def carries_big(payload: Any) -> bool:
    return payload is BIG or (isinstance(payload, dict) and any(v is BIG for v in payload.values()))


def generator(seed: int) -> Callable[[int], tuple[str, Any]]:
    """(event, payload) for message k: a deterministic mix of every kind of trouble."""
    rng = random.Random(seed)
    junk: list[Any] = [None, 0, -1, 3.5, True, "", "text", [], [1, 2], {}, b"\x00\xff binary", {"a": None}]

    def make(k: int) -> tuple[str, Any]:
        kind = rng.randrange(14)
        uid = f"u-{rng.randrange(40)}"  # few ids: duplicates and out-of-order events are common
        if kind == 0:
            return "transcription", {"utteranceId": uid, "producerId": MIC, "text": "hello", "serverTs": k}
        if kind == 1:
            return "transcription", {"utteranceId": uid, "producerId": "someone-else", "text": "hi"}
        if kind == 2:
            return "translation", {"utteranceId": uid, "text": "hola", "extra": {"field": [1, 2, 3]}}
        if kind == 3:
            return "tts", {"utteranceId": uid, "rtpTimestamp": rng.randrange(2**32), "durationMs": "long"}
        if kind == 4:
            return "pipelineError", {"utteranceId": uid, "stage": "stt", "error": "backend down " * 5}
        if kind == 5:
            return rng.choice(["transcription", "translation", "tts", "pipelineError"]), rng.choice(junk)
        if kind == 6:
            return "transcription", {"utteranceId": {"nested": uid}, "producerId": MIC, "text": 7}
        if kind == 7:
            return "translation", {"text": "no id"}
        if kind == 8:
            return "newProducer", rng.choice(junk + [[{"id": f"p{k}", "appData": {"type": "tts"}}, "junk"]])
        if kind == 9:
            return "newProducer", {"id": f"p{k}", "appData": {"type": rng.choice(["tts", "mic", 5])}}
        if kind == 10:
            return "translation", deep(rng.choice([20, 60, 120]))
        if kind == 11 and k % 2500 < 40:  # a handful of 10 MB strings, not thousands
            return rng.choice([("transcription", {"utteranceId": uid, "producerId": MIC, "text": BIG}),
                               ("newProducer", {"id": BIG}), ("pipelineError", BIG)])
        if kind == 12:
            return "tts", {"utteranceId": "u-" + "9" * 5000, "rtpTimestamp": 1}
        return "transcription", {"utteranceId": f"late-{k}", "producerId": MIC, "text": "late " * 300,
                                 "speechEndTs": "yesterday", "serverTs": None}

    return make


async def start_server(port: int, make: Callable[[int], tuple[str, Any]]) -> web.AppRunner:
    sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=64 * 1024 * 1024)
    app = web.Application()
    sio.attach(app)

    async def flood(sid: str) -> None:
        for k in range(MESSAGES):
            event, payload = make(k)
            await sio.emit(event, payload, to=sid)
        await sio.emit("fuzz_done", MESSAGES, to=sid)

    @sio.on("resumeConsumer")  # the reference profile's request, used here as "start"
    async def start(sid: str, _payload: Any) -> dict[str, Any]:
        sio.start_background_task(flood, sid)
        return {"ok": True, "data": {}}

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def expected_utterances(correlator: Correlator, count: int) -> list[UtteranceTimeline]:
    out = []
    for seq in range(1, count + 1):
        tl = UtteranceTimeline(utterance_id=f"c-{seq}", conversation="c", seq=seq, fixture_id="f",
                               source_language="en", target_language="es", t_planned=0.0, wall_start=0.0)
        tl.t_send_start, tl.t_speech_end = 0.0, 0.1
        correlator.expect(tl)
        out.append(tl)
    return out


async def test_ten_thousand_hostile_messages_are_counted_and_nothing_breaks() -> None:
    profile = load_profile("reference")
    preview = generator(seed=7)
    kinds = [preview(k) for k in range(MESSAGES)]  # what the server will send, in order
    assert sum(carries_big(payload) for _event, payload in kinds) >= 3
    assert sum(event == "newProducer" for event, _payload in kinds) > 500
    runner = await start_server(7701, generator(seed=7))
    completed: list[UtteranceTimeline] = []
    correlator = Correlator(MIC, completed.append, clock=lambda: 1.0)
    awaiting = expected_utterances(correlator, 30)
    announcements = Announcements(profile.producers)
    inbox = Inbox(profile, announcements, correlator.on_event, lambda: None, clock=lambda: 1.0)
    channel = SignalingChannel("http://127.0.0.1:7701", profile, False, 30.0, {"room": "r"})
    done = asyncio.Event()
    try:
        await channel.connect(10)
        inbox.register(channel.on)
        channel.on("fuzz_done", lambda *_a: done.set())
        channel.on_lost(lambda _reason: done.set())  # a dropped connection ends the wait too
        await channel.request("resume_consumer", {"consumer_id": "start"})
        await asyncio.wait_for(done.wait(), 240)
        assert not channel.lost, channel.disconnect_reason
    finally:
        await channel.close()
        await runner.cleanup()
    counts = inbox.counts
    assert counts.received == MESSAGES
    assert counts.balanced(), counts
    assert counts.handled > 0 and counts.malformed > 1000 and counts.unmatched > 1000, counts
    # Bounded: what the tester keeps of a server's words.
    assert len(announcements.announced) <= MAX_ANNOUNCED
    for tl in awaiting:
        for text in (tl.transcript, tl.translation, tl.error):
            assert text is None or len(text) <= MAX_TEXT + 64, len(text or "")
    assert len(correlator._by_server_id) <= 30 and len(correlator.hearing._spurts) <= MAX_SPURTS
