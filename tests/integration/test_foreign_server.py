"""The foreign SFU (sut/foreign) speaks its own dialect: handshake, bare answers, producers_changed.

Real Node gateway and mediasoup worker on 127.0.0.1 (port 7600-7699), python-socketio clients, and a
pymediasoup/aiortc send transport for a real publish (ICE pinned to the listen address, no STUN).
Run: ``.venv/bin/pytest tests/integration/test_foreign_server.py -m integration``
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
import socketio
from aiortc.mediastreams import AudioStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from sut.foreign import launcher
from sut.foreign.launcher import ForeignGateway, ForeignGatewayError, foreign_gateway, mint_token
from tests.prereq import missing

pytestmark = pytest.mark.integration

LISTEN_IP = "127.0.0.1"
SECRET = "foreign-test-secret-0123456789abcdef"  # HS256 wants >= 32 bytes
ORIGIN = "http://app.foreign.test"
STATS_KEY = "foreign-stats-key"
NS = "/sfu"


def free_port() -> int:
    """A free TCP port in 7600-7699, starting at a pid-dependent offset so parallel runs spread out."""
    start = os.getpid() % 100
    for i in range(100):
        port = 7600 + (start + i) % 100
        with socket.socket() as s:
            try:
                s.bind((LISTEN_IP, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 7600-7699")


@pytest.fixture(scope="module")
def gateway() -> Iterator[ForeignGateway]:
    if not (launcher.GATEWAY_MODULES / "mediasoup").is_dir():
        missing("sut/gateway/node_modules missing: run make setup")
    try:
        launcher.worker_bin()
    except ForeignGatewayError as exc:
        missing(str(exc))
    rtc = 47000 + (os.getpid() % 20) * 100
    with foreign_gateway(free_port(), jwt_secret=SECRET, allowed_origin=ORIGIN, stats_key=STATS_KEY,
                         listen_ip=LISTEN_IP, rtc_ports=(rtc, rtc + 99)) as gw:
        yield gw


class Client:
    """A python-socketio client of the /sfu namespace; keeps connect errors and producers_changed lists."""

    def __init__(self, url: str, token: str, origin: str = ORIGIN) -> None:
        self.url, self.token, self.origin = url, token, origin
        self.sio = socketio.AsyncClient(reconnection=False)
        self.connect_errors: list[Any] = []
        self.changes: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self.sio.on("connect_error", self.connect_errors.append, namespace=NS)
        self.sio.on("producers_changed", self.changes.put_nowait, namespace=NS)

    async def connect(self) -> None:
        await self.sio.connect(f"{self.url}?access_token={self.token}", headers={"Origin": self.origin},
                               socketio_path="rtc", namespaces=[NS], wait_timeout=10)

    async def call(self, event: str, payload: dict[str, Any], timeout: float = 10) -> Any:
        return await self.sio.call(event, payload, namespace=NS, timeout=timeout)

    async def next_change(self) -> list[dict[str, Any]]:
        return await asyncio.wait_for(self.changes.get(), 10)


def token(peer: str, room: str, **extra: Any) -> str:
    return mint_token(SECRET, {"sub": peer, "room": room, "exp": int(time.time()) + 300, **extra})


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, None


async def refused(url: str, tok: str, origin: str = ORIGIN) -> str:
    client = Client(url, tok, origin)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.connect_errors, "no connect_error event"
    return str(client.connect_errors[0]["message"])


async def test_handshake_refusals(gateway: ForeignGateway) -> None:
    good = token("alice", "r1")
    assert await refused(gateway.url, good, origin="http://evil.test") == "Origin not allowed"
    forged = mint_token("another-secret-0123456789abcdef0123", {"sub": "alice", "room": "r1"})
    assert (await refused(gateway.url, forged)).startswith("invalid token")
    expired = token("alice", "r1", exp=int(time.time()) - 5)
    assert await refused(gateway.url, expired) == "invalid token: expired"
    no_room = mint_token(SECRET, {"sub": "alice"})
    assert await refused(gateway.url, no_room) == "invalid token: missing room claim"
    assert (await refused(gateway.url, "not-a-jwt")).startswith("invalid token: ")


def test_http_endpoints(gateway: ForeignGateway) -> None:
    assert http_get(f"{gateway.url}/healthz") == (200, {"status": "up"})
    assert http_get(f"{gateway.url}/stats")[0] == 401
    assert http_get(f"{gateway.url}/stats", {"X-Stats-Key": "wrong"})[0] == 401
    status, body = http_get(f"{gateway.url}/stats", {"X-Stats-Key": STATS_KEY})
    assert status == 200 and {"rooms", "peers", "producers", "consumers"} <= set(body)


def stats(gateway: ForeignGateway) -> dict[str, int]:
    status, body = http_get(f"{gateway.url}/stats", {"X-Stats-Key": STATS_KEY})
    assert status == 200
    return dict(body)


async def test_dialect_publish_and_announce(gateway: ForeignGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [LISTEN_IP])
    room = f"room-{uuid.uuid4().hex[:8]}"
    speaker, listener = Client(gateway.url, token("alice", room)), Client(gateway.url, token("bob", room))
    track = AudioStreamTrack()
    send_transport: Any = None
    try:
        await speaker.connect()
        await listener.connect()
        # room_id on every request, checked against the token.
        assert await speaker.call("open_room", {}) == {"error": "room_id required"}
        assert await speaker.call("open_room", {"room_id": "elsewhere"}) == {
            "error": "room_id does not match token"}
        ref = (await speaker.call("open_room", {"room_id": room}))["room_ref"]
        assert (await listener.call("open_room", {"room_id": room}))["room_ref"] == ref  # one ref per room
        assert await speaker.call("enter", {"room_id": room, "room_ref": "nope", "peer_id": "alice"}) == {
            "error": "unknown room_ref"}
        assert "error" in await speaker.call("enter", {"room_id": room, "room_ref": ref, "peer_id": "bob"})
        entered = await speaker.call("enter", {"room_id": room, "room_ref": ref, "peer_id": "alice"})
        assert entered["present"] == [] and entered["router_caps"]["codecs"]
        bob = await listener.call("enter", {"room_id": room, "room_ref": ref, "peer_id": "bob"})
        assert bob["present"] == []

        # Publishing needs ask_to_speak first (the grant is checked before the payload).
        bob_send = await listener.call("make_transport", {"room_id": room, "role": "producer"})
        denied = await listener.call("publish", {"room_id": room, "transport_id": bob_send["transport_id"],
                                                 "kind": "audio", "rtp_parameters": {}, "app_data": {}})
        assert denied == {"error": "not allowed to publish: ask_to_speak first"}
        assert await speaker.call("ask_to_speak", {"room_id": room}) == "granted"
        assert "error" in await speaker.call("make_transport", {"room_id": room, "role": "send"})

        info = await speaker.call("make_transport", {"room_id": room, "role": "producer"})
        assert set(info) == {"transport_id", "ice", "dtls"}
        assert info["ice"]["parameters"]["usernameFragment"] and info["dtls"]["fingerprints"]
        assert {c["ip"] for c in info["ice"]["candidates"]} == {LISTEN_IP}

        # A real publish through pymediasoup: link_transport and publish are sent by its callbacks.
        device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[track]))
        await device.load(RtpCapabilities.model_validate(entered["router_caps"]))
        send_transport = device.createSendTransport(
            id=info["transport_id"], iceParameters=info["ice"]["parameters"],
            iceCandidates=info["ice"]["candidates"], dtlsParameters=info["dtls"], sctpParameters=None,
            iceServers=[])
        answers: dict[str, Any] = {}
        connected: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @send_transport.on("connect")
        async def on_connect(dtls_parameters: Any) -> None:
            answers["link"] = await speaker.call("link_transport", {
                "room_id": room, "transport_id": info["transport_id"],
                "dtls_parameters": dtls_parameters.model_dump(exclude_none=True)})

        @send_transport.on("produce")
        async def on_produce(kind: str, rtp_parameters: Any, app_data: Any) -> str:
            answers["publish"] = await speaker.call("publish", {
                "room_id": room, "transport_id": info["transport_id"], "kind": kind,
                "rtp_parameters": rtp_parameters.model_dump(exclude_none=True), "app_data": app_data or {}})
            return str(answers["publish"]["producer_id"])

        @send_transport.on("connectionstatechange")
        async def on_state(state: str) -> None:
            if state in ("connected", "failed") and not connected.done():
                connected.set_result(state)

        await send_transport.produce(track=track, stopTracks=False, appData={"source": "test"})
        assert answers["link"] == "linked"
        producer_id = answers["publish"]["producer_id"]
        announced = [{"producer_id": producer_id, "peer_id": "alice", "kind": "audio"}]
        assert await listener.next_change() == announced  # bare list, no type/appData
        assert await speaker.next_change() == announced  # the publisher hears it too
        assert await asyncio.wait_for(connected, 15) == "connected"  # ICE + DTLS over the announced IP

        # Subscribe: bare answer, no resume request in this dialect.
        listener_device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[]))
        await listener_device.load(RtpCapabilities.model_validate(entered["router_caps"]))
        recv = await listener.call("make_transport", {"room_id": room, "role": "consumer"})
        sub = await listener.call("subscribe", {
            "room_id": room, "transport_id": recv["transport_id"], "producer_id": producer_id,
            "rtp_capabilities": listener_device.rtpCapabilities.model_dump(exclude_none=True)})
        assert set(sub) == {"consumer_id", "producer_id", "kind", "rtp_parameters"}
        assert sub["producer_id"] == producer_id and sub["kind"] == "audio"
        with pytest.raises(socketio.exceptions.TimeoutError):  # unknown event: no handler, no answer
            await listener.call("resume", {"room_id": room, "consumer_id": sub["consumer_id"]}, timeout=1)
        assert {k: stats(gateway)[k] for k in ("peers", "producers", "consumers")} == {
            "peers": 2, "producers": 1, "consumers": 1}

        # Leaving closes the peer's producers (the others get the new list); the last leave closes the room.
        await send_transport.close()
        await speaker.sio.disconnect()
        assert await listener.next_change() == []
        await listener.sio.disconnect()
        deadline = time.monotonic() + 5
        while stats(gateway)["rooms"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stats(gateway) == {"rooms": 0, "peers": 0, "transports": 0, "producers": 0, "consumers": 0}
    finally:
        track.stop()
        if send_transport is not None:
            await send_transport.close()
        for client in (speaker, listener):
            if client.sio.connected:
                await client.sio.disconnect()
