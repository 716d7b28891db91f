"""The target a run measures: its URL and how to trust its TLS certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from loadtest.errors import RunFailed


@dataclass(frozen=True)
class Target:
    url: str
    ca_cert: str
    insecure: bool
    # Host-name overrides (loadtest/resolve.py; installed process-wide by run_command.resolved_target).
    resolve: tuple[tuple[str, str], ...] = ()
    traefik_api: str = ""  # the target's Traefik API, when known
    traefik_metrics: str = ""  # its Prometheus endpoint ("" = <traefik_api>/metrics)

    @property
    def proxy_metrics_url(self) -> str:
        """Where the run reads the proxy's counters before and after (Traefik; "" = not known)."""
        if self.traefik_metrics:
            return self.traefik_metrics
        return f"{self.traefik_api.rstrip('/')}/metrics" if self.traefik_api else ""


    def preflight_fields(self) -> dict[str, Any]:
        """PreflightConfig fields this target sets (the resolve overrides, Traefik's API)."""
        fields: dict[str, Any] = {"resolve": self.resolve} if self.resolve else {}
        return {**fields, "traefik_api": self.traefik_api} if self.traefik_api else fields


def given_target(config: Any) -> Target:
    """The target of a run config's [target] (a loadtest.config.TargetConfig), its resolve overrides
    installed for this process and its children (loadtest/resolve.py)."""
    from loadtest.resolve import install, parse

    pairs = parse(config.resolve)
    install(pairs)
    return Target(config.url, config.ca_cert, config.insecure, pairs, config.traefik_api,
                  config.traefik_metrics)


def stack_target(info: Any) -> Target:
    """The embedded reference stack (a sut.stack.StackInfo) as the run's target, its host names resolved
    to the stack's address."""
    from loadtest.resolve import install

    install(info.resolve)
    return Target(info.target_url, str(info.ca_cert), False, tuple(info.resolve), info.traefik_api)


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
