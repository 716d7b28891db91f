"""The target a run measures: its URL and how to trust its TLS certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from loadtest.errors import RunFailed


@dataclass(frozen=True)
class Target:
    url: str
    ca_cert: str
    insecure: bool


def ssl_context(target: Target) -> ssl.SSLContext | bool:
    """The client TLS context for an https target (False for plain http)."""
    if not target.url.startswith("https"):
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if target.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        if target.ca_cert:
            ctx.load_verify_locations(cafile=target.ca_cert)
        else:
            ctx.load_default_certs()
    except (ssl.SSLError, OSError) as exc:
        raise RunFailed(f"cannot load CA certificate {target.ca_cert}: {exc}") from None
    return ctx
