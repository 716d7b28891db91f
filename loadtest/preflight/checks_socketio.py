"""The gateway's Socket.IO face through the proxy: the Engine.IO polling handshake and the WebSocket
upgrade, then the namespace connect, all with the profile's handshake (path, namespace, headers, query,
auth and one caller's token, as a caller sends them). A refusal shows the server's own text and the
profile key that would fix it; a server that drops the connection is reported as such; a silent one is
reported before the check's own timeout."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadtest.credentials import redact
from loadtest.preflight.context import AuditContext
from loadtest.preflight.model import CheckFailed, Verdict, body_text, short
from loadtest.profile import ProfileError
from loadtest.profile_hints import handshake_hint
from loadtest.session import Party, session_variables
from loadtest.signaling import SignalingChannel, server_text


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


@dataclass(frozen=True)
class Handshake:
    """One caller's handshake as the profile fills it (secrets kept for redaction, never shown)."""

    query: str  # the profile's query parameters, urlencoded ("" = none)
    headers: dict[str, str]
    auth: dict[str, Any]
    secrets: tuple[str, ...]


def profile_handshake(ctx: AuditContext) -> Handshake:
    c = ctx.config
    party = Party(f"preflight-http-{uuid.uuid4().hex[:8]}", "listener", 0, c.source_language,
                  c.target_language)
    try:
        variables = session_variables(party, ctx.credentials)
        url, headers, auth = SignalingChannel(c.target_url, ctx.profile, False, c.timeout_s,
                                              variables).handshake()
    except ProfileError as exc:
        raise CheckFailed(f"the profile's handshake cannot be built: {exc}",
                          "fix the profile key named") from None
    token = str(variables.get("token") or "")
    return Handshake(url.partition("?")[2], headers, auth,
                     (*ctx.credentials.secrets(), *((token,) if token else ())))


def _engineio_url(ctx: AuditContext, hs: Handshake, transport: str, sid: str = "") -> str:
    path = ctx.profile.socketio.path.strip("/")
    url = ctx.config.url(f"/{path}/?EIO=4&transport={transport}")
    url += f"&{hs.query}" if hs.query else ""
    return f"{url}&sid={sid}" if sid else url


def _refused(what: str, text: str, ctx: AuditContext, hs: Handshake) -> CheckFailed:
    """A refusal in the server's words, with the profile key that would fix it."""
    clean = str(redact(text, hs.secrets))
    hint = handshake_hint(clean, ctx.profile)
    return CheckFailed(f"{what}: {clean}", f"{hint.key}: {hint.text}")


async def _open_polling(ctx: AuditContext, hs: Handshake) -> tuple[dict[str, Any], int]:
    path = f"/{ctx.profile.socketio.path.strip('/')}/"
    try:
        resp, body = await ctx.get(_engineio_url(ctx, hs, "polling"), headers=hs.headers)
    except aiohttp.ServerDisconnectedError:
        raise CheckFailed(f"the server dropped the connection without answering the handshake at {path}",
                          "the gateway (or the proxy in front) closes Socket.IO requests: check its "
                          "logs") from None
    text = body.decode("utf-8", "replace")
    if resp.status != 200:
        raise _refused(f"HTTP {resp.status} from {path}", f"HTTP {resp.status}: {body_text(body)}", ctx, hs)
    if not text.startswith("0"):
        raise CheckFailed(f"HTTP {resp.status}: no Engine.IO open packet at {path} ({short(text, 80)!r})",
                          f"the proxy must route {path} to the gateway (socketio.path)")
    return json.loads(text[1:]), resp.status


async def check_socketio_polling(ctx: AuditContext) -> Verdict:
    t0 = time.monotonic()
    handshake, status = await _open_polling(ctx, profile_handshake(ctx))
    upgrades = handshake.get("upgrades", [])
    line = (f"{status} open packet · sid {str(handshake.get('sid'))[:8]}… · upgrades {upgrades} · "
            f"ping {handshake.get('pingInterval')} ms · {_ms(t0):.0f} ms")
    if "websocket" not in upgrades:
        return Verdict("warn", line + " — WebSocket upgrade not offered", "enable the websocket transport")
    return Verdict("ok", line, "", {"handshake": handshake})


class _Frames:
    """Text frames of one WebSocket, each within the check's remaining budget; a close or an error
    becomes a failure that says so."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, deadline: float) -> None:
        self.ws, self.deadline = ws, deadline

    async def next(self, waiting_for: str) -> str:
        remaining = self.deadline - time.monotonic()
        try:
            msg = await self.ws.receive(timeout=max(0.05, remaining))
        except TimeoutError:
            raise CheckFailed(f"no answer to {waiting_for} within {max(0.0, remaining):.1f} s") from None
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise CheckFailed(f"the server closed the WebSocket (code {self.ws.close_code}) instead of "
                              f"answering {waiting_for}", "the gateway drops this client: check its logs")
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise CheckFailed(f"WebSocket error while waiting for {waiting_for}: {self.ws.exception()}")
        return repr(msg.data)


def _connect_packet(namespace: str, auth: dict[str, Any]) -> str:
    prefix = "40" if namespace == "/" else f"40{namespace},"
    return prefix + (json.dumps(auth) if auth else "")


def _refusal_text(answer: str, namespace: str) -> str:
    """The payload of a CONNECT_ERROR packet ("44/ns,{...}") as the server's text."""
    payload = answer[2:]
    if namespace != "/" and payload.startswith(f"{namespace},"):
        payload = payload[len(namespace) + 1:]
    try:
        return server_text(json.loads(payload))
    except ValueError:
        return short(payload, 160) or "(no reason given)"


async def check_socketio_websocket(ctx: AuditContext) -> Verdict:
    t0 = time.monotonic()
    # Inside the check's own timeout, so a silent server is reported as such, not as the check timing out.
    deadline = t0 + max(ctx.config.timeout_s * 0.5, ctx.config.timeout_s - 0.5)
    hs = profile_handshake(ctx)
    handshake, _ = await _open_polling(ctx, hs)
    url = _engineio_url(ctx, hs, "websocket", str(handshake["sid"]))
    url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    namespace = ctx.profile.socketio.namespace
    try:
        ws_cm = ctx.session.ws_connect(url, ssl=ctx.ssl_for(url), autoping=False, headers=hs.headers)
        async with ws_cm as ws:
            frames = _Frames(ws, deadline)
            status = ws._response.status if ws._response is not None else 101
            await ws.send_str("2probe")
            probe = await frames.next("the upgrade probe")
            if probe != "3probe":
                raise CheckFailed(f"upgraded ({status}) but the probe was answered {probe!r}")
            await ws.send_str("5")  # upgrade complete
            await ws.send_str(_connect_packet(namespace, hs.auth))
            answer = ""
            for _ in range(5):  # skip noops/pings; the connect answer comes within a few frames
                answer = await frames.next(f"the connect to namespace {namespace}")
                if answer.startswith(("40", "44")):
                    break
            if answer.startswith("44"):
                raise _refused(f"namespace {namespace} refused the connection",
                               _refusal_text(answer, namespace), ctx, hs)
            if not answer.startswith("40"):
                raise CheckFailed(f"WebSocket upgraded, namespace {namespace} did not answer its connect "
                                  f"({short(answer, 120)})")
    except aiohttp.WSServerHandshakeError as exc:
        raise _refused("WebSocket upgrade refused", f"HTTP {exc.status} {exc.message}", ctx, hs) from None
    except aiohttp.ServerDisconnectedError:
        raise CheckFailed("the server dropped the connection during the WebSocket upgrade",
                          "the proxy must pass WebSocket upgrades (Upgrade/Connection headers)") from None
    return Verdict("ok", f"{status} upgrade · probe answered · namespace {namespace} connected with the "
                         f"profile's handshake · {_ms(t0):.0f} ms")
