"""One Socket.IO signaling channel to the gateway, speaking the dialect of a SignalingProfile."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from loadtest.errors import RunError
from loadtest.profile import MissingField, SignalingProfile


class SignalingError(RunError):
    """The gateway could not be reached or refused a request; the message says which and why."""


class TargetUnreachable(SignalingError):
    pass


class TlsUntrusted(SignalingError):
    pass


def describe_connect_failure(url: str, exc: BaseException) -> SignalingError:
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


class SignalingChannel:
    def __init__(
        self,
        url: str,
        profile: SignalingProfile,
        ssl_context: ssl.SSLContext | bool,
        request_timeout_s: float,
        auth: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.profile = profile
        self._ssl = ssl_context
        self._timeout = request_timeout_s
        self._auth = {**profile.auth, **(auth or {})}
        self._session: aiohttp.ClientSession | None = None
        self._sio: socketio.AsyncClient | None = None

    async def connect(self, timeout_s: float) -> None:
        connector = aiohttp.TCPConnector(ssl=self._ssl)
        self._session = aiohttp.ClientSession(connector=connector)
        self._sio = socketio.AsyncClient(
            reconnection=False, http_session=self._session, ssl_verify=self._ssl is not False
        )
        try:
            await asyncio.wait_for(
                self._sio.connect(
                    self.url,
                    socketio_path=self.profile.socketio_path,
                    transports=list(self.profile.transports),
                    namespaces=[self.profile.namespace],
                    auth=self._auth or None,
                    wait_timeout=timeout_s,
                ),
                timeout_s + 1,
            )
        except (socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # python-socketio reduces every failure to "Connection error"; one plain request says why.
            cause = await self._diagnose(timeout_s) or exc
            await self.close()
            raise describe_connect_failure(self.url, cause) from None

    async def _diagnose(self, timeout_s: float) -> BaseException | None:
        if self._session is None:
            return None
        probe = f"{self.url.rstrip('/')}/{self.profile.socketio_path.strip('/')}/?EIO=4&transport=polling"
        try:
            async with self._session.get(probe, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status >= 400:
                    return SignalingError(f"HTTP {resp.status} from {probe}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return exc
        return None

    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        assert self._sio is not None
        self._sio.on(event, handler, namespace=self.profile.namespace)

    async def request(self, name: str, **variables: Any) -> dict[str, Any]:
        """Send a profile request and return its response fields (dotted paths resolved)."""
        assert self._sio is not None
        spec = self.profile.requests[name]
        payload = spec.build(variables)
        try:
            answer = await self._sio.call(spec.event, payload, namespace=self.profile.namespace,
                                          timeout=self._timeout)
        except socketio.exceptions.TimeoutError:
            raise SignalingError(f"'{spec.event}' got no answer within {self._timeout:.0f} s") from None
        except socketio.exceptions.SocketIOError as exc:
            raise SignalingError(f"'{spec.event}' failed: {exc}") from None
        data = self._unwrap(spec.event, answer)
        try:
            return spec.parse(data)
        except MissingField as exc:
            raise SignalingError(f"'{spec.event}' answer lacks '{exc.args[0]}'") from None

    def _unwrap(self, event: str, answer: Any) -> Any:
        ack = self.profile.ack
        if not ack.ok_path:
            return answer
        if not isinstance(answer, dict):
            raise SignalingError(f"'{event}' answered {type(answer).__name__}, expected an object")
        if not answer.get(ack.ok_path):
            reason = answer.get(ack.error_path, "no reason given")
            raise SignalingError(f"gateway refused '{event}': {reason}")
        return answer.get(ack.data_path, {}) if ack.data_path else answer

    async def close(self) -> None:
        if self._sio is not None and self._sio.connected:
            try:
                await asyncio.wait_for(self._sio.disconnect(), 5)
            except (TimeoutError, OSError):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None
