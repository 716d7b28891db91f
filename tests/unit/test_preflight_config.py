"""Preflight config: the TOML format (docs/preflight.md), errors naming keys, and the configs derived
from a bare --target and from a reference stack's state dir (files only, no processes)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.preflight.audit import tls_endpoints
from loadtest.preflight.config import (
    REFERENCE_GATEWAY_METRICS,
    PreflightConfigError,
    Route,
    TurnServer,
    config_for_target,
    config_from_stack,
    load_config,
    parse_config,
)
from sut.config import load_stack_config, stack_config_to_doc
from sut.proxy import edge

pytestmark = pytest.mark.unit

FULL = """
[target]
url = "https://gw.example.com"
profile = "reference"
ice_addresses = ["10.0.0.5"]
auth_token = "t0k"

[checks]
timeout_s = 3
media_timeout_s = 9.5
cert_warn_days = 21
smoke = false
smoke_fixture = "cards-001"

[[routes]]
name = "frontend"
url = "https://app.example.com/"
expect_status = 200

[[routes]]
name = "http"
url = "http://app.example.com/"

[[turn]]
url = "turn:turn.example.com:3478?transport=udp"
username = "u"
credential = "p"

[backends]
stt = "http://stt:8002/health"
tts = "http://tts:8003/health"

[redis]
host = "redis_gateway"
port = 6380

[prometheus]
url = "http://prometheus:9090"
jobs = ["gateway", "traefik"]
metrics = ["gateway_uptime_seconds"]

[metrics]
gateway = "/metrics"
gateway_required = ["gateway_uptime_seconds"]
proxy = "https://traefik.example.com/metrics"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preflight.toml"
    path.write_text(text)
    return path


def test_full_config_is_read_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.target_url == "https://gw.example.com"
    assert config.ice_addresses == ("10.0.0.5",) and config.auth_token == "t0k"
    assert config.timeout_s == 3.0 and config.media_timeout_s == 9.5 and config.cert_warn_days == 21
    assert config.smoke is False and config.media is True and config.smoke_fixture == "cards-001"
    assert config.routes == (Route("frontend", "https://app.example.com/", 200),
                             Route("http", "http://app.example.com/", 0))
    assert config.turn == (TurnServer("turn:turn.example.com:3478?transport=udp", "u", "p"),)
    assert config.turn[0].address() == ("turn.example.com", 3478, "udp")
    assert dict(config.backends) == {"stt": "http://stt:8002/health", "tts": "http://tts:8003/health"}
    assert config.redis is not None and (config.redis.host, config.redis.port) == ("redis_gateway", 6380)
    assert config.prometheus is not None and config.prometheus.jobs == ("gateway", "traefik")
    assert config.gateway_metrics_required == ("gateway_uptime_seconds",)
    assert config.proxy_metrics == "https://traefik.example.com/metrics"
    assert config.url("/health") == "https://gw.example.com/health"
    assert config.source == str(tmp_path / "preflight.toml")
    # TLS is checked once per distinct https endpoint, the target first; http:// routes have none.
    assert tls_endpoints(config) == [("gw.example.com", 443), ("app.example.com", 443)]


@pytest.mark.parametrize(("text", "key"), [
    ('[target]\nurl = "https://x"\n[bogus]\n', "[bogus]"),
    ('[target]\nurl = "https://x"\nport = 1\n', "target.port"),
    ('[target]\nurl = "https://x"\ninsecure = "yes"\n', "target.insecure"),
    ('[target]\nurl = "ftp://x"\n', "target.url"),
    ("[target]\n", "target.url"),
    ('[target]\nurl = "https://x"\n[checks]\ntimeout_s = "5"\n', "checks.timeout_s"),
    ('[target]\nurl = "https://x"\n[checks]\ntimeout_s = 0\n', "checks.timeout_s"),
    ('[target]\nurl = "https://x"\n[[routes]]\nname = "a"\n', "routes[0].url"),
    ('[target]\nurl = "https://x"\n[[routes]]\nname = "a"\nurl = "x"\n', "routes[0].url"),
    ('[target]\nurl = "https://x"\n[[turn]]\nurl = "stun:h:1"\n', "turn.url"),
    ('[target]\nurl = "https://x"\n[[turn]]\nurl = "turn:h"\npassword = "p"\n', "turn[0].password"),
    ('[target]\nurl = "https://x"\n[backends]\ntts = "tts:8003"\n', "backends.tts"),
    ('[target]\nurl = "https://x"\n[redis]\nport = 1\n', "redis.host"),
    ('[target]\nurl = "https://x"\n[redis]\nhost = "r"\nport = "6379"\n', "redis.port"),
    ('[target]\nurl = "https://x"\n[prometheus]\njobs = ["a"]\n', "prometheus.url"),
    ('[target]\nurl = "https://x"\n[metrics]\ngateway_required = "x"\n', "metrics.gateway_required"),
    ('[target]\nurl = "https://x"\nca_cert = "/nonexistent/ca.pem"\n', "target.ca_cert"),
    ('[target]\nurl = "https://x"\nhealth_path = 1\n', "target.health_path"),
    ('[target]\nurl = "https://x"\nhealth_headers = { A = 1 }\n', "target.health_headers"),
    ('[target]\nurl = "https://x"\n[metrics]\nheaders = "k"\n', "metrics.headers"),
    ('[target]\nurl = "https://x"\n[metrics]\nheaders = { K = "${SPEECHLOAD_UNSET_TEST_VAR}" }\n',
     "metrics.headers.K"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(PreflightConfigError) as caught:
        load_config(write(tmp_path, text))
    assert key in str(caught.value)


def test_invalid_toml_and_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(PreflightConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[target\n"))
    with pytest.raises(PreflightConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_turn_url_defaults() -> None:
    assert TurnServer("turn:10.0.0.1").address() == ("10.0.0.1", 3478, "udp")
    assert TurnServer("turns:t.example?transport=tcp").address() == ("t.example", 5349, "tcp")


def test_bare_target_configures_only_what_it_can_know() -> None:
    config = config_for_target("https://gw.example:8443", smoke=False)
    assert config.routes == ()  # the gateway's health check covers its health endpoint
    assert config.turn == () and config.backends == () and config.redis is None and config.prometheus is None
    # The reference gateway's paths, not configured: a 404 there is reported as not served, not failed.
    assert config.smoke is False and config.gateway_metrics is None and config.health_path is None
    assert (config.health, config.metrics) == ("/health", "/metrics")
    assert parse_config({"target": {"url": "https://gw"}}).target_url == "https://gw"


def test_health_and_metrics_paths_and_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHLOAD_TEST_STATS_KEY", "s3cret")
    config = load_config(write(tmp_path, """
[target]
url = "http://127.0.0.1:7601"
health_path = "/healthz"
health_headers = { Authorization = "Bearer h" }

[metrics]
gateway = "/stats"
gateway_required = ["rooms"]
headers = { "X-Stats-Key" = "${SPEECHLOAD_TEST_STATS_KEY}" }
"""))
    assert (config.health, config.health_path, config.metrics) == ("/healthz", "/healthz", "/stats")
    assert config.health_headers == (("Authorization", "Bearer h"),)
    assert config.metrics_headers == (("X-Stats-Key", "s3cret"),)  # read from the environment
    assert "s3cret" not in repr(config)
    off = load_config(write(tmp_path, '[target]\nurl = "https://x"\nhealth_path = ""\n'
                                      '[metrics]\ngateway = ""\n'))
    assert (off.health, off.metrics) == ("", "")


def fake_state_dir(tmp_path: Path, name: str = "default", offset: int = 7, proxy: str = "") -> Path:
    """What `loadtest stack up` leaves in a state dir, without starting anything."""
    stack = load_stack_config(name).with_port_offset(offset)
    if proxy:
        stack = replace(stack, proxy=replace(stack.proxy, kind=proxy))
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text(json.dumps(stack_config_to_doc(stack)))
    (state / "ca.pem").write_text("not read by the config\n")
    (state / "pids.json").write_text(json.dumps({
        "config": name, "target_url": edge.target_url(stack), "ca_cert": str(state / "ca.pem"),
        "proxy_kind": stack.proxy.kind, "resolve": dict(edge.resolve(stack)),
        "traefik_api": edge.api_url(stack), "processes": []}))
    return state


def test_config_from_the_reference_stack_covers_everything_it_runs(tmp_path: Path) -> None:
    config = config_from_stack(fake_state_dir(tmp_path), media=False)
    assert config.target_url == "https://webrtc.speechload.test:8450"
    assert config.ca_cert == str(tmp_path / "state" / "ca.pem")
    assert [(r.name, r.url) for r in config.routes] == [
        ("frontend", "https://www.speechload.test:8450/"),
        ("gateway /health", "https://webrtc.speechload.test:8450/health"),
        ("grafana", "https://grafana.speechload.test:8450/"),
        ("http → https", "http://webrtc.speechload.test:8087/")]
    assert dict(config.resolve) == {f"{n}.speechload.test": "127.0.0.1" for n in ("webrtc", "www", "grafana")}
    assert config.traefik_api == "http://127.0.0.1:7487"
    assert config.proxy_metrics == "http://127.0.0.1:7487/metrics"  # Traefik's Prometheus endpoint
    assert config.turn == (TurnServer("turn:127.0.0.1:3485?transport=udp", "speechload", "speechload-turn"),)
    assert dict(config.backends) == {"stt": "http://127.0.0.1:8009/health",
                                     "translation": "http://127.0.0.1:8012/health",
                                     "tts": "http://127.0.0.1:8010/health"}
    assert config.redis is not None and (config.redis.host, config.redis.port) == ("localhost", 6406)
    assert config.gateway_metrics_required == REFERENCE_GATEWAY_METRICS
    assert config.prometheus is None  # the reference stack runs no Prometheus: reported as not configured
    assert config.media is False


def test_an_nginx_stack_keeps_its_own_routes_and_counters(tmp_path: Path) -> None:
    config = config_from_stack(fake_state_dir(tmp_path, proxy="nginx"))
    assert config.target_url == "https://localhost:8450" and not config.resolve and not config.traefik_api
    assert [r.name for r in config.routes] == ["frontend", "gateway /health", "proxy status", "http → https"]
    assert config.routes[-1].url == "http://localhost:8087/"
    assert config.proxy_metrics == "https://localhost:8450/nginx_status"


def test_stack_derived_config_uses_the_gateways_configured_redis_name_and_clients_turn_secret(
        tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    redis = config_from_stack(fake_state_dir(tmp_path / "a", "broken-redis-host"))
    assert redis.redis is not None and redis.redis.host == "redis_gateway"
    turn = config_from_stack(fake_state_dir(tmp_path / "b", "broken-turn-auth"))
    assert turn.turn[0].credential == "speechload-turn"  # what clients were given, not the server's


def test_no_stack_in_the_state_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(PreflightConfigError, match=f"no reference stack running in {tmp_path}"):
        config_from_stack(tmp_path)
