"""The reference stack's TLS reverse proxy: Debian's nginx, configured entirely inside the state dir."""

from __future__ import annotations

import getpass
import os
import shutil
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


def render_config(
    state_dir: Path,
    certs: CertPaths,
    host: str,
    https_port: int,
    server_name: str,
    upstream_port: int,
    http_port: int = 0,
) -> str:
    """nginx.conf text: HTTPS on host:https_port, everything proxied to the gateway (with upgrade), a
    stand-in frontend page at / and stub_status at /nginx_status; with `http_port`, a plain-HTTP
    listener that redirects to HTTPS."""
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
        upstream=_socket_address(host, upstream_port),
        http_redirect_server=_http_redirect_server(host, http_port, https_port, server_name),
    )


def write_config(
    state_dir: Path,
    certs: CertPaths,
    host: str,
    https_port: int,
    server_name: str,
    upstream_port: int,
    http_port: int = 0,
) -> Path:
    for name in TEMP_DIRS:
        (state_dir / "nginx-temp" / name).mkdir(parents=True, exist_ok=True)
    path = state_dir / "nginx.conf"
    path.write_text(render_config(state_dir, certs, host, https_port, server_name, upstream_port, http_port))
    return path


def nginx_argv(state_dir: Path, conf: Path) -> list[str]:
    # -e: the error log used before the config is read (else the compiled-in default path is opened).
    return [nginx_binary(), "-p", str(state_dir), "-c", str(conf), "-e", str(state_dir / "nginx-error.log")]
