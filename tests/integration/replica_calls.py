"""Conversations placed on chosen gateway replicas, and what the replicas say about themselves.

The tester's PipelineClient connects its speaker to ``url`` and its listener to ``listener_url``; here
each is a replica's own plain-HTTP address, so a test decides whether a conversation's two peers share
a replica or sit on different ones (through the proxy, round robin decides).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import socketio

from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.ice import AUTO, choose_ice
from loadtest.profile_file import load_profile
from loadtest.signaling import SignalingError
from loadtest.timeline import Outcome, UtteranceTimeline, outcome
from loadtest.webrtc_client import ClientOptions, PipelineClient, ScheduledUtterance
from tests.integration.stackrun import MANIFEST


@dataclass
class Conversation:
    name: str
    speaker_url: str
    listener_url: str
    timelines: list[UtteranceTimeline] = field(default_factory=list)
    speaker_node: str | None = None  # the replicas the tester recorded from the join answers
    listener_node: str | None = None

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome(tl) for tl in self.timelines]


def _listener(room: str, peer: str) -> dict[str, str]:
    return {"roomId": room, "peerId": peer, "role": "listener"}


async def _converse(conv: Conversation, plan: list[ScheduledUtterance], timeout_s: float) -> None:
    options = ClientOptions(url=conv.speaker_url, listener_url=conv.listener_url,
                            profile=load_profile("reference"), ssl_context=False,
                            connect_timeout_s=timeout_s, response_timeout_s=timeout_s)
    client = PipelineClient(options, silence_packet(), lambda tl, _c: conv.timelines.append(tl),
                            conversation=conv.name)
    try:
        await client.connect()
        await client.speak(plan)
    except SignalingError:
        pass  # delivered as the conversation's one error row (stage "connect")
    finally:
        conv.speaker_node, conv.listener_node = client.result.speaker_node, client.result.listener_node
        await client.close()


def converse(conversations: list[Conversation], fixture_ids: tuple[str, ...], interval_s: float,
             timeout_s: float = 8.0, probes: tuple[Coroutine[Any, Any, Any], ...] = ()) -> list[Any]:
    """Run the conversations at once, each speaking every fixture once, `interval_s` apart, and the
    `probes` beside them; bounded by the client's connect and response timeouts. Returns the probes'
    results (the conversations collect their timelines)."""
    library = FixtureLibrary(MANIFEST)
    plan = [ScheduledUtterance(f, library.get(f), k * interval_s) for k, f in enumerate(fixture_ids)]
    choose_ice((AUTO,), conversations[0].speaker_url).apply()  # loopback: host candidates on 127.0.0.1

    async def run_all() -> list[Any]:
        calls = [_converse(c, plan, timeout_s) for c in conversations]
        return list(await asyncio.gather(*calls, *probes))[len(calls):]

    return asyncio.run(run_all())


async def late_join(url: str, room: str, timeout_s: float = 10.0) -> tuple[list[Any], list[Any]]:
    """On the replica at `url`: a first peer waits until the room announces a TTS producer (in its join
    answer or a newProducer event), then a second peer joins; its join answer's producers and its
    getProducers answer, as (join, get)."""
    tts = asyncio.Event()
    first = socketio.AsyncClient(reconnection=False)
    first.on("newProducer", lambda info: tts.set() if info["appData"]["type"] == "tts" else None)
    second = socketio.AsyncClient(reconnection=False)
    try:
        await first.connect(url, transports=["websocket"], wait_timeout=10)
        ack = await first.call("joinRoom", _listener(room, "probe-1"), timeout=10)
        if any(p["appData"]["type"] == "tts" for p in ack["data"]["producers"]):
            tts.set()
        await asyncio.wait_for(tts.wait(), timeout_s)
        await second.connect(url, transports=["websocket"], wait_timeout=10)
        join = await second.call("joinRoom", _listener(room, "probe-2"), timeout=10)
        get = await second.call("getProducers", {}, timeout=10)
        return join["data"]["producers"], get["data"]["producers"]
    finally:
        for client in (first, second):
            if client.connected:
                await client.disconnect()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def metric(base_url: str, name: str, labels: str = "") -> float:
    """One series of a replica's /metrics (0 when it has none yet)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    series = f"{name}{{{labels}}}" if labels else name
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _join(url: str, room: str, peer: str) -> dict[str, Any]:
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        return dict(await sio.call("joinRoom", _listener(room, peer), timeout=10))
    finally:
        await sio.disconnect()


def join_answer(url: str, room: str, peer: str) -> dict[str, Any]:
    """The ack of one joinRoom on the replica at `url` (the peer leaves right after)."""
    return asyncio.run(_join(url, room, peer))


async def _join_twice(first_url: str, second_url: str, room: str, peer: str) -> dict[str, Any]:
    first = socketio.AsyncClient(reconnection=False)
    await first.connect(first_url, transports=["websocket"], wait_timeout=10)
    try:
        ack = await first.call("joinRoom", _listener(room, peer), timeout=10)
        assert ack["ok"], ack
        return dict(await _join(second_url, room, peer))
    finally:
        await first.disconnect()


def join_twice(first_url: str, second_url: str, room: str, peer: str) -> dict[str, Any]:
    """The ack of a second joinRoom of the same peer id while the first (on `first_url`) is in."""
    return asyncio.run(_join_twice(first_url, second_url, room, peer))
