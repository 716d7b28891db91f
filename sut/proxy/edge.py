"""The reference stack's edge, whichever proxy runs it (`[proxy] kind`): what sut/stack.py asks of it.

* ``traefik`` (default): Traefik (sut/proxy/traefik.py) and the static page server behind www.<domain>;
  the target is ``https://webrtc.<domain>:<https_port>``, reached on [stack].host through the
  client's resolve overrides (`resolve`), and Traefik's API is at `api_url`.
* ``nginx``: Debian's nginx (sut/proxy/__init__.py), one server block for every host name; the target
  is ``https://localhost:<https_port>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sut import proxy as nginx
from sut.config import StackConfig
from sut.pki import CertPaths
from sut.proxy import traefik


@dataclass(frozen=True)
class EdgeProcess:
    name: str
    argv: list[str]
    health_url: str
    connect_to: str | None = None  # the health URL names a host that only the proxy's routes know


def is_traefik(config: StackConfig) -> bool:
    return config.proxy.kind == "traefik"


def check_binary(config: StackConfig) -> None:
    """Raises ProxyError / TraefikError naming the package when the proxy's binary is missing."""
    if is_traefik(config):
        traefik.binary()
    else:
        nginx.nginx_binary()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def target_url(config: StackConfig) -> str:
    if is_traefik(config):
        return traefik.target_url(config)
    # The certificate names server_name, localhost and the host IP; a custom server_name may not resolve,
    # so only "localhost" (always loopback) is used as a name.
    name = config.proxy.server_name if config.proxy.server_name == "localhost" else config.host
    return f"https://{_address(name, config.proxy.https_port)}"


def resolve(config: StackConfig) -> tuple[tuple[str, str], ...]:
    """Host name → address overrides a client needs to reach the target ((): it resolves)."""
    return traefik.resolve(config) if is_traefik(config) else ()


def api_url(config: StackConfig) -> str:
    """Traefik's API (also its dashboard and /metrics); "" for nginx."""
    return traefik.api_url(config) if is_traefik(config) else ""


def cert_names(config: StackConfig) -> list[str]:
    """Extra DNS names of the proxy's certificate: the domain and its wildcard (Traefik's routers)."""
    return [config.proxy.domain, f"*.{config.proxy.domain}"] if is_traefik(config) else []


def extra_ports(config: StackConfig) -> list[tuple[str, int]]:
    """Ports the edge listens on besides https_port/http_port (checked free before starting)."""
    if not is_traefik(config):
        return []
    return [("proxy.api_port", config.proxy.api_port), ("proxy.www_port", config.proxy.www_port)]


def write_config(config: StackConfig, state_dir: Path, certs: CertPaths) -> None:
    if is_traefik(config):
        traefik.write_config(config, state_dir, certs)
        return
    replica_ports = [config.gateway.replica_port(i) for i in range(config.gateway.replicas)]
    p = config.proxy
    nginx.write_config(state_dir, certs, config.host, p.https_port, p.server_name, replica_ports, p.http_port)


def processes(config: StackConfig, state_dir: Path) -> list[EdgeProcess]:
    """In start order; each is healthy once its health URL answers (the proxy's: through its route)."""
    if is_traefik(config):
        return [
            EdgeProcess("www", traefik.www_argv(config, state_dir), traefik.www_health_url(config)),
            EdgeProcess("proxy", traefik.argv(state_dir), traefik.health_url(config), config.host),
        ]
    health = f"https://{_address(config.host, config.proxy.https_port)}/health"
    return [EdgeProcess("proxy", nginx.nginx_argv(state_dir, state_dir / "nginx.conf"), health)]
