"""Backends, when reachable from the tester (e.g. from inside the cluster): the speech services' health
endpoints, Redis under the gateway's configured host name (PING and a pub/sub round trip), and
Prometheus (targets up, expected metrics present)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from typing import Any
from urllib.parse import quote

from loadtest.preflight.checks_http import STANDALONE_HINT
from loadtest.preflight.config import PrometheusTarget, RedisTarget
from loadtest.preflight.context import AuditContext
from loadtest.preflight.model import CheckFailed, Verdict, describe_error, short

UNSCRAPED = "unknown"  # Prometheus's health of a target before its first scrape
FIRST_SCRAPE_MARGIN_S = 1.0  # of the check's timeout, kept for the metric queries after the wait
FIRST_SCRAPE_POLL_S = 0.25
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


async def check_backend(ctx: AuditContext, name: str, url: str) -> Verdict:
    t0 = time.monotonic()
    try:
        resp, body = await ctx.get(url)
    except Exception as exc:
        hint = f"the {name} service is down or unreachable: check its replicas and its route"
        raise CheckFailed(f"{describe_error(exc)} ({url})", hint) from None
    ms = _ms(t0)
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    status = data.get("status") if isinstance(data, dict) else None
    facts = [f"HTTP {resp.status}"]
    if status is not None:
        facts.append(f"status {status}")
    if isinstance(data, dict):
        facts += [f"{k} {data[k]}" for k in ("engine", "workers", "busy", "queued") if k in data]
    line = " · ".join(facts) + f" · {ms:.0f} ms"
    if resp.status == 200 and status in (None, "ok", "up", "healthy"):
        return Verdict("ok", line, "", {"health": data})
    return Verdict("fail", line, f"the {name} service reports itself unhealthy", {"health": data})


# --------------------------------------------------------------------------- Redis (RESP, no dependency)

class RespError(Exception):
    pass


def encode_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """One RESP2 reply: simple string, error (raised), integer, bulk string or array."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await read_reply(reader) for _ in range(count)]
    raise RespError(f"unexpected reply {line[:40]!r}")


async def _redis_connection(target: RedisTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    if target.password:
        writer.write(encode_command("AUTH", target.password))
        await read_reply(reader)
    return reader, writer


async def check_redis(ctx: AuditContext, target: RedisTarget) -> Verdict:
    name = f"{target.host}:{target.port}"
    loop = asyncio.get_running_loop()
    try:
        await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CheckFailed(
            f"Redis host name '{target.host}' does not resolve ({exc.strerror}): the gateway would run "
            "standalone — no multi-node room coordination", STANDALONE_HINT) from None
    writers: list[asyncio.StreamWriter] = []
    try:
        t0 = time.monotonic()
        try:
            reader, writer = await _redis_connection(target)
        except OSError as exc:
            raise CheckFailed(f"Redis {name}: {describe_error(exc)}: the gateway would run standalone",
                              STANDALONE_HINT) from None
        writers.append(writer)
        writer.write(encode_command("PING"))
        pong = await read_reply(reader)
        ping_ms = _ms(t0)
        if pong != "PONG":
            raise CheckFailed(f"Redis {name} answered PING with {pong!r}")
        sub_reader, sub_writer = await _redis_connection(target)
        writers.append(sub_writer)
        channel = f"speechload:preflight:{uuid.uuid4().hex[:12]}"
        sub_writer.write(encode_command("SUBSCRIBE", channel))
        await read_reply(sub_reader)  # ["subscribe", channel, 1]
        t1 = time.monotonic()
        payload = uuid.uuid4().hex
        writer.write(encode_command("PUBLISH", channel, payload))
        receivers = await read_reply(reader)
        message = await read_reply(sub_reader)  # ["message", channel, payload]
        pubsub_ms = _ms(t1)
        if not (isinstance(message, list) and message[-1] == payload):
            raise CheckFailed(f"Redis {name}: pub/sub delivered {short(repr(message), 80)}")
        return Verdict("ok", f"PING {ping_ms:.1f} ms · pub/sub round trip {pubsub_ms:.1f} ms "
                             f"({receivers} subscriber) at {name}", "",
                       {"ping_ms": round(ping_ms, 2), "pubsub_ms": round(pubsub_ms, 2)})
    except RespError as exc:
        raise CheckFailed(f"Redis {name} refused: {exc}",
                          "check the Redis password (redis.password)") from None
    finally:
        for w in writers:
            w.close()


# --------------------------------------------------------------------------- Prometheus

def _job(target: dict[str, Any]) -> str:
    return str(target.get("labels", {}).get("job", "?"))


def judge_targets(targets: list[dict[str, Any]], jobs: tuple[str, ...],
                  optional: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(problems, facts) of Prometheus's active targets: every target up (an optional job's may be
    down: a fact, not a problem), every expected job present. Another job's target not scraped yet
    (health "unknown") is neither: `unscraped` names it."""
    problems: list[str] = []
    optional_down: list[str] = []
    by_job: dict[str, list[dict[str, Any]]] = {}
    for t in targets:
        by_job.setdefault(_job(t), []).append(t)
    for job in jobs:
        if job not in by_job:
            problems.append(f"no target for job '{job}' (0 replicas scraped)")
    for job, items in sorted(by_job.items()):
        for t in items:
            health = t.get("health")
            if health == "up" or (health == UNSCRAPED and job not in optional):
                continue
            if job in optional:
                optional_down.append(f"{job} {health} (optional)")
            else:
                instance = t.get("labels", {}).get("instance", "?")
                error = short(str(t.get("lastError", "")), 60)
                problems.append(f"{job} {instance} {health}: {error}")
    up = sum(1 for t in targets if t.get("health") == "up")
    return problems, [f"{up}/{len(targets)} targets up", f"jobs {', '.join(sorted(by_job)) or 'none'}",
                      *optional_down]


def unscraped(targets: list[dict[str, Any]], optional: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The targets, outside the optional jobs, that Prometheus has not scraped yet (it just started,
    or just found them)."""
    return [t for t in targets if t.get("health") == UNSCRAPED and _job(t) not in optional]


def describe_unscraped(targets: list[dict[str, Any]]) -> str:
    return ", ".join(f"{_job(t)} {t.get('labels', {}).get('instance', '?')} "
                     f"(every {t.get('scrapeInterval', '?')})" for t in targets)


def duration_s(text: str) -> float | None:
    """Seconds of a Prometheus duration ("500ms", "15s", "1m30s"); None if it is not one."""
    parts = re.findall(r"(\d+)(ms|y|w|d|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def first_scrape_wait_s(pending: list[dict[str, Any]], budget_s: float) -> float:
    """How long to wait for the first scrape of `pending`: twice their longest scrape interval
    (Prometheus spreads first scrapes over one), within `budget_s`."""
    intervals = [duration_s(str(t.get("scrapeInterval", ""))) for t in pending]
    longest = max((i for i in intervals if i is not None), default=budget_s)
    return max(0.0, min(2 * longest, budget_s))


async def read_targets(ctx: AuditContext, base: str) -> list[dict[str, Any]]:
    try:
        resp, body = await ctx.get(f"{base}/api/v1/targets?state=active")
    except Exception as exc:
        raise CheckFailed(f"Prometheus API unreachable at {base}: {describe_error(exc)}",
                          "is Prometheus running (replicas > 0)?") from None
    if resp.status != 200:
        raise CheckFailed(f"HTTP {resp.status} from {base}/api/v1/targets", "is this a Prometheus API URL?")
    targets: list[dict[str, Any]] = json.loads(body).get("data", {}).get("activeTargets", [])
    return targets


async def settled_targets(ctx: AuditContext, base: str, optional: tuple[str, ...]) -> list[dict[str, Any]]:
    """The active targets once each was scraped at least once, or as they are when the wait (bounded
    by the check's own timeout) ends. A Prometheus just started reports its targets "unknown" for up
    to one scrape interval: judging them then would fail a healthy deployment."""
    t0 = time.monotonic()
    targets = await read_targets(ctx, base)
    budget = ctx.config.timeout_s - FIRST_SCRAPE_MARGIN_S
    deadline = t0 + first_scrape_wait_s(unscraped(targets, optional), budget)
    while unscraped(targets, optional) and time.monotonic() < deadline:
        # Polling another process's state over HTTP: Prometheus has no event to await.
        await asyncio.sleep(min(FIRST_SCRAPE_POLL_S, max(0.0, deadline - time.monotonic())))
        targets = await read_targets(ctx, base)
    return targets


async def check_prometheus(ctx: AuditContext, target: PrometheusTarget) -> Verdict:
    t0 = time.monotonic()
    base = target.url.rstrip("/")
    targets = await settled_targets(ctx, base, target.optional_jobs)
    problems, facts = judge_targets(targets, target.jobs, target.optional_jobs)
    pending = unscraped(targets, target.optional_jobs)

    async def present(metric: str) -> bool:
        query = quote(f'count({{__name__="{metric}"}})')
        _, answer = await ctx.get(f"{base}/api/v1/query?query={query}")
        return bool(json.loads(answer).get("data", {}).get("result"))

    found = await asyncio.gather(*(present(m) for m in target.metrics))
    missing = [m for m, ok in zip(target.metrics, found, strict=True) if not ok]
    if missing:
        problems.append(f"no series for {', '.join(missing)}")
    if target.metrics:
        facts.append(f"{len(target.metrics) - len(missing)}/{len(target.metrics)} expected metrics present")
    line = " · ".join(facts) + f" · {_ms(t0):.0f} ms"
    waiting = f"not scraped yet: {describe_unscraped(pending)}"
    if problems:
        raise CheckFailed("; ".join([*problems, *([waiting] if pending else [])]) + f" ({line})",
                          "fix the scrape targets before trusting dashboards")
    if pending:
        return Verdict("warn", f"{waiting} ({line})",
                       "Prometheus has not scraped these since it started or found them: run again "
                       "after one scrape interval")
    return Verdict("ok", line)
