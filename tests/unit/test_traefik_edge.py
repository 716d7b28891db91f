"""The Traefik edge without processes: the stack's generated Traefik config, the tester's resolve overrides,
the preflight's reading of Traefik's routers, and Traefik's counters in the report."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from loadtest import resolve
from loadtest.config import ConfigError, load_run_config
from loadtest.preflight.checks_traefik import TraefikState, gateway_router, judge_router, matches
from loadtest.preflight.config import PreflightConfigError, parse_config
from loadtest.preflight.model import Verdict
from loadtest.proxywatch import parse, summarise
from loadtest.report.proxy import proxy_section, proxy_summary
from sut.config import StackConfigError, load_stack_config
from sut.pki import CertPaths
from sut.proxy import edge, traefik

pytestmark = pytest.mark.unit

CERTS = CertPaths(Path("/s/ca.pem"), Path("/s/ca.key"), Path("/s/server.pem"), Path("/s/server.key"))


# --------------------------------------------------------------------------- the stack's Traefik config

def test_dynamic_config_routes_by_host_with_health_checks_and_a_sticky_cookie() -> None:
    config = load_stack_config("replicas").with_port_offset(5)
    doc = traefik.dynamic_config(config, CERTS)["http"]
    routers = doc["routers"]
    assert {n: r["rule"] for n, r in routers.items()} == {
        "gateway": "Host(`webrtc.speechload.test`)", "www": "Host(`www.speechload.test`)",
        "grafana": "Host(`grafana.speechload.test`)"}
    assert all(r["entryPoints"] == ["websecure"] and r["tls"] == {} for r in routers.values())
    lb = doc["services"]["gateway"]["loadBalancer"]
    assert [s["url"] for s in lb["servers"]] == ["http://127.0.0.1:3005", "http://127.0.0.1:3006"]
    assert lb["healthCheck"]["path"] == "/health" and lb["sticky"]["cookie"]["name"] == traefik.STICKY_COOKIE
    assert routers["grafana"]["service"] == "www"  # no Prometheus: the placeholder page
    assert doc["middlewares"]["grafana-placeholder"] == {"addPrefix": {"prefix": "/grafana"}}
    observed = replace(config, prometheus=replace(config.prometheus, enabled=True))
    doc = traefik.dynamic_config(observed, CERTS)["http"]
    assert doc["services"]["grafana"]["loadBalancer"]["servers"] == [{"url": "http://127.0.0.1:9195"}]


def test_static_config_entrypoints_api_metrics_and_the_redirect(tmp_path: Path) -> None:
    config = load_stack_config("default")
    doc = traefik.static_config(config, tmp_path)
    eps = doc["entryPoints"]
    assert eps["websecure"]["address"] == "127.0.0.1:8443" and eps["traefik"]["address"] == "127.0.0.1:7480"
    assert eps["web"]["http"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https",
                                                                "permanent": True}
    assert eps["websecure"]["transport"]["respondingTimeouts"]["readTimeout"] == "0s"  # long WebSockets
    assert doc["metrics"]["prometheus"]["addRoutersLabels"] is True and doc["api"]["insecure"] is True
    assert doc["accessLog"]["filePath"] == str(tmp_path / "traefik-access.log")
    no_http = replace(config, proxy=replace(config.proxy, http_port=0))
    assert "web" not in traefik.static_config(no_http, tmp_path)["entryPoints"]


def test_edge_target_resolve_and_ports_per_kind() -> None:
    config = load_stack_config("default").with_port_offset(10)
    assert edge.target_url(config) == "https://webrtc.speechload.test:8453"
    assert dict(edge.resolve(config))["webrtc.speechload.test"] == "127.0.0.1"
    assert edge.extra_ports(config) == [("proxy.api_port", 7490), ("proxy.www_port", 7190)]
    assert edge.cert_names(config) == ["speechload.test", "*.speechload.test"]
    nginx = replace(config, proxy=replace(config.proxy, kind="nginx"))
    assert edge.target_url(nginx) == "https://localhost:8453"
    assert (edge.resolve(nginx), edge.api_url(nginx), edge.extra_ports(nginx)) == ((), "", [])


def test_unknown_proxy_kind_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[proxy]\nkind = "haproxy"\n')
    with pytest.raises(StackConfigError, match="'proxy.kind' must be one of"):
        load_stack_config(path)


# --------------------------------------------------------------------------- resolve overrides

def test_resolve_parses_curl_style_and_tables() -> None:
    pairs = resolve.parse(["a.test:127.0.0.1", "b.test:443:[::1]"])  # curl's host:port:address too
    assert pairs == (("a.test", "127.0.0.1"), ("b.test", "::1"))
    assert resolve.parse({"A.Test.": "10.0.0.1"}) == (("a.test", "10.0.0.1"),)
    with pytest.raises(resolve.ResolveError, match="not an IP address"):
        resolve.parse(["a.test:nowhere"])


def test_install_reaches_children_and_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(resolve.ENV, raising=False)
    resolve.install((("webrtc.example.test", "127.0.0.1"),))
    assert resolve.address("WEBRTC.example.test") == "127.0.0.1" and resolve.address("x.test") == "x.test"

    async def lookup() -> tuple[str, str]:
        resolver = resolve.StaticResolver(resolve.current())
        mapped = await resolver.resolve("webrtc.example.test", 443, socket.AF_INET)
        system = await resolver.resolve("localhost", 443, socket.AF_INET)
        await resolver.close()
        return mapped[0]["host"], system[0]["host"]

    assert asyncio.run(lookup()) == ("127.0.0.1", "127.0.0.1")


def test_run_config_takes_a_resolve_table(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[target]\nurl = "https://webrtc.x.test"\nresolve = {"webrtc.x.test" = "127.0.0.1"}\n'
                    'traefik_api = "http://127.0.0.1:8080"\n')
    cfg = load_run_config(path)
    assert cfg.target.resolve == ("webrtc.x.test:127.0.0.1",)
    path.write_text('[target]\nresolve = ["webrtc.x.test:nope"]\n')
    with pytest.raises(ConfigError, match="'target.resolve'"):
        load_run_config(path)


def test_preflight_config_takes_resolve_and_the_traefik_api() -> None:
    config = parse_config({"target": {"url": "https://gw.x.test", "resolve": {"gw.x.test": "127.0.0.1"},
                                      "traefik_api": "http://127.0.0.1:8080"}})
    assert config.resolve == (("gw.x.test", "127.0.0.1"),) and config.traefik_api == "http://127.0.0.1:8080"
    with pytest.raises(PreflightConfigError, match="'target.traefik_api'"):
        parse_config({"target": {"url": "https://gw.x.test", "traefik_api": "nope"}})


# --------------------------------------------------------------------------- Traefik's routers, judged

def _state(status: dict[str, str]) -> TraefikState:
    routers = [
        {"name": "web-to-websecure@internal", "provider": "internal", "rule": "HostRegexp(`^.+$`)",
         "entryPoints": ["web"], "priority": 10**9, "status": "enabled", "service": "noop@internal"},
        {"name": "gateway@file", "provider": "file", "rule": "Host(`webrtc.x.test`)", "priority": 21,
         "entryPoints": ["websecure"], "tls": {}, "status": "enabled", "service": "gateway"},
        {"name": "www@file", "provider": "file", "rule": "Host(`www.x.test`) && PathPrefix(`/`)",
         "entryPoints": ["websecure"], "tls": {}, "status": "enabled", "service": "www"},
    ]
    services = {
        "gateway@file": {"loadBalancer": {"servers": [{"url": u} for u in status]}, "serverStatus": status},
        "www@file": {"loadBalancer": {"servers": [{"url": "http://w"}]}, "serverStatus": {"http://w": "UP"}},
    }
    return TraefikState("3.7.15", routers, services, {"websecure": "127.0.0.1:8443", "web": ":8080"})


def test_the_gateways_router_is_the_one_taking_the_targets_host() -> None:
    state = _state({"http://a": "UP"})
    assert matches(state.routers[2], "WWW.x.test", "/socket.io/")
    assert gateway_router(state, "webrtc.x.test", "/socket.io/", 8443)["name"] == "gateway@file"
    assert gateway_router(state, "wrong.x.test", "/socket.io/", 8443) is None  # not the redirect's catch-all


def test_router_verdicts_name_the_router_and_its_servers() -> None:
    ws = Verdict("ok", "WebSocket upgrade 101")
    state = _state({"http://a": "UP", "http://b": "UP"})
    ok = judge_router(state.routers[1], state, True, 8443, ws)
    assert ok.status == "ok"
    assert "websecure :8443 · TLS · 2/2 servers UP · WebSocket upgrade 101" in ok.evidence
    state = _state({"http://a": "UP", "http://b": "DOWN"})
    assert judge_router(state.routers[1], state, True, 8443, ws).status == "warn"
    state = _state({"http://a": "DOWN", "http://b": "DOWN"})
    down = judge_router(state.routers[1], state, True, 8443, ws)
    assert down.status == "fail" and down.evidence.startswith(
        "router gateway@file: service gateway@file has no healthy server (http://a DOWN, http://b DOWN)")
    state = _state({"http://a": "UP"})
    elsewhere = judge_router(state.routers[1], state, True, 9443, ws)
    assert elsewhere.status == "fail"
    assert "not on the entrypoint of the target's port :9443" in elsewhere.evidence
    refused = judge_router(state.routers[1], state, True, 8443, Verdict("fail", "WebSocket upgrade refused"))
    assert refused.status == "fail" and "WebSocket upgrade refused" in refused.evidence


# --------------------------------------------------------------------------- Traefik's counters

METRICS = """# TYPE traefik_router_requests_total counter
traefik_router_requests_total{code="0",method="GET",router="gateway@file",service="gateway@file"} {ws}
traefik_router_requests_total{code="200",method="GET",router="api@internal",service="api@internal"} 9
traefik_entrypoint_requests_total{code="0",entrypoint="websecure",method="GET",protocol="websocket"} {ws}
traefik_open_connections{entrypoint="websecure",protocol="TCP"} {open}
traefik_service_server_up{service="gateway@file",url="http://127.0.0.1:3000"} 1
"""


def test_counters_over_the_run_land_beside_the_testers_figures(tmp_path: Path) -> None:
    before = parse(METRICS.replace("{ws}", "2").replace("{open}", "0"), 10.0)
    after = parse(METRICS.replace("{ws}", "6").replace("{open}", "0"), 40.0)
    doc = summarise("http://t/metrics", before, after, {"websecure": 4.0}, 31)
    assert doc["routers"] == {"gateway@file": {"requests": 4, "by_code": {"0": 4}}}  # no @internal
    assert doc["entrypoints"]["websecure"]["open_connections"] == {"before": 0, "peak": 4, "after": 0}
    (tmp_path / "proxy_metrics.json").write_text(json.dumps(doc))
    frame = pd.DataFrame({"conversation": ["c0", "c0", "c1"]})
    summary = proxy_summary(tmp_path, frame, 3)
    assert summary is not None
    assert summary["tester"] == {"conversations": 2, "signaling_connections": 4, "utterances_sent": 3}
    html = proxy_section(summary)
    assert "Proxy (Traefik)" in html and "WebSocket × 4" in html and "4 signaling connections" in html
    unreachable = {"source": "http://t/metrics", "error": "not reachable at the start"}
    assert "not reachable" in proxy_section(unreachable)
    assert proxy_summary(tmp_path / "nothing", frame, 3) is None
