"""Host-name overrides, curl's ``--resolve`` for the whole tester: connect to a chosen address while the
URL, the TLS SNI, certificate check and Host header keep the name.

A proxy that routes by host name (Traefik's ``Host(`webrtc.example.com`)``) answers 404 to any other
name, so a test deployment reached on 127.0.0.1 must still be asked for ``webrtc.example.com``. The
reference stack's target, ``https://webrtc.speechload.test:8443``, is reached that way: its
``StackInfo.resolve`` maps the name to ``[stack].host``.

Overrides are process-wide, a hosts file of this process and its children: `install` records
them in the environment variable SPEECHLOAD_RESOLVE (``host:ip,host:ip``), which locust's child
processes inherit. Every HTTP/WebSocket session the tester opens takes its connector from
`connector()`; raw TLS connections take their address from `address()`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

ENV = "SPEECHLOAD_RESOLVE"
Pairs = tuple[tuple[str, str], ...]


class ResolveError(ValueError):
    """A ``host:ip`` override is malformed; the message shows it."""


def parse_one(item: str) -> tuple[str, str]:
    """``host:ip`` (curl's ``host:port:ip`` is accepted, the port ignored) → (host, ip)."""
    host, sep, rest = item.strip().partition(":")
    if not sep or not host or not rest:
        raise ResolveError(f"expected host:ip, got {item!r}")
    head, _, tail = rest.partition(":")
    if head.isdigit() and tail:  # curl's host:port:address
        rest = tail
    address = rest.strip("[]")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ResolveError(f"{item!r}: {address!r} is not an IP address") from None
    return host.lower().rstrip("."), address


def parse(items: Iterable[str] | Mapping[str, str] | None) -> Pairs:
    """Overrides from ``["host:ip", ...]``, ``"host:ip,host:ip"`` items or a ``{host: ip}`` table."""
    if not items:
        return ()
    if isinstance(items, Mapping):
        return tuple(parse_one(f"{host}:{ip}") for host, ip in items.items())
    pairs: list[tuple[str, str]] = []
    for item in items:
        pairs += [parse_one(part) for part in str(item).split(",") if part.strip()]
    return tuple(pairs)


def as_flags(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The ``host:ip`` strings of `pairs` (what ``--resolve`` takes)."""
    return [f"{host}:{ip}" for host, ip in pairs]


def current() -> dict[str, str]:
    """The process's overrides (read from the environment each time: a child inherits them)."""
    try:
        return dict(parse(os.environ.get(ENV, "").split(",")))
    except ResolveError:
        return {}


def install(pairs: Iterable[tuple[str, str]]) -> None:
    """Add `pairs` to the process's overrides (and so to every child process started after)."""
    merged = current()
    merged.update({host.lower().rstrip("."): ip for host, ip in pairs})
    if merged:
        os.environ[ENV] = ",".join(as_flags(merged.items()))


def address(host: str) -> str:
    """Where a connection to `host` goes: its override, else the name itself (resolved as usual)."""
    return current().get(host.lower().rstrip("."), host)


class StaticResolver(AbstractResolver):
    """aiohttp resolver: the overrides first, the system's resolver for every other name."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self._overrides = dict(overrides)
        self._fallback: AbstractResolver | None = None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        ip = self._overrides.get(host.lower().rstrip("."))
        if ip is None:
            if self._fallback is None:
                self._fallback = aiohttp.ThreadedResolver()
            return await self._fallback.resolve(host, port, family)
        ip_family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        return [ResolveResult(hostname=host, host=ip, port=port, family=ip_family, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        if self._fallback is not None:
            await self._fallback.close()


def connector(ssl: Any = True, **kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector that honours the overrides (aiohttp's default resolver when there are none)."""
    overrides = current()
    if overrides:
        kwargs["resolver"] = StaticResolver(overrides)
    return aiohttp.TCPConnector(ssl=ssl, **kwargs)
