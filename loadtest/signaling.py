"""One Socket.IO signaling channel to the gateway, speaking the dialect of a SignalingProfile.

Every failure names what failed and carries the server's own words: a refused handshake shows the
server's `connect_error` payload, a refused request the answer's error text, and a connection the server
drops fails every request still waiting at once ("disconnected by server after …") instead of letting
each run into its own timeout.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import socketio

from loadtest import resolve
from loadtest.errors import RunError
from loadtest.profile import MissingField, SignalingProfile, fill, lookup

# The largest WebSocket message taken from a server (aiohttp's default is 4 MiB, above which it drops the
# connection): a bound on memory, and room for a misbehaving server's big message to be counted, not fatal.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class SignalingError(RunError):
    """The gateway could not be reached or refused a request; the message says which and why."""


class TargetUnreachable(SignalingError):
    pass


class TlsUntrusted(SignalingError):
    pass


class ConnectionRefused(SignalingError):
    """The server answered the handshake and said no (its reason is in the message)."""


class Disconnected(SignalingError):
    """The server dropped the connection."""


def describe_connect_failure(url: str, exc: BaseException) -> SignalingError:
    if isinstance(exc, SignalingError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TlsUntrusted(f"TLS certificate of {url} is not trusted: {_short(str(exc.certificate_error))}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return TargetUnreachable(f"cannot reach target {url}: {exc.host}:{exc.port}: {reason}")
    text = " ".join(str(a) for a in getattr(exc, "args", ()) if a) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text or "certificate" in text:
        return TlsUntrusted(f"TLS certificate of {url} is not trusted: {_short(text)}")
    return TargetUnreachable(f"cannot reach target {url}: {_short(text)}")


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def server_text(value: Any) -> str:
    """A server's error payload as one short line: its message when it has one, else the JSON."""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        extra = {k: v for k, v in value.items() if k != "message"}
        return _short(value["message"] + (f" {json.dumps(extra, default=str)}" if extra else ""))
    if isinstance(value, str):
        return _short(value)
    return _short(json.dumps(value, default=str))


class SignalingChannel:
    def __init__(
        self,
        url: str,
        profile: SignalingProfile,
        ssl_context: ssl.SSLContext | bool,
        request_timeout_s: float,
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.profile = profile
        self._ssl = ssl_context
        self._timeout = request_timeout_s
        self._variables = dict(variables or {})
        self._session: aiohttp.ClientSession | None = None
        self._sio: socketio.AsyncClient | None = None
        self._refusal: Any = None
        self._lost = asyncio.Event()
        self._closing = False
        self._connected_at: float | None = None
        self.disconnect_reason: str | None = None
        self._on_lost: list[Callable[[str], None]] = []

    # ---- handshake -----------------------------------------------------------------------------

    def handshake(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(URL with the profile's query parameters, headers, auth payload), filled for this peer."""
        sio = self.profile.socketio
        v = self.profile.mapped(self._variables)
        query = fill(sio.query, v, "socketio.query")
        headers = fill(sio.headers, v, "socketio.headers")
        auth = fill(sio.auth, v, "socketio.auth")
        token = v.get("token")
        if token and not self.profile.uses_placeholder("token"):
            auth = {**auth, "token": token}  # the original convention: the token in the handshake's auth
        url = self.url
        if query:
            url += ("&" if "?" in url else "?") + urlencode({k: str(x) for k, x in query.items()})
        return url, {k: str(x) for k, x in headers.items()}, auth

    async def connect(self, timeout_s: float) -> None:
        url, headers, auth = self.handshake()
        # The host-name overrides (--resolve) apply; the session's cookie jar keeps a proxy's sticky
        # cookie for every request of this channel (long-polling needs it behind several replicas), for
        # a target named by its IP address too (aiohttp's default jar drops those: unsafe=True).
        self._session = aiohttp.ClientSession(connector=resolve.connector(self._ssl),
                                              cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._sio = socketio.AsyncClient(
            reconnection=False, http_session=self._session, ssl_verify=self._ssl is not False,
            websocket_extra_options={"max_msg_size": MAX_MESSAGE_BYTES},
            handle_sigint=False,  # SIGINT is the run's (loadtest/stopping.py), not a reason to disconnect
        )
        namespace = self.profile.socketio.namespace
        self._sio.on("connect_error", self._on_connect_error, namespace=namespace)
        self._sio.on("disconnect", self._on_disconnect, namespace=namespace)
        try:
            await asyncio.wait_for(
                self._sio.connect(
                    url, headers=headers, socketio_path=self.profile.socketio.path,
                    transports=list(self.profile.socketio.transports), namespaces=[namespace],
                    auth=auth or None, wait_timeout=timeout_s,
                ),
                timeout_s + 1,
            )
        except (socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # python-socketio reduces every failure to "Connection error": the server's connect_error
            # payload, or one plain request, says why.
            cause: BaseException = exc
            if self._refusal is not None:
                cause = ConnectionRefused(
                    f"gateway {self.url} refused the connection: {server_text(self._refusal)}")
            else:
                cause = await self._diagnose(url, headers, timeout_s) or exc
            await self.close()
            raise describe_connect_failure(self.url, cause) from None
        self._connected_at = time.monotonic()

    def _on_connect_error(self, data: Any = None, *_more: Any) -> None:
        # python-socketio reports its own Engine.IO failures ("Connection error": nothing answered) as a
        # connect_error too; only what the server sent is a refusal (else _diagnose finds the cause).
        if isinstance(data, str) and self._sio is not None and self._sio.eio.state != "connected":
            return
        self._refusal = data if data is not None else "(no reason given)"

    def _on_disconnect(self, *reason: Any) -> None:
        if self._closing or self._lost.is_set():
            return
        held = time.monotonic() - self._connected_at if self._connected_at is not None else 0.0
        why = f" ({reason[0]})" if reason and reason[0] not in (None, "") else ""
        self.disconnect_reason = f"disconnected by server after {held:.1f} s{why}"
        self._lost.set()
        for callback in self._on_lost:
            callback(self.disconnect_reason)

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` once if the server drops the connection (not on our own close)."""
        self._on_lost.append(callback)

    async def _diagnose(self, url: str, headers: dict[str, str], timeout_s: float) -> BaseException | None:
        if self._session is None:
            return None
        base, _, query = url.partition("?")
        path = self.profile.socketio.path.strip("/")
        probe = f"{base.rstrip('/')}/{path}/?" + (f"{query}&" if query else "") + "EIO=4&transport=polling"
        try:
            async with self._session.get(probe, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status >= 400:
                    body = _short(await resp.text(errors="replace"), 160)
                    where = f"HTTP {resp.status} from {base.rstrip('/')}/{path}/"
                    return ConnectionRefused(f"gateway {self.url} refused the connection: {where}"
                                             + (f": {body}" if body else ""))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return exc
        return None

    # ---- events and requests -------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        assert self._sio is not None
        self._sio.on(event, handler, namespace=self.profile.socketio.namespace)

    async def request(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Send the profile's request `name` filled from `variables`; its response fields, resolved."""
        assert self._sio is not None
        spec = self.profile.requests[name]
        payload = spec.build(self.profile.mapped(variables))
        label = f"request '{name}' (event '{spec.event}')"
        if self._lost.is_set():
            raise Disconnected(f"{label} not sent: {self.disconnect_reason}")
        timeout = spec.timeout_s or self._timeout
        namespace = self.profile.socketio.namespace
        call = asyncio.ensure_future(
            self._sio.call(spec.event, payload, namespace=namespace, timeout=timeout))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({call, lost}, timeout=timeout + 1,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if call not in done:
            call.cancel()
            if self._lost.is_set():
                raise Disconnected(f"{label} failed: {self.disconnect_reason}")
            raise SignalingError(f"{label} got no answer within {timeout:g} s")
        try:
            answer = call.result()
        except socketio.exceptions.TimeoutError:
            raise SignalingError(f"{label} got no answer within {timeout:g} s "
                                 f"(set requests.{name}.timeout_s if the gateway is slow)") from None
        except socketio.exceptions.SocketIOError as exc:
            raise SignalingError(f"{label} failed: {exc}") from None
        data = self.unwrap(name, answer)
        try:
            return spec.parse(data)
        except MissingField as exc:
            raise SignalingError(f"{label}: the answer lacks '{exc.args[0]}' "
                                 f"(requests.{name}.response): {server_text(data)}") from None

    def unwrap(self, name: str, answer: Any) -> Any:
        """The data of an answer, or SignalingError with the server's text when the answer is a refusal."""
        spec = self.profile.requests[name]
        ack = self.profile.ack
        label = f"request '{name}' (event '{spec.event}')"
        if isinstance(answer, tuple):
            # Node-style acks, callback(error, data): a non-null first argument is the error.
            if len(answer) == 2 and answer[0] is not None:
                raise SignalingError(f"{label} refused by the gateway: {server_text(answer[0])}")
            answer = answer[-1] if answer else None
        if ack.ok_path:
            if not isinstance(answer, dict):
                raise SignalingError(f"{label} answered {server_text(answer)}, expected an object with "
                                     f"'{ack.ok_path}' (ack.ok_path)")
            if not answer.get(ack.ok_path):
                reason = answer.get(ack.error_path) if ack.error_path else None
                reason = reason if reason is not None else "no reason given"
                raise SignalingError(f"{label} refused by the gateway: {server_text(reason)}")
            return _data(answer, ack.data_path, label)
        if isinstance(answer, dict) and ack.error_path:
            try:
                reason = lookup(answer, ack.error_path)
            except MissingField:
                reason = None
            if reason:
                raise SignalingError(f"{label} refused by the gateway: {server_text(reason)}")
        if isinstance(answer, str):
            if spec.expect is not None and answer != spec.expect:
                raise SignalingError(f"{label} answered {answer!r}, expected {spec.expect!r} "
                                     f"(requests.{name}.expect)")
            if spec.response:
                raise SignalingError(f"{label} answered the plain string {answer!r}, expected an object "
                                     f"with {sorted(spec.response.values())} (requests.{name}.response)")
            return answer
        return _data(answer, ack.data_path, label)

    async def close(self) -> None:
        self._closing = True
        if self._sio is not None and self._sio.connected:
            try:
                await asyncio.wait_for(self._sio.disconnect(), 5)
            except (TimeoutError, OSError):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def lost(self) -> bool:
        return self._lost.is_set()


def _data(answer: Any, path: str, label: str) -> Any:
    """The answer's data at `path`; an answer without it (e.g. {ok: true} alone) carries no data."""
    if not path:
        return answer if answer is not None else {}
    try:
        return lookup(answer, path)
    except MissingField:
        return {}

