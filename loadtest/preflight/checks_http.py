"""Routes, certificates and the gateway's HTTP face: TLS, HTTPS routes, HTTP→HTTPS redirect, its health
endpoint, Redis coordination as the gateway reports it, its metrics (Socket.IO: checks_socketio.py).

Health and metrics paths and headers come from the preflight config; a path nobody configured is the
reference gateway's, and a 404 there means this gateway has none (skipped, naming the key to set)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from cryptography import x509
from cryptography.x509.oid import NameOID

from loadtest import resolve
from loadtest.preflight.config import Route
from loadtest.preflight.context import AuditContext, strict_context, unverified_context
from loadtest.preflight.model import CheckFailed, Verdict, body_text
from loadtest.signaling import server_text

HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
REDIRECTS = (301, 302, 303, 307, 308)


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


# --------------------------------------------------------------------------- TLS

@dataclass(frozen=True)
class PeerCert:
    der: bytes
    version: str
    alpn: str | None


async def _handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> PeerCert:
    context.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(resolve.address(host), port, ssl=context, server_hostname=host), timeout_s)
    try:
        obj = writer.get_extra_info("ssl_object")
        return PeerCert(obj.getpeercert(binary_form=True), obj.version() or "?", obj.selected_alpn_protocol())
    finally:
        writer.close()


def cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        return [*san.get_values_for_type(x509.DNSName), *ips]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def issuer_name(cert: x509.Certificate) -> str:
    cns = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.issuer.rfc4514_string()


def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400.0


def judge_certificate(cert: x509.Certificate, host: str, warn_days: int, verify_error: str | None,
                      hostname_mismatch: bool) -> Verdict:
    """The verdict on one server certificate (pure: unit-tested)."""
    names = cert_names(cert)
    days = days_left(cert)
    facts = f"issuer '{issuer_name(cert)}', {days:.0f} days to expiry"
    details = {"names": names, "issuer": issuer_name(cert), "days_to_expiry": round(days, 1)}
    if hostname_mismatch:
        return Verdict("fail",
                       f"certificate is for {', '.join(names)} — not valid for host '{host}' ({facts})",
                       "issue the certificate for the host name clients use (SAN), or fix the route's host",
                       {**details, "failure": "hostname"})
    if verify_error is not None:
        return Verdict("fail", f"certificate chain not trusted: {verify_error} ({facts})",
                       "pass the CA bundle that signs the proxy's certificate (--ca-cert / target.ca_cert)",
                       {**details, "failure": "chain"})
    if days < 0:
        return Verdict("fail", f"certificate expired {-days:.0f} days ago ({facts})", "renew the certificate",
                       details)
    if days < warn_days:
        return Verdict("warn", f"certificate expires in {days:.1f} days (< {warn_days}); {facts}",
                       "renew the certificate before the load test window", details)
    return Verdict("ok", f"valid for {host}; {facts}", "", details)


async def check_tls(ctx: AuditContext, host: str, port: int) -> Verdict:
    t0 = time.monotonic()
    timeout = ctx.config.timeout_s
    verify_error: str | None = None
    mismatch = False
    try:
        # A context of its own: the handshake offers ALPN h2, which the audit's HTTP/1.1 session must not.
        peer = await _handshake(host, port, unverified_context() if ctx.config.insecure
                                else strict_context(ctx.config), timeout)
    except ssl.SSLCertVerificationError as exc:
        mismatch = exc.verify_code == HOSTNAME_MISMATCH
        verify_error = exc.verify_message or str(exc)
        # Fetch it again without verification, to say what the certificate is.
        peer = await _handshake(host, port, unverified_context(), timeout)
    cert = x509.load_der_x509_certificate(peer.der)
    verdict = judge_certificate(cert, host, ctx.config.cert_warn_days, verify_error, mismatch)
    extra = f" · {peer.version} · ALPN {peer.alpn or 'none'} · {_ms(t0):.0f} ms"
    if ctx.config.insecure and verdict.status == "ok":
        return Verdict("warn", f"not verified (insecure mode); {verdict.evidence}{extra}",
                       "pass the CA bundle instead of --insecure", verdict.details)
    return Verdict(verdict.status, verdict.evidence + extra, verdict.hint,
                   {**verdict.details, "tls_version": peer.version, "alpn": peer.alpn})


# --------------------------------------------------------------------------- routes

def judge_route(route: Route, status: int, version: str, location: str | None, ms: float) -> Verdict:
    """HTTPS routes answer 2xx/3xx (or `expect_status`); http:// routes must redirect to https://."""
    details = {"status": status, "http_version": version, "location": location, "latency_ms": round(ms, 1)}
    if urlparse(route.url).scheme == "http":
        if status in REDIRECTS and location and location.startswith("https://"):
            return Verdict("ok", f"{status} → {location} · {ms:.0f} ms", "", details)
        if status in REDIRECTS:
            return Verdict("fail", f"{status} redirects to {location!r}, not to HTTPS",
                           "redirect HTTP to HTTPS", details)
        return Verdict("fail", f"{status} served over plain HTTP, no redirect to HTTPS",
                       "make the edge redirect HTTP to HTTPS (301/308)", details)
    arrow = f" → {location}" if location else ""
    line = f"{status} {version}{arrow} · {ms:.0f} ms"
    if route.expect_status and status != route.expect_status:
        return Verdict("fail", f"{line} (expected {route.expect_status})", "", details)
    if 200 <= status < 400:
        return Verdict("ok", line, "", details)
    return Verdict("fail", line, "the route answers an error: check the proxy's route and its backend",
                   details)


async def check_route(ctx: AuditContext, route: Route) -> Verdict:
    t0 = time.monotonic()
    resp, _ = await ctx.get(route.url)
    version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP/?"
    return judge_route(route, resp.status, version, resp.headers.get("Location"), _ms(t0))


# --------------------------------------------------------------------------- gateway /health

async def fetch_health(ctx: AuditContext) -> tuple[int, Any, float]:
    """GET the health endpoint once per audit (the health and coordination checks share it)."""
    if ctx._health is None:
        async def fetch() -> tuple[int, Any, float]:
            t0 = time.monotonic()
            c = ctx.config
            resp, body = await ctx.get(c.url(c.health), headers=dict(c.health_headers))
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            return resp.status, data, _ms(t0)

        ctx._health = asyncio.ensure_future(fetch())
    return await asyncio.shield(ctx._health)


HEALTHY = ("ok", "up", "healthy", "pass")


def judge_health(status: int, data: Any, ms: float) -> Verdict:
    if not isinstance(data, dict):
        return Verdict("fail", f"HTTP {status}, body is not a JSON object · {ms:.0f} ms",
                       "the gateway's health endpoint should answer JSON with a status field")
    state = data.get("status")
    backends = data.get("backends") if isinstance(data.get("backends"), dict) else {}
    workers = data.get("workers") if isinstance(data.get("workers"), list) else []
    alive = sum(1 for w in workers if isinstance(w, dict) and w.get("alive"))
    parts = [f"status {state}"]
    if workers:
        parts.append(f"{alive}/{len(workers)} media workers alive")
    if backends:
        parts.append("backends " + ", ".join(f"{k} {v}" for k, v in backends.items()))
    line = " · ".join(parts) + f" · HTTP {status} · {ms:.0f} ms"
    details = {"http_status": status, "health": data}
    if state in HEALTHY and status == 200:
        return Verdict("ok", line, "", details)
    if state == "degraded":
        down = [k for k, v in backends.items() if v != "ok"]
        dead = len(workers) - alive
        causes = [f"backend {d} down" for d in down] + ([f"{dead} worker(s) dead"] if dead else [])
        cause = ", ".join(causes)
        return Verdict("warn", f"degraded ({cause or 'no cause given'}) · {line}",
                       "the gateway serves, but a dependency is down: see the Backends checks", details)
    if state is None:
        return Verdict("warn", f"no 'status' field · {line}", "", details)
    return Verdict("fail", line, "the gateway reports itself unhealthy", details)


def not_served(path: str, key: str) -> Verdict:
    """A path nobody configured that the target does not serve: not this gateway's convention."""
    return Verdict("skip", f"the target serves no {path} (HTTP 404): set {key} to check this gateway's own")


async def check_health(ctx: AuditContext) -> Verdict:
    status, data, ms = await fetch_health(ctx)
    if status == 404 and ctx.config.health_path is None:
        return not_served(ctx.config.health, "[target] health_path")
    if status in (401, 403):
        raise CheckFailed(f"HTTP {status} from {ctx.config.health}: {server_text(data)}",
                          "the endpoint wants credentials: set [target] health_headers")
    return judge_health(status, data, ms)


STANDALONE_HINT = ("the gateway would run standalone: no multi-node room coordination — set the gateway's "
                   "Redis host to the Redis service's actual name and restart it")


def judge_coordination(data: Any) -> Verdict:
    redis = data.get("redis") if isinstance(data, dict) else None
    if not isinstance(redis, dict):
        return Verdict("skip", "the gateway's health endpoint reports no Redis coordination")
    configured = redis.get("configured")
    if not configured:
        return Verdict("skip", "no Redis configured on the gateway: a single node by design")
    details = {"redis": redis}
    if redis.get("connected") and redis.get("mode") == "cluster":
        rt = redis.get("pubsubRoundTripMs")
        rt_text = f" · gateway pub/sub round trip {rt:.1f} ms" if isinstance(rt, int | float) else ""
        return Verdict("ok", f"cluster mode via Redis {configured} · {redis.get('nodes', '?')} node(s) "
                             f"heard{rt_text}", "", details)
    error = redis.get("error") or "not connected"
    if redis.get("mode") == "standalone":
        return Verdict("fail", f"gateway runs STANDALONE: Redis '{configured}' unreachable ({error}) — "
                               "rooms are not coordinated across gateway replicas", STANDALONE_HINT, details)
    return Verdict("fail", f"lost Redis '{configured}' ({error}); rooms not coordinated until it reconnects",
                   "check Redis and the network between it and the gateway", details)


async def check_coordination(ctx: AuditContext) -> Verdict:
    status, data, _ = await fetch_health(ctx)
    if status == 404 and ctx.config.health_path is None:
        return Verdict("skip", "no health endpoint to read the gateway's Redis state from (see its check)")
    return judge_coordination(data)


# --------------------------------------------------------------------------- metrics

def parse_prometheus(text: str) -> tuple[set[str], dict[str, float]]:
    """Metric families (from # TYPE lines and sample names) and the first value of each sample name."""
    families: set[str] = set()
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 3:
                families.add(parts[2])
            continue
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[-1]) if "}" not in line.rsplit(" ", 1)[-1] else None
        except ValueError:
            value = None
        families.add(name)
        if value is not None:
            values.setdefault(name, value)
    return families, values


def parse_stub_status(text: str) -> dict[str, int] | None:
    """nginx stub_status: active connections, accepts, handled, requests, reading, writing, waiting."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("Active connections:"):
        return None
    try:
        out = {"active": int(lines[0].split(":")[1])}
        accepts, handled, requests = (int(v) for v in lines[2].split())
        out.update(accepts=accepts, handled=handled, requests=requests)
    except (IndexError, ValueError):
        return None
    return out


def judge_json_stats(data: dict[str, Any], required: tuple[str, ...], ms: float) -> Verdict:
    """A gateway's stats as a JSON object (not Prometheus text): its numbers, required keys present."""
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckFailed(f"JSON stats with {len(data)} fields, missing: {', '.join(missing)}",
                          "the gateway's stats lack what [metrics] gateway_required expects")
    numbers = [f"{k} {v:g}" for k, v in data.items()
               if isinstance(v, int | float) and not isinstance(v, bool)]
    shown = ", ".join(numbers[:8]) + (" …" if len(numbers) > 8 else "")
    return Verdict("ok", f"200 · JSON stats: {shown or f'{len(data)} fields'} · {ms:.0f} ms", "",
                   {"fields": len(data)})


async def check_gateway_metrics(ctx: AuditContext) -> Verdict:
    t0 = time.monotonic()
    c = ctx.config
    url = c.url(c.metrics)
    resp, body = await ctx.get(url, headers=dict(c.metrics_headers))
    if resp.status == 404 and c.gateway_metrics is None:
        return not_served(c.metrics, "[metrics] gateway")
    if resp.status in (401, 403):
        hint = ("the endpoint refused the [metrics] headers: check the key" if c.metrics_headers else
                "the endpoint wants credentials: set [metrics] headers, "
                "e.g. { \"X-Stats-Key\" = \"${STATS_KEY}\" }")
        raise CheckFailed(f"HTTP {resp.status} from {url}: {body_text(body)}", hint)
    if resp.status != 200:
        raise CheckFailed(f"HTTP {resp.status} from {url}", "expose the gateway's Prometheus metrics")
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return judge_json_stats(data, c.gateway_metrics_required, _ms(t0))
    families, values = parse_prometheus(text)
    missing = [m for m in c.gateway_metrics_required if m not in families]
    if not families:
        raise CheckFailed(f"HTTP 200 but neither Prometheus metrics nor a JSON object in the body from {url}")
    if missing:
        raise CheckFailed(f"{len(families)} metric families, missing: {', '.join(missing)}",
                          "the gateway's metrics lack what dashboards and alerts expect")
    shown = [f"{n} {values[n]:g}" for n in ("gateway_workers_alive", "gateway_redis_connected",
                                                "gateway_cluster_nodes") if n in values]
    return Verdict("ok", f"200 · {len(families)} metric families" + "".join(f" · {s}" for s in shown)
                   + f" · {_ms(t0):.0f} ms", "", {"families": len(families)})


async def check_proxy_metrics(ctx: AuditContext) -> Verdict:
    t0 = time.monotonic()
    url = ctx.config.proxy_metrics
    resp, body = await ctx.get(url)
    if resp.status != 200:
        raise CheckFailed(f"HTTP {resp.status} from {url}", "expose the proxy's metrics/status endpoint")
    text = body.decode("utf-8", "replace")
    stub = parse_stub_status(text)
    if stub is not None:
        return Verdict("ok", f"stub_status · {stub['active']} active connections · {stub['requests']} "
                             f"requests served · {_ms(t0):.0f} ms", "", stub)
    families, _ = parse_prometheus(text)
    if not families:
        raise CheckFailed(f"HTTP 200 from {url} but neither stub_status nor Prometheus text")
    return Verdict("ok", f"200 · {len(families)} metric families · {_ms(t0):.0f} ms", "",
                   {"families": len(families)})
