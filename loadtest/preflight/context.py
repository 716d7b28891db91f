"""What every check of one audit shares: the config, the signaling profile and its callers' credentials,
one HTTP session, and the TLS policy (strict, or relaxed after the certificate check failed so the rest
can still be audited)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiohttp

from loadtest import resolve
from loadtest.credentials import Credentials, credentials_for
from loadtest.preflight.config import PreflightConfig
from loadtest.profile import SignalingProfile
from loadtest.profile_file import load_profile


def strict_context(config: PreflightConfig) -> ssl.SSLContext:
    """Verify the chain against the configured CA (or the system store) and the host name."""
    if config.insecure:
        return unverified_context()
    return ssl.create_default_context(cafile=config.ca_cert or None)


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def no_hostname_context(config: PreflightConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.ca_cert or None)
    ctx.check_hostname = False
    return ctx


@dataclass
class AuditContext:
    config: PreflightConfig
    profile: SignalingProfile
    session: aiohttp.ClientSession
    tls: ssl.SSLContext
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    # Why the TLS policy was relaxed for the checks after the certificate check ("" = strict).
    tls_relaxed: str = ""
    _health: asyncio.Task[tuple[int, Any, float]] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, config: PreflightConfig) -> AuditContext:
        # Certificates are chosen per request (`ssl_for`): the policy may change after the TLS check.
        # The profile and its credentials first: a bad profile or a missing secret stops the audit here,
        # naming the key, before anything is opened.
        profile = load_profile(config.profile)
        credentials = credentials_for(profile, config.auth_token)
        # The resolve overrides (a proxy routing by host name, reached on another address) apply.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout_s),
                                        connector=resolve.connector())
        return cls(config, profile, session, strict_context(config), credentials)

    def ssl_for(self, url: str) -> ssl.SSLContext | bool:
        return self.tls if urlparse(url).scheme in ("https", "wss") else False

    def relax(self, why: str, hostname_only: bool) -> None:
        self.tls = no_hostname_context(self.config) if hostname_only else unverified_context()
        self.tls_relaxed = why

    async def get(self, url: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, bytes]:
        """GET without following redirects; the response (closed) and up to 1 MB of its body."""
        async with self.session.get(url, allow_redirects=False, ssl=self.ssl_for(url), **kwargs) as resp:
            body = await read_body(resp.content, BODY_LIMIT)
        return resp, body

    async def close(self) -> None:
        await self.session.close()


BODY_LIMIT = 1 << 20  # bytes of a response body the checks look at


async def read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or `limit` bytes. One `read(n)` returns what has arrived so far, so a
    body sent in several pieces (a proxy relaying a chunked response) would be cut at the first."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
