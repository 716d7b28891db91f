"""HTTP(S) to the reference stack's edge by host name, as a browser with curl's --resolve would: the URL's
host stays the SNI, certificate name and Host header, the connection goes to the stack's address
(StackInfo.resolve). Optionally with a cookie jar (Traefik's sticky cookie)."""

from __future__ import annotations

import http.client
import http.cookiejar
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sut.stack import StackInfo


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _connection(base: type[http.client.HTTPConnection], overrides: Mapping[str, str]) -> type[Any]:
    class Connection(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            address = overrides.get(str(self.host).lower(), self.host)
            sock = socket.create_connection((address, self.port), self.timeout)
            if isinstance(self, http.client.HTTPSConnection):
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
            self.sock = sock

    return Connection


class _Https(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, overrides: Mapping[str, str]) -> None:
        super().__init__(context=context)
        self._conn = _connection(http.client.HTTPSConnection, overrides)
        self._ctx = context

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._conn, req, context=self._ctx)


class _Http(urllib.request.HTTPHandler):
    def __init__(self, overrides: Mapping[str, str]) -> None:
        super().__init__()
        self._conn = _connection(http.client.HTTPConnection, overrides)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._conn, req)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class EdgeClient:
    """urllib with the stack's resolve overrides and CA; `cookies=True` keeps cookies across requests."""

    def __init__(self, info: StackInfo, cookies: bool = False, ca_cert: Path | None = None,
                 extra: Mapping[str, str] | None = None) -> None:
        overrides = {**dict(info.resolve), **(extra or {})}
        context = ssl.create_default_context(cafile=str(ca_cert or info.ca_cert))
        handlers: list[Any] = [_Https(context, overrides), _Http(overrides), _NoRedirect()]
        self.jar = http.cookiejar.CookieJar() if cookies else None
        if self.jar is not None:
            handlers.append(urllib.request.HTTPCookieProcessor(self.jar))
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, url: str, body: bytes | None = None, timeout: float = 10.0) -> Answer:
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return Answer(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx: an answer all the same
            return Answer(exc.code, dict(exc.headers.items()), exc.read())


def get(info: StackInfo, url: str, **kwargs: Any) -> Answer:
    return EdgeClient(info, **kwargs).request(url)
