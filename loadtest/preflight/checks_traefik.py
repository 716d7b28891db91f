"""Traefik's own view of its routes (``[target] traefik_api`` / ``--traefik-api``): routers, services and
each server's health as Traefik sees them, one checked line per router.

The gateway's router is the one whose rule matches the target's host (and the Socket.IO path): it must
use the entrypoint the target's port reaches, with TLS, point at healthy servers, and pass a WebSocket
upgrade. No router for the target's host is a ❌ naming the host and the routers there are. Any router
whose service has no healthy server is a ❌ naming the router; some servers down is a ⚠️.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp

from loadtest.preflight import checks_socketio as sio
from loadtest.preflight.context import AuditContext
from loadtest.preflight.model import CheckResult, Verdict, describe_error, short

GROUP = "Routes"
_HOST = re.compile(r"\bHost\(([^)]*)\)")
_HOST_REGEXP = re.compile(r"\bHostRegexp\(([^)]*)\)")
_PATH_PREFIX = re.compile(r"\bPathPrefix\(([^)]*)\)")
_QUOTED = re.compile(r"[`\"]([^`\"]*)[`\"]")


@dataclass(frozen=True)
class TraefikState:
    version: str
    routers: list[dict[str, Any]]
    services: dict[str, dict[str, Any]]
    entrypoints: dict[str, str]  # name → address, e.g. "127.0.0.1:8443"


async def fetch_state(ctx: AuditContext) -> TraefikState:
    base = ctx.config.traefik_api.rstrip("/")

    async def get(path: str) -> Any:
        resp, body = await ctx.get(f"{base}{path}")
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} from {base}{path}: is this Traefik's API (api.insecure "
                               "or a router to api@internal)?")
        return json.loads(body)

    version, routers, services, entrypoints = await asyncio.gather(
        get("/api/version"), get("/api/http/routers"), get("/api/http/services"), get("/api/entrypoints"))
    return TraefikState(str(version.get("Version", "?")), list(routers),
                        {str(s.get("name")): s for s in services},
                        {str(e.get("name")): str(e.get("address", "")) for e in entrypoints})


def rule_hosts(rule: str) -> tuple[list[str], list[str]]:
    """(Host names, HostRegexp patterns) of a router rule."""
    hosts = [h for group in _HOST.findall(rule) for h in _QUOTED.findall(group)]
    patterns = [p for group in _HOST_REGEXP.findall(rule) for p in _QUOTED.findall(group)]
    return hosts, patterns


def matches(router: dict[str, Any], host: str, path: str) -> bool:
    """Whether the router's rule can take `host` (case-insensitive) at `path` (PathPrefix only)."""
    rule = str(router.get("rule", ""))
    hosts, patterns = rule_hosts(rule)
    host_ok = host.lower() in (h.lower() for h in hosts) or any(
        re.fullmatch(p, host, re.IGNORECASE) for p in patterns if _valid_regex(p))
    prefixes = [p for group in _PATH_PREFIX.findall(rule) for p in _QUOTED.findall(group)]
    return host_ok and (not prefixes or any(path.startswith(p) for p in prefixes))


def _valid_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def gateway_router(state: TraefikState, host: str, path: str, port: int) -> dict[str, Any] | None:
    """The router Traefik would pick for the target: the highest-priority match among the routers of
    the entrypoint on the target's port (else among all, so the line can say it is on another one).
    Traefik's own routers (the HTTP→HTTPS redirect takes every host) are not the gateway's."""
    found = [r for r in state.routers if r.get("provider") != "internal" and matches(r, host, path)]
    listening = {ep for ep, address in state.entrypoints.items() if _port(address) == port}
    on_port = [r for r in found if listening & set(r.get("entryPoints") or r.get("using") or [])]
    return max(on_port or found, key=lambda r: int(r.get("priority", 0) or 0)) if found else None


def _qualified(name: str, router: dict[str, Any]) -> str:
    return name if "@" in name else f"{name}@{router.get('provider', 'file')}"


def server_states(state: TraefikState, service: str, depth: int = 0) -> dict[str, str]:
    """Server URL → "UP"/"DOWN"/"unchecked" of a service (a weighted service: of its children)."""
    svc = state.services.get(service)
    if svc is None or depth > 4:
        return {}
    if "weighted" in svc:
        out: dict[str, str] = {}
        provider = service.partition("@")[2] or "file"
        for child in svc["weighted"].get("services", []):
            name = str(child.get("name", ""))
            out.update(server_states(state, name if "@" in name else f"{name}@{provider}", depth + 1))
        return out
    status = svc.get("serverStatus") or {}
    servers = [str(s.get("url")) for s in svc.get("loadBalancer", {}).get("servers", [])]
    return {url: str(status.get(url, "unchecked")) for url in servers} or dict(status)


def _port(address: str) -> int | None:
    tail = address.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def judge_router(router: dict[str, Any], state: TraefikState, gateway: bool, target_port: int,
                 websocket: Verdict | None = None) -> Verdict:
    """One router's line (pure but for `websocket`, the upgrade already tried through it)."""
    name = str(router.get("name"))
    service = _qualified(str(router.get("service", "?")), router)
    eps = list(router.get("entryPoints") or router.get("using") or [])
    shown_eps = ", ".join(f"{ep} :{_port(state.entrypoints.get(ep, '')) or '?'}" for ep in eps)
    tls = "tls" in router
    servers = server_states(state, service)
    up = [u for u, s in servers.items() if s == "UP"]
    down = [u for u, s in servers.items() if s == "DOWN"]
    parts = [short(str(router.get("rule", "")), 80), f"→ {service}", shown_eps or "no entrypoint",
             "TLS" if tls else "no TLS"]
    parts.append(f"{len(up)}/{len(servers)} servers UP" if servers else "no servers")
    details = {"router": name, "service": service, "servers": servers, "entrypoints": eps, "tls": tls}
    if router.get("status") != "enabled":
        errors = "; ".join(str(e) for e in router.get("error", []) or []) or "no error given"
        return Verdict("fail", f"router {name} is {router.get('status')}: {errors}",
                       "fix the router's definition (see Traefik's log)", details)
    if service not in state.services:
        return Verdict("fail", f"router {name}: its service {service} does not exist",
                       "define the service or point the router at an existing one", details)
    if servers and not up:
        return Verdict("fail", f"router {name}: service {service} has no healthy server "
                               f"({', '.join(f'{u} {servers[u]}' for u in servers)})",
                       "start the backend, or fix the service's server URLs / health check", details)
    problems: list[str] = []
    if gateway:
        target_eps = [ep for ep, address in state.entrypoints.items() if _port(address) == target_port]
        if not set(target_eps) & set(eps):
            problems.append(f"not on the entrypoint of the target's port :{target_port} "
                            f"({', '.join(target_eps) or 'none listens there'})")
        if not tls:
            problems.append("no TLS on the gateway's router")
        if websocket is not None:
            parts.append(websocket.evidence)
            if websocket.status != "ok":
                problems.append(websocket.evidence)
    line = " · ".join(parts)
    if problems:
        return Verdict("fail", f"router {name}: {'; '.join(problems)} · {line}",
                       "the gateway's router must take the target's host on its TLS entrypoint and pass "
                       "WebSocket upgrades", details)
    if down:
        return Verdict("warn", f"{line} · DOWN: {', '.join(down)}",
                       "a server of this service is down: capacity is reduced", details)
    return Verdict("ok", line, "", details)


async def websocket_through(ctx: AuditContext) -> Verdict:
    """A WebSocket upgrade at the target's Socket.IO path, with the profile's handshake: 101 or why not."""
    hs = sio.profile_handshake(ctx)
    url = sio._engineio_url(ctx, hs, "websocket")
    url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    try:
        async with ctx.session.ws_connect(url, ssl=ctx.ssl_for(url), headers=hs.headers,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
            status = ws._response.status if ws._response is not None else 101
    except aiohttp.WSServerHandshakeError as exc:
        return Verdict("fail", f"WebSocket upgrade refused: HTTP {exc.status}")
    except (aiohttp.ClientError, OSError) as exc:
        return Verdict("fail", f"WebSocket upgrade failed: {describe_error(exc)}")
    return Verdict("ok", f"WebSocket upgrade {status}")


def _result(key: str, name: str, verdict: Verdict, t0: float) -> CheckResult:
    return CheckResult(key, GROUP, name, verdict.status, verdict.evidence,
                       round((time.monotonic() - t0) * 1000.0, 1), verdict.hint, dict(verdict.details))


async def _audit(ctx: AuditContext) -> list[CheckResult]:
    c, t0 = ctx.config, time.monotonic()
    api = c.traefik_api.rstrip("/")
    try:
        state = await asyncio.wait_for(fetch_state(ctx), c.timeout_s)
    except Exception as exc:  # the API's failure is this audit's one line
        why = "timed out" if isinstance(exc, TimeoutError) else describe_error(exc)
        return [_result("traefik.api", f"Traefik API {api}", Verdict(
            "fail", why, "pass Traefik's API URL (--traefik-api): api.insecure on a loopback entrypoint, "
                         "or a router to api@internal"), t0)]
    own = [r for r in state.routers if r.get("provider") != "internal"]
    eps = ", ".join(f"{n} :{_port(a)}" for n, a in sorted(state.entrypoints.items()))
    results = [_result("traefik.api", f"Traefik API {api}", Verdict(
        "ok", f"Traefik {state.version} · {len(own)} routers ({len(state.routers) - len(own)} internal) · "
              f"entrypoints {eps}"), t0)]
    target = urlparse(c.target_url)
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    gateway = gateway_router(state, host, f"/{ctx.profile.socketio.path.strip('/')}/", port)
    websocket = None
    if gateway is not None:
        try:
            websocket = await asyncio.wait_for(websocket_through(ctx), c.timeout_s)
        except TimeoutError:
            websocket = Verdict("fail", f"WebSocket upgrade: no answer within {c.timeout_s:g} s")
    for router in own:
        t1 = time.monotonic()
        mine = router is gateway
        verdict = judge_router(router, state, mine, port, websocket if mine else None)
        results.append(_result(f"traefik.router[{router.get('name')}]", f"router {router.get('name')}",
                               verdict, t1))
    if gateway is None:
        known = "; ".join(f"{r.get('name')} {r.get('rule')}" for r in own) or "none"
        results.append(_result(f"traefik.router[{host}]", f"router for {host}", Verdict(
            "fail", f"no router matches the target's host '{host}' (Traefik answers it 404); "
                    f"routers: {known}",
            f"add a router with rule Host(`{host}`) on the TLS entrypoint, service → the gateway, or "
            "target a host a router takes"), t0))
    return results


async def traefik_checks(ctx: AuditContext) -> list[CheckResult]:
    """The Traefik lines of the audit ("skipped" without an API URL)."""
    if not ctx.config.traefik_api:
        return [CheckResult("traefik", GROUP, "Traefik routers", "skip",
                            "no Traefik API configured (--traefik-api / [target] traefik_api)", 0.0)]
    t0 = time.monotonic()
    try:
        return await asyncio.wait_for(_audit(ctx), ctx.config.timeout_s * 2)
    except Exception as exc:  # never take the audit down
        return [_result("traefik.api", "Traefik API", Verdict("fail", describe_error(exc)), t0)]
