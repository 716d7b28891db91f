"""Run the whole audit: certificates first (a failed one relaxes TLS for the rest, so the audit still
sees everything behind it), then every other check at once, each bounded by its own timeout.

Dependencies are awaited, never slept on: relayed media waits for its TURN allocation (and is skipped
when that failed: the allocation is the cause, reported once); the health endpoint is fetched once for
the health and coordination checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import urlparse

from loadtest import resolve
from loadtest.ice import choose_ice
from loadtest.preflight import checks_backends as backends
from loadtest.preflight import checks_http as http
from loadtest.preflight import checks_media as media
from loadtest.preflight import checks_socketio as sio
from loadtest.preflight import checks_traefik as traefik
from loadtest.preflight.config import PreflightConfig, TurnServer
from loadtest.preflight.context import AuditContext
from loadtest.preflight.model import GROUPS, CheckResult, PreflightReport, Verdict, run_check, skipped

Job = Awaitable[CheckResult]


def _endpoint(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "", parsed.port or 443


def tls_endpoints(config: PreflightConfig) -> list[tuple[str, int]]:
    """Distinct HTTPS host:port pairs of the target and the routes, the target first."""
    urls = [config.target_url, *(r.url for r in config.routes)]
    seen: dict[tuple[str, int], None] = {}
    for url in urls:
        if urlparse(url).scheme == "https":
            seen.setdefault(_endpoint(url))
    return list(seen)


async def _tls_phase(ctx: AuditContext) -> tuple[list[CheckResult], list[str]]:
    c = ctx.config
    endpoints = tls_endpoints(c)
    results = list(await asyncio.gather(*(
        run_check(f"routes.tls[{h}:{p}]", "Routes", f"TLS certificate {h}:{p}",
                  partial(http.check_tls, ctx, h, p), c.timeout_s) for h, p in endpoints)))
    notes: list[str] = []
    target = results[0] if results else None
    failure = target.details.get("failure") if target is not None else None
    if target is not None and failure in ("hostname", "chain"):
        # A host-name mismatch is reported only when the chain itself verified against the CA.
        trusted_chain = failure == "hostname"
        ctx.relax(target.evidence, hostname_only=trusted_chain)
        what = "host names not checked" if trusted_chain else "certificates not verified"
        notes.append(f"TLS relaxed for the other checks ({what}) after {target.key} failed, "
                     "so the rest of the deployment is still audited")
    return results, notes


def _turn_jobs(ctx: AuditContext, servers: tuple[TurnServer, ...]) -> list[Job]:
    c = ctx.config
    if not servers:
        return [_done(skipped("turn", "TURN", "TURN servers", "no TURN servers configured ([[turn]])"))]
    jobs: list[Job] = []
    for server in servers:
        alloc_key = f"turn.allocation[{server.url}]"
        allocation = asyncio.ensure_future(run_check(
            alloc_key, "TURN", f"allocation {server.url}", partial(media.check_turn_allocation, ctx, server),
            c.timeout_s))
        jobs.append(allocation)
        if c.media:
            jobs.append(_relay_after(ctx, server, allocation, alloc_key))
    return jobs


async def _relay_after(ctx: AuditContext, server: TurnServer, allocation: asyncio.Future[CheckResult],
                       alloc_key: str) -> CheckResult:
    key, name = f"turn.relay-media[{server.url}]", f"relayed media {server.url}"
    first = await allocation
    if first.status == "fail":
        return skipped(key, "TURN", name, f"not run: no allocation on this server (see {alloc_key})")
    return await run_check(key, "TURN", name, partial(media.check_relay_media, ctx, server),
                           ctx.config.media_timeout_s)


async def _done(result: CheckResult) -> CheckResult:
    return result


def _jobs(ctx: AuditContext) -> list[Job]:
    c = ctx.config
    t, tm = c.timeout_s, c.media_timeout_s

    def job(key: str, group: str, name: str, fn: Callable[[], Awaitable[Verdict]], timeout: float) -> Job:
        return run_check(key, group, name, fn, timeout)

    jobs: list[Job] = [
        job(f"routes.route[{r.name}]", "Routes", f"{r.name} {r.url}", partial(http.check_route, ctx, r), t)
        for r in c.routes
    ]
    if c.health:
        jobs += [
            job("gateway.health", "Gateway", c.health, partial(http.check_health, ctx), t),
            job("gateway.coordination", "Gateway", "Redis coordination (gateway's view)",
                partial(http.check_coordination, ctx), t),
        ]
    else:
        jobs += [_done(skipped(key, "Gateway", name, "not checked ([target] health_path = \"\")"))
                 for key, name in (("gateway.health", "health"),
                                   ("gateway.coordination", "Redis coordination (gateway's view)"))]
    jobs += [
        job("gateway.socketio-polling", "Gateway", "Socket.IO handshake (polling)",
            partial(sio.check_socketio_polling, ctx), t),
        job("gateway.socketio-websocket", "Gateway", "Socket.IO WebSocket upgrade",
            partial(sio.check_socketio_websocket, ctx), t),
    ]
    if c.media:
        jobs.append(job("media.webrtc", "Media", "WebRTC via SFU (ICE, DTLS, 1 s audio)",
                        partial(media.check_media, ctx), tm))
    jobs += _turn_jobs(ctx, c.turn)
    if c.backends:
        jobs += [job(f"backends.{name}", "Backends", f"{name} {url}",
                     partial(backends.check_backend, ctx, name, url), t) for name, url in c.backends]
    else:
        jobs.append(_done(skipped("backends", "Backends", "speech services",
                                  "no backend health URLs configured ([backends]; only reachable from "
                                  "inside the cluster)")))
    if c.redis is not None:
        jobs.append(job("backends.redis", "Backends", f"Redis {c.redis.host}:{c.redis.port}",
                        partial(backends.check_redis, ctx, c.redis), t))
    else:
        jobs.append(_done(skipped("backends.redis", "Backends", "Redis", "no Redis configured ([redis])")))
    if c.metrics:
        jobs.append(job("metrics.gateway", "Metrics", f"gateway {c.metrics}",
                        partial(http.check_gateway_metrics, ctx), t))
    if c.proxy_metrics:
        jobs.append(job("metrics.proxy", "Metrics", f"proxy {c.proxy_metrics}",
                        partial(http.check_proxy_metrics, ctx), t))
    else:
        jobs.append(_done(skipped("metrics.proxy", "Metrics", "proxy metrics",
                                  "not configured ([metrics] proxy)")))
    if c.prometheus is not None:
        jobs.append(job("metrics.prometheus", "Metrics", f"Prometheus {c.prometheus.url}",
                        partial(backends.check_prometheus, ctx, c.prometheus), t))
    else:
        jobs.append(_done(skipped("metrics.prometheus", "Metrics", "Prometheus targets",
                                  "not configured ([prometheus] url): scrape targets not audited")))
    if c.smoke:
        jobs.append(job("pipeline.smoke", "Pipeline", "one utterance end to end",
                        partial(media.check_smoke, ctx), tm))
    return jobs


async def run_preflight(config: PreflightConfig) -> PreflightReport:
    """The audit of `config`'s deployment; never raises for what it finds (that is in the report)."""
    started, t0 = time.time(), time.monotonic()
    resolve.install(config.resolve)  # host names a proxy routes by, reached on another address
    # Loopback for a loopback target (aioice skips it), every interface for a remote one, or as configured.
    ice = choose_ice(config.ice_addresses, config.target_url)
    ice.apply()
    ctx = AuditContext.open(config)
    try:
        tls_results, notes = await _tls_phase(ctx)
        rest, edge = await asyncio.gather(asyncio.gather(*_jobs(ctx)), traefik.traefik_checks(ctx))
    finally:
        await ctx.close()
    checks = [*tls_results, *edge, *rest]
    order = {g: i for i, g in enumerate(GROUPS)}
    checks.sort(key=lambda c: order.get(c.group, len(order)))  # stable: keeps the order within a group
    notes.insert(0, ice.describe())
    if config.source:
        notes.insert(0, f"config: {config.source}")
    return PreflightReport(config.target_url, started, time.monotonic() - t0, checks, notes)


def run_preflight_sync(config: PreflightConfig) -> PreflightReport:
    """run_preflight from synchronous code (no event loop running in this thread)."""
    return asyncio.run(run_preflight(config))
