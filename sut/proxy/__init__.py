"""The reference stack's TLS reverse proxy with `[proxy] kind = "nginx"`: Debian's nginx, configured entirely
inside the state dir. The default edge is Traefik (sut/proxy/traefik.py; both behind sut/proxy/edge.py)."""

from __future__ import annotations

import getpass
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from string import Template

from sut.pki import CertPaths

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class ProxyError(RuntimeError):
    """The proxy cannot be configured or started; the message says why."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise ProxyError("nginx not found (install Debian's nginx-light: run scripts/setup.sh)")
    return found


def _socket_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _http_redirect_server(host: str, http_port: int, https_port: int, server_name: str) -> str:
    if not http_port:
        return ""
    # Plain HTTP answers nothing but a permanent redirect to the same host on the HTTPS port.
    return (
        "\n    server {\n"
        f"        listen {_socket_address(host, http_port)};\n"
        f"        server_name {server_name};\n"
        f"        return 301 https://$host:{https_port}$request_uri;\n"
        "    }\n"
    )


def session_id_prefix(replica: int) -> str:
    """What gateway replica i puts in front of its Engine.IO session ids ('.' is not in the base64url
    alphabet of the random part, so the prefix cannot be mistaken)."""
    return f"r{replica}."


def _upstreams(host: str, ports: Sequence[int]) -> tuple[str, str]:
    """(upstream blocks, proxy_pass target). One replica: one upstream, as it always was. Several: new
    connections round robin over all of them, but a request naming an Engine.IO session (`sid`, as
    every polling request after the handshake and the upgrade to WebSocket do) goes to the replica
    whose prefix the id carries: the only one that knows the session."""
    servers = "".join(f"        server {_socket_address(host, port)};\n" for port in ports)
    every = f"    upstream gateway {{\n{servers}        keepalive 32;\n    }}\n"
    if len(ports) == 1:
        return every, "gateway"
    pinned = "".join(
        f"    upstream gateway_r{i} {{\n        server {_socket_address(host, port)};\n"
        "        keepalive 8;\n    }\n"
        for i, port in enumerate(ports))
    routes = "".join(
        f"        ~^{re.escape(session_id_prefix(i))} gateway_r{i};\n" for i in range(len(ports)))
    route_map = (
        "    # Replicas: new connections go round robin; a request naming an Engine.IO session (sid=r<i>.…)\n"
        "    # goes to replica i, the only one that knows the session (long-polling clients need that).\n"
        f"    map $arg_sid $gateway_route {{\n        default gateway;\n{routes}    }}\n")
    return every + pinned + route_map, "$gateway_route"


def render_config(
    state_dir: Path,
    certs: CertPaths,
    host: str,
    https_port: int,
    server_name: str,
    upstream_ports: int | Sequence[int],
    http_port: int = 0,
) -> str:
    """nginx.conf text: HTTPS on host:https_port, everything proxied to the gateway replicas (with
    upgrade), a stand-in frontend page at / and stub_status at /nginx_status; with `http_port`, a
    plain-HTTP listener that redirects to HTTPS."""
    ports = [upstream_ports] if isinstance(upstream_ports, int) else list(upstream_ports)
    upstreams, target = _upstreams(host, ports)
    # As root, nginx would drop its workers to `nobody`, which could not write our temp dirs: keep the
    # user we run as (the whole stack runs as one user anyway).
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    return Template(TEMPLATE.read_text()).substitute(
        user_directive=user,
        state_dir=str(state_dir),
        listen=_socket_address(host, https_port),
        server_name=server_name,
        server_cert=str(certs.server_cert),
        server_key=str(certs.server_key),
        upstreams=upstreams,
        proxy_target=target,
        http_redirect_server=_http_redirect_server(host, http_port, https_port, server_name),
    )


def write_config(
    state_dir: Path,
    certs: CertPaths,
    host: str,
    https_port: int,
    server_name: str,
    upstream_ports: int | Sequence[int],
    http_port: int = 0,
) -> Path:
    for name in TEMP_DIRS:
        (state_dir / "nginx-temp" / name).mkdir(parents=True, exist_ok=True)
    path = state_dir / "nginx.conf"
    path.write_text(render_config(state_dir, certs, host, https_port, server_name, upstream_ports, http_port))
    return path


def nginx_argv(state_dir: Path, conf: Path) -> list[str]:
    # -e: the error log used before the config is read (else the compiled-in default path is opened).
    return [nginx_binary(), "-p", str(state_dir), "-c", str(conf), "-e", str(state_dir / "nginx-error.log")]
