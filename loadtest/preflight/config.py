"""What the preflight audit checks: a TOML file (docs/preflight.md), a bare --target, or the running
reference stack's state dir. Errors name the bad key."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from loadtest.config import DEFAULT_FIXTURES
from loadtest.ice import AUTO, validate_ice_addresses
from loadtest.tomlconfig import check_keys, check_sections, coerce, read_toml

# The reference gateway's paths: what a bare --target probes when nothing else is configured. Another
# gateway may serve neither; a 404 at a path nobody configured is then "not configured", not a failure.
DEFAULT_HEALTH_PATH = "/health"
DEFAULT_METRICS_PATH = "/metrics"
# What the reference gateway's /metrics must expose (docs/protocol.md, "HTTP").
REFERENCE_GATEWAY_METRICS = (
    "gateway_uptime_seconds", "gateway_workers_alive", "gateway_signaling_requests_total",
    "gateway_redis_connected",
)


class PreflightConfigError(ValueError):
    """The preflight config is wrong or the stack to audit is not there; the message names the key."""


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    # 0: any 2xx/3xx over https; an http:// route must redirect to https:// (the HTTP→HTTPS check).
    expect_status: int = 0


@dataclass(frozen=True)
class TurnServer:
    url: str  # turn:host:port?transport=udp
    username: str = ""
    credential: str = ""

    def address(self) -> tuple[str, int, str]:
        """(host, port, transport) of a turn: URL."""
        scheme, _, rest = self.url.partition(":")
        if scheme not in ("turn", "turns"):
            raise PreflightConfigError(f"'turn.url' must start with turn: or turns:, got {self.url!r}")
        hostport, _, query = rest.partition("?")
        parsed = urlparse(f"//{hostport}")
        if not parsed.hostname:
            raise PreflightConfigError(f"'turn.url' has no host: {self.url!r}")
        transport = parse_qs(query).get("transport", ["udp"])[0]
        return parsed.hostname, parsed.port or (5349 if scheme == "turns" else 3478), transport


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int = 6379
    password: str = ""


@dataclass(frozen=True)
class PrometheusTarget:
    url: str  # base URL of the Prometheus HTTP API, e.g. http://prometheus:9090
    jobs: tuple[str, ...] = ()  # each must have at least one target, all up
    metrics: tuple[str, ...] = ()  # each must have at least one series
    optional_jobs: tuple[str, ...] = ()  # may be down (a tester's --metrics-port between runs)


@dataclass(frozen=True)
class PreflightConfig:
    target_url: str
    ca_cert: str = ""
    insecure: bool = False
    profile: str = "reference"
    ice_addresses: tuple[str, ...] = (AUTO,)  # "auto" or local IPs (loadtest/ice.py)
    auth_token: str = ""
    source_language: str = "en"
    target_language: str = "es"
    routes: tuple[Route, ...] = ()
    turn: tuple[TurnServer, ...] = ()
    backends: tuple[tuple[str, str], ...] = ()  # (name, health URL), e.g. ("tts", "http://tts:8003/health")
    redis: RedisTarget | None = None
    prometheus: PrometheusTarget | None = None
    # Paths on the target or URLs; "" = not checked; None = the reference gateway's path, skipped when
    # the target does not serve it (404).
    health_path: str | None = None
    health_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold keys
    gateway_metrics: str | None = None
    gateway_metrics_required: tuple[str, ...] = ()
    metrics_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # e.g. X-Stats-Key
    proxy_metrics: str = ""  # URL of the proxy's stub_status or Prometheus metrics; "" = not configured
    # Host name → address overrides (curl's --resolve; loadtest/resolve.py) for every connection.
    resolve: tuple[tuple[str, str], ...] = ()
    traefik_api: str = ""  # Traefik's API: its routers, services and servers are audited ("" = not)
    timeout_s: float = 5.0  # each HTTP/TLS/Redis/TURN-allocation check
    media_timeout_s: float = 8.0  # each media, relay and smoke check
    cert_warn_days: int = 14
    media: bool = True
    smoke: bool = True
    smoke_fixture: str = ""  # "" = the shortest clip of the corpus
    fixtures: str = str(DEFAULT_FIXTURES)
    source: str = field(default="", compare=False)  # where this config came from, for the report

    def url(self, path_or_url: str) -> str:
        if "://" in path_or_url:
            return path_or_url
        # The target's own query (an API key: https://gw/?key=…) travels on every request, as callers send it.
        from urllib.parse import urlsplit, urlunsplit

        target = urlsplit(self.target_url)
        path, _, query = path_or_url.partition("?")
        full = target.path.rstrip("/") + "/" + path.lstrip("/")
        joined = "&".join(q for q in (query, target.query) if q)
        return urlunsplit((target.scheme, target.netloc, full, joined, ""))

    @property
    def health(self) -> str:
        """The health path or URL to check ("" = not checked)."""
        return DEFAULT_HEALTH_PATH if self.health_path is None else self.health_path

    @property
    def metrics(self) -> str:
        """The gateway metrics path or URL to check ("" = not checked)."""
        return DEFAULT_METRICS_PATH if self.gateway_metrics is None else self.gateway_metrics


# --------------------------------------------------------------------------- TOML

_TARGET_KEYS = {"url": str, "ca_cert": str, "insecure": bool, "profile": str, "ice_addresses": list,
                "auth_token": str, "source_language": str, "target_language": str, "health_path": str,
                "traefik_api": str}
_ENV_VALUE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_CHECK_KEYS = {"timeout_s": float, "media_timeout_s": float, "cert_warn_days": int, "media": bool,
               "smoke": bool, "smoke_fixture": str, "fixtures": str}
_SECTIONS = {"target", "checks", "routes", "turn", "backends", "redis", "prometheus", "metrics"}


def _typed(table: Any, spec: dict[str, type], where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PreflightConfigError(f"'{where}' must be a table")
    check_keys(table, spec, where, PreflightConfigError)
    for key in required:
        if key not in table:
            raise PreflightConfigError(f"'{where}.{key}' is required")
    kinds = {str: "str", int: "int", float: "float", bool: "bool", list: "tuple[str, ...]"}
    return {key: coerce(value, kinds[spec[key]], f"{where}.{key}", PreflightConfigError)
            for key, value in table.items()}


def _array(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = doc.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise PreflightConfigError(f"'{name}' must be an array of tables ([[{name}]])")
    return items


def _with_headers(doc: dict[str, Any], section: str, key: str
                  ) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """(`[section]` without `key`, the HTTP headers under `key`); a header value "${NAME}" is read from
    the environment, so a key need not be written into the file."""
    table = doc.get(section, {})
    if not isinstance(table, dict):
        return table, ()  # _typed names the error
    table = dict(table)
    value = table.pop(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PreflightConfigError(f"'{section}.{key}' must be a table of strings, e.g. "
                                   "{ \"X-Stats-Key\" = \"${STATS_KEY}\" }")
    out = []
    for name, raw in value.items():
        env = _ENV_VALUE.match(raw)
        if env is not None:
            raw = os.environ.get(env.group(1), "")
            if not raw:
                raise PreflightConfigError(f"'{section}.{key}.{name}': environment variable {env.group(1)} "
                                           "is not set")
        out.append((str(name), raw))
    return table, tuple(out)


def _check_url(url: str, where: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise PreflightConfigError(f"'{where}' must be an {'/'.join(schemes)} URL, got {url!r}")
    return url


def parse_config(doc: dict[str, Any], source: str = "") -> PreflightConfig:
    check_sections(doc, _SECTIONS, PreflightConfigError)
    target_table, health_headers = _with_headers(doc, "target", "health_headers")
    resolve = _resolve(target_table.pop("resolve", ()) if isinstance(target_table, dict) else ())
    target = _typed(target_table, _TARGET_KEYS, "target")
    url = target.pop("url", "")
    checks = _typed(doc.get("checks", {}), _CHECK_KEYS, "checks")
    routes = []
    for i, item in enumerate(_array(doc, "routes")):
        where = f"routes[{i}]"
        r = _typed(item, {"name": str, "url": str, "expect_status": int}, where, ("name", "url"))
        routes.append(Route(r["name"], _check_url(r["url"], f"{where}.url"), r.get("expect_status", 0)))
    turn = []
    for i, item in enumerate(_array(doc, "turn")):
        t = _typed(item, {"url": str, "username": str, "credential": str}, f"turn[{i}]", ("url",))
        server = TurnServer(t["url"], t.get("username", ""), t.get("credential", ""))
        server.address()  # validates the URL now, naming the key
        turn.append(server)
    backends = _typed(doc.get("backends", {}), {k: str for k in doc.get("backends", {})}, "backends")
    for name, health in backends.items():
        _check_url(health, f"backends.{name}")
    redis = None
    if "redis" in doc:
        r = _typed(doc["redis"], {"host": str, "port": int, "password": str}, "redis", ("host",))
        redis = RedisTarget(r["host"], r.get("port", 6379), r.get("password", ""))
    prometheus = None
    if "prometheus" in doc:
        p = _typed(doc["prometheus"], {"url": str, "jobs": list, "metrics": list}, "prometheus", ("url",))
        prometheus = PrometheusTarget(_check_url(p["url"], "prometheus.url"), p.get("jobs", ()),
                                      p.get("metrics", ()))
    metrics_table, metrics_headers = _with_headers(doc, "metrics", "headers")
    metrics = _typed(metrics_table, {"gateway": str, "gateway_required": list, "proxy": str}, "metrics")
    config = PreflightConfig(
        target_url=url, **target, **checks, routes=tuple(routes), turn=tuple(turn),
        backends=tuple(backends.items()), redis=redis, prometheus=prometheus,
        health_headers=health_headers, gateway_metrics=metrics.get("gateway"),
        gateway_metrics_required=metrics.get("gateway_required", ()), metrics_headers=metrics_headers,
        proxy_metrics=metrics.get("proxy", ""), resolve=resolve, source=source)
    return validate(config)


def _resolve(value: Any) -> tuple[tuple[str, str], ...]:
    """[target] resolve: a {host = ip} table or a list of "host:ip"."""
    from loadtest.resolve import ResolveError, parse

    if not isinstance(value, dict | list | tuple):
        raise PreflightConfigError("'target.resolve' must be a table {host = ip} or a list of \"host:ip\"")
    try:
        return parse(value)
    except ResolveError as exc:
        raise PreflightConfigError(f"'target.resolve': {exc}") from None


def validate(config: PreflightConfig) -> PreflightConfig:
    if not config.target_url:
        raise PreflightConfigError("'target.url' is required (or pass --target)")
    _check_url(config.target_url, "target.url")
    if config.traefik_api:
        _check_url(config.traefik_api, "target.traefik_api")
    problem = validate_ice_addresses(config.ice_addresses)
    if problem:
        raise PreflightConfigError(f"'target.ice_addresses': {problem}")
    if config.ca_cert and not Path(config.ca_cert).is_file():
        raise PreflightConfigError(f"'target.ca_cert': file not found: {config.ca_cert}")
    if config.timeout_s <= 0 or config.media_timeout_s <= 0:
        raise PreflightConfigError("'checks.timeout_s' and 'checks.media_timeout_s' must be > 0")
    return config


def load_config(path: str | Path) -> PreflightConfig:
    file = Path(path)
    doc = read_toml(file, PreflightConfigError, "preflight config")
    try:
        return parse_config(doc, source=str(file))
    except PreflightConfigError as exc:
        raise PreflightConfigError(f"{file}: {exc}") from None


# --------------------------------------------------------------------------- derived configs

def config_for_target(url: str, ca_cert: str = "", insecure: bool = False, profile: str = "reference",
                      **overrides: Any) -> PreflightConfig:
    """A bare target: TLS, the gateway's health, Socket.IO, metrics, media and smoke; TURN, backends,
    Redis, Prometheus not configured. Health and metrics are probed at the reference gateway's paths,
    skipped when the target does not serve them."""
    config = PreflightConfig(target_url=url, ca_cert=ca_cert, insecure=insecure, profile=profile,
                             source=f"--target {url}")
    return validate(replace(config, **overrides))


def config_from_stack(state_dir: str | Path, **overrides: Any) -> PreflightConfig:
    """Everything the running reference stack in `state_dir` has (pids.json + stack.json)."""
    from sut.config import StackConfigError, load_stack_config

    state = Path(state_dir)
    try:
        pids = json.loads((state / "pids.json").read_text())
    except FileNotFoundError:
        raise PreflightConfigError(
            f"no reference stack running in {state} (start one with `loadtest stack up --state-dir "
            f"{state}`, or pass --target/--config)") from None
    except ValueError as exc:
        raise PreflightConfigError(f"{state / 'pids.json'}: unreadable ({exc})") from None
    try:
        stack = load_stack_config(state / "stack.json")
    except StackConfigError as exc:
        raise PreflightConfigError(f"cannot read the stack's config: {exc}") from None
    target = str(pids["target_url"]).rstrip("/")
    from loadtest.preflight.stack_edge import stack_edge

    edge = stack_edge(stack, pids, target)  # routes, proxy metrics; Traefik: resolve, its API
    edge["routes"] = tuple(Route(name, url) for name, url in edge["routes"])
    turn = ()
    if stack.turn.enabled:
        turn = (TurnServer(f"turn:{stack.host}:{stack.turn.port}?transport=udp", stack.turn.username,
                           stack.turn.credential),)
    backends = tuple((name, f"http://{stack.host}:{stack.service(name).port}/health")
                     for name in ("stt", "translation", "tts"))
    redis = RedisTarget(stack.gateway.redis_host, stack.redis.port) if stack.gateway.redis_host else None
    prometheus = None
    if stack.prometheus.enabled:  # [prometheus] enabled: its targets up, the gateway's series present
        up = [n for n in ("stt", "translation", "tts") if not getattr(stack.faults, f"{n}_down")]
        scraped = ("gateway", *up)
        series = ("gateway_uptime_seconds", "gateway_workers_alive", "gateway_peers")  # exist from the start
        prometheus = PrometheusTarget(f"http://{stack.host}:{stack.prometheus.port}", scraped, series,
                                      ("tester",))
    config = PreflightConfig(
        target_url=target, ca_cert=str(pids.get("ca_cert", state / "ca.pem")), **edge,
        turn=turn, backends=backends, redis=redis, prometheus=prometheus, health_path=DEFAULT_HEALTH_PATH,
        gateway_metrics=DEFAULT_METRICS_PATH,
        gateway_metrics_required=REFERENCE_GATEWAY_METRICS,
        fixtures=str(stack.fixtures), source_language=stack.gateway.source_language,
        target_language=stack.gateway.target_language, source=f"reference stack in {state}")
    return validate(replace(config, **overrides))
