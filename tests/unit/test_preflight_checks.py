"""Preflight verdicts as pure functions (certificates, routes, /health, coordination, media, smoke,
Prometheus targets), the parsers (Prometheus text, stub_status, RESP), and the Prometheus check
against an in-process stand-in for its HTTP API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from loadtest.preflight import checks_backends, checks_http, checks_socketio
from loadtest.preflight.checks_media import judge_media, judge_smoke
from loadtest.preflight.config import PrometheusTarget, Route, config_for_target
from loadtest.preflight.context import AuditContext, read_body
from loadtest.preflight.media_probe import MediaOutcome
from loadtest.preflight.model import CheckFailed, run_check
from loadtest.timeline import UtteranceTimeline
from sut.pki import ensure_pki

pytestmark = pytest.mark.unit


def cert(tmp_path: Path, only_name: str = "") -> x509.Certificate:
    paths = ensure_pki(tmp_path, "localhost", ["127.0.0.1"], only_name=only_name)
    return x509.load_pem_x509_certificate(paths.server_cert.read_bytes())


def test_certificate_verdicts(tmp_path: Path) -> None:
    good = cert(tmp_path)
    ok = checks_http.judge_certificate(good, "localhost", 14, None, False)
    assert ok.status == "ok" and "issuer 'speechload local CA'" in ok.evidence
    assert "days to expiry" in ok.evidence
    wrong = cert(tmp_path, only_name="gateway.other.example")
    assert checks_http.cert_names(wrong) == ["gateway.other.example"]
    bad = checks_http.judge_certificate(wrong, "localhost", 14, "Hostname mismatch", True)
    assert bad.status == "fail" and bad.details["failure"] == "hostname"
    assert "gateway.other.example" in bad.evidence and "'localhost'" in bad.evidence
    chain = checks_http.judge_certificate(good, "localhost", 14, "unable to get local issuer", False)
    assert chain.status == "fail" and chain.details["failure"] == "chain" and "not trusted" in chain.evidence
    soon = checks_http.judge_certificate(good, "localhost", 900, None, False)  # 825-day cert, 900-day margin
    assert soon.status == "warn" and "< 900" in soon.evidence
    assert checks_http.days_left(good, dt.datetime.now(dt.UTC) + dt.timedelta(days=826)) < 0


def test_route_verdicts() -> None:
    https, http = Route("frontend", "https://h/"), Route("redirect", "http://h/")
    assert checks_http.judge_route(https, 200, "HTTP/1.1", None, 12).status == "ok"
    assert checks_http.judge_route(https, 502, "HTTP/1.1", None, 12).status == "fail"
    assert checks_http.judge_route(Route("x", "https://h/", 204), 200, "HTTP/1.1", None, 1).status == "fail"
    moved = checks_http.judge_route(http, 301, "HTTP/1.1", "https://h/", 3)
    assert moved.status == "ok" and "301 → https://h/" in moved.evidence
    plain = checks_http.judge_route(http, 200, "HTTP/1.1", None, 3)
    assert plain.status == "fail" and "no redirect to HTTPS" in plain.evidence
    assert checks_http.judge_route(http, 302, "HTTP/1.1", "http://other/", 3).status == "fail"


def test_health_verdicts() -> None:
    healthy = {"status": "ok", "workers": [{"pid": 1, "alive": True}],
               "backends": {"stt": "ok", "translation": "ok", "tts": "ok"}}
    ok = checks_http.judge_health(200, healthy, 5)
    assert ok.status == "ok" and "1/1 media workers alive" in ok.evidence
    degraded = checks_http.judge_health(200, {**healthy, "status": "degraded",
                                              "backends": {"stt": "ok", "tts": "down"}}, 5)
    assert degraded.status == "warn" and "backend tts down" in degraded.evidence
    assert checks_http.judge_health(502, None, 5).status == "fail"
    assert checks_http.judge_health(200, {"uptime": 1}, 5).status == "warn"
    assert checks_http.judge_health(200, {"status": "up"}, 5).status == "ok"  # another gateway's word


def test_json_stats_and_socketio_refusals() -> None:
    stats = checks_http.judge_json_stats({"rooms": 2, "peers": 4, "name": "sfu"}, ("rooms",), 3)
    assert stats.status == "ok" and "rooms 2, peers 4" in stats.evidence
    with pytest.raises(CheckFailed, match="missing: consumers"):
        checks_http.judge_json_stats({"rooms": 2}, ("consumers",), 3)
    # CONNECT_ERROR packets: the server's message, with or without a namespace prefix.
    assert checks_socketio._refusal_text('44/sfu,{"message":"Origin not allowed"}', "/sfu") == \
        "Origin not allowed"
    assert checks_socketio._refusal_text('44{"message":"invalid token: expired"}', "/") == \
        "invalid token: expired"
    assert checks_socketio._connect_packet("/sfu", {}) == "40/sfu,"
    assert checks_socketio._connect_packet("/", {"token": "t"}) == '40{"token": "t"}'


def test_coordination_verdicts_name_the_standalone_trap() -> None:
    cluster = {"redis": {"configured": "redis:6379", "connected": True, "mode": "cluster", "nodes": 2,
                         "pubsubRoundTripMs": 0.7}}
    assert checks_http.judge_coordination(cluster).status == "ok"
    standalone = checks_http.judge_coordination({"redis": {
        "configured": "redis_gateway:6379", "connected": False, "mode": "standalone",
        "error": "getaddrinfo ENOTFOUND redis_gateway"}})
    assert standalone.status == "fail"
    assert "STANDALONE" in standalone.evidence and "ENOTFOUND redis_gateway" in standalone.evidence
    assert "standalone" in standalone.hint and "no multi-node room coordination" in standalone.hint
    assert checks_http.judge_coordination({"redis": {"configured": None}}).status == "skip"
    assert checks_http.judge_coordination({"status": "ok"}).status == "skip"


def test_prometheus_text_and_stub_status_parsers() -> None:
    families, values = checks_http.parse_prometheus(
        "# HELP a_total A\n# TYPE a_total counter\na_total 3\n"
        'b_seconds_bucket{le="0.1"} 1\nb_seconds_count 4\nc{x="1 2"} 7\n')
    assert {"a_total", "b_seconds_bucket", "b_seconds_count", "c"} <= families
    assert values["a_total"] == 3 and values["b_seconds_count"] == 4 and values["c"] == 7
    stub = checks_http.parse_stub_status(
        "Active connections: 2 \nserver accepts handled requests\n 10 10 31 \n"
        "Reading: 0 Writing: 1 Waiting: 1 \n")
    assert stub == {"active": 2, "accepts": 10, "handled": 10, "requests": 31}
    assert checks_http.parse_stub_status("# TYPE x gauge\nx 1\n") is None


def test_media_verdicts_need_packets_and_the_right_candidate() -> None:
    out = MediaOutcome(steps_ms={"ice": 12.0, "dtls": 20.0}, probe_sent=50, probe_received=50, rtp_sent=50,
                       rtp_received=50, candidate_type="host", local_candidate="host 127.0.0.1:5",
                       remote_candidate="host 127.0.0.1:6")
    ok = judge_media(out, relay=False)
    assert ok.status == "ok" and "50/50 probe packets" in ok.evidence and "RTP stats: sent 50" in ok.evidence
    assert ok.details["probe_received"] == 50
    assert judge_media(out, relay=True).status == "fail"  # relay forced, but the pair is host
    out.probe_received = 10
    assert judge_media(out, relay=False).status == "fail"


def test_smoke_verdicts() -> None:
    tl = UtteranceTimeline("u-1", "c", 1, "cards-001", "en", "es", 0.0, 0.0, t_speech_end=1.0,
                           t_transcript=1.4, t_translation=1.5, t_tts_event=1.9, t_audio_onset=2.0,
                           transcript="ten of clubs", translation="Diez de tréboles.")
    ok = judge_smoke(tl, 150.0)
    assert ok.status == "ok" and "e2e 1000 ms" in ok.evidence and "'ten of clubs'" in ok.evidence
    failed = UtteranceTimeline("u-2", "c", 1, "cards-001", "en", "es", 0.0, 0.0, t_speech_end=1.0,
                               t_transcript=1.4, t_translation=1.5, error="connect ECONNREFUSED",
                               error_stage="tts")
    verdict = judge_smoke(failed, 150.0)
    assert verdict.status == "fail" and verdict.evidence.startswith("error at tts: connect ECONNREFUSED")
    sfu = UtteranceTimeline("u-3", "c", 1, "cards-001", "en", "es", 0.0, 0.0, t_send_start=0.5,
                            t_speech_end=1.0, t_sfu_arrival=0.502, mode="sfu")
    heard = judge_smoke(sfu, 90.0)  # a plain SFU: our voice back through it is the whole pipeline
    assert heard.status == "ok" and heard.evidence == "connect 90 ms · sfu 2 ms", heard.evidence


async def test_resp_encoding_and_replies() -> None:
    assert checks_backends.encode_command("PING") == b"*1\r\n$4\r\nPING\r\n"
    reader = asyncio.StreamReader()
    reader.feed_data(b"+PONG\r\n:1\r\n$5\r\nhello\r\n")
    reader.feed_data(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n-ERR nope\r\n")
    reader.feed_eof()
    assert await checks_backends.read_reply(reader) == "PONG"
    assert await checks_backends.read_reply(reader) == 1
    assert await checks_backends.read_reply(reader) == "hello"
    assert await checks_backends.read_reply(reader) == ["message", "c", "p"]
    with pytest.raises(checks_backends.RespError, match="ERR nope"):
        await checks_backends.read_reply(reader)


async def test_a_body_in_pieces_is_read_whole_up_to_the_limit() -> None:
    # A gateway's /metrics relayed by a proxy arrives in pieces; a check that looked at the first
    # piece only reported families "missing" that came in the second.
    reader = aiohttp.StreamReader(mock.Mock(), 1 << 16, loop=asyncio.get_running_loop())
    reader.feed_data(b"# TYPE gateway_peers gauge\n")
    body = asyncio.create_task(read_body(reader, 1 << 20))
    await asyncio.sleep(0)  # one loop turn: the first piece is taken and the reader waits for more
    assert not body.done()
    reader.feed_data(b"# TYPE gateway_uptime_seconds gauge\n")
    reader.feed_eof()
    families, _ = checks_http.parse_prometheus((await body).decode())
    assert families == {"gateway_peers", "gateway_uptime_seconds"}

    capped = aiohttp.StreamReader(mock.Mock(), 1 << 16, loop=asyncio.get_running_loop())
    capped.feed_data(b"x" * 10)
    capped.feed_data(b"y" * 10)
    assert await read_body(capped, 15) == b"x" * 10 + b"y" * 5  # stops at the limit, no EOF needed


async def test_redis_name_that_does_not_resolve_says_standalone() -> None:
    from loadtest.preflight.config import RedisTarget

    ctx = AuditContext.open(config_for_target("https://localhost:1"))
    try:
        target = RedisTarget("redis-gateway.invalid")
        result = await run_check("backends.redis", "Backends", "Redis",
                                 lambda: checks_backends.check_redis(ctx, target), 5)
    finally:
        await ctx.close()
    assert result.status == "fail"
    assert "'redis-gateway.invalid' does not resolve" in result.evidence
    assert "the gateway would run standalone" in result.evidence


def test_prometheus_targets_verdict() -> None:
    targets = [{"labels": {"job": "gateway", "instance": "gw:3000"}, "health": "up"},
               {"labels": {"job": "tts", "instance": "tts-1:8003"}, "health": "down",
                "lastError": "connection refused"}]
    problems, facts = checks_backends.judge_targets(targets, ("gateway", "traefik"))
    assert "no target for job 'traefik' (0 replicas scraped)" in problems
    assert any(p.startswith("tts tts-1:8003 down: connection refused") for p in problems)
    assert facts[0] == "1/2 targets up"


def test_targets_not_scraped_yet_are_pending_not_down() -> None:
    targets = [{"labels": {"job": "gateway", "instance": "gw:3000"}, "health": "up"},
               {"labels": {"job": "traefik", "instance": "proxy:8080"}, "health": "unknown",
                "scrapeInterval": "15s", "lastError": ""},
               {"labels": {"job": "tester", "instance": "t:9646"}, "health": "unknown"}]
    problems, facts = checks_backends.judge_targets(targets, ("gateway", "traefik"), ("tester",))
    assert problems == [] and "tester unknown (optional)" in facts
    pending = checks_backends.unscraped(targets, ("tester",))
    assert [t["labels"]["job"] for t in pending] == ["traefik"]
    assert checks_backends.describe_unscraped(pending) == "traefik proxy:8080 (every 15s)"
    assert checks_backends.first_scrape_wait_s(pending, 4.0) == 4.0  # two intervals, within the budget
    assert checks_backends.first_scrape_wait_s(
        [{"scrapeInterval": "500ms"}, {"scrapeInterval": "1s"}], 4.0) == 2.0
    assert checks_backends.first_scrape_wait_s([], 4.0) == 4.0 and checks_backends.first_scrape_wait_s(
        [{"scrapeInterval": "1s"}], -1.0) == 0.0
    assert [checks_backends.duration_s(d) for d in ("500ms", "15s", "1m30s", "2h", "15", "1x", "")] == [
        0.5, 15, 90, 7200, None, None, None]


async def prometheus_stub(targets: list[dict[str, object]], series: set[str],
                          later: list[dict[str, object]] | None = None, after: int = 0) -> web.AppRunner:
    """A Prometheus API serving `targets`, or `later` from read number `after` + 1 on."""
    reads = 0

    async def api_targets(_: web.Request) -> web.Response:
        nonlocal reads
        reads += 1
        active = later if later is not None and reads > after else targets
        return web.json_response({"status": "success", "data": {"activeTargets": active}})

    async def api_query(request: web.Request) -> web.Response:
        name = request.query["query"].split('"')[1]
        result = [{"metric": {}, "value": [0, "1"]}] if name in series else []
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/targets", api_targets)
    app.router.add_get("/api/v1/query", api_query)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_prometheus_check_against_its_api() -> None:
    up = [{"labels": {"job": "gateway", "instance": "gw:3000"}, "health": "up"}]
    runner = await prometheus_stub(up, {"gateway_uptime_seconds"})
    port = runner.addresses[0][1]
    ctx = AuditContext.open(config_for_target("https://localhost:1"))
    try:
        target = PrometheusTarget(f"http://127.0.0.1:{port}", ("gateway",), ("gateway_uptime_seconds",))
        ok = await checks_backends.check_prometheus(ctx, target)
        assert ok.status == "ok" and "1/1 targets up" in ok.evidence and "1/1 expected metrics" in ok.evidence
        missing = PrometheusTarget(f"http://127.0.0.1:{port}", ("gateway", "traefik"), ("nginx_up",))
        with pytest.raises(CheckFailed) as caught:
            await checks_backends.check_prometheus(ctx, missing)
        assert "job 'traefik'" in caught.value.evidence and "no series for nginx_up" in caught.value.evidence
    finally:
        await ctx.close()
        await runner.cleanup()
    ctx = AuditContext.open(config_for_target("https://localhost:1"))
    try:
        with pytest.raises(CheckFailed, match="Prometheus API unreachable"):
            await checks_backends.check_prometheus(ctx, PrometheusTarget(f"http://127.0.0.1:{port}"))
    finally:
        await ctx.close()


async def test_prometheus_check_waits_for_a_first_scrape_within_its_timeout() -> None:
    up = {"labels": {"job": "gateway", "instance": "gw:3000"}, "health": "up", "scrapeInterval": "200ms"}
    fresh = {"labels": {"job": "traefik", "instance": "proxy:8080"}, "health": "unknown",
             "scrapeInterval": "200ms"}
    scraped = {**fresh, "health": "up"}
    ctx = AuditContext.open(config_for_target("https://localhost:1"))
    runner = await prometheus_stub([up, fresh], set(), later=[up, scraped], after=2)
    try:
        target = PrometheusTarget(f"http://127.0.0.1:{runner.addresses[0][1]}", ("gateway",))
        verdict = await checks_backends.check_prometheus(ctx, target)
        assert verdict.status == "ok" and "2/2 targets up" in verdict.evidence
    finally:
        await runner.cleanup()
    runner = await prometheus_stub([up, fresh], set())  # never scraped: said, not failed
    try:
        target = PrometheusTarget(f"http://127.0.0.1:{runner.addresses[0][1]}", ("gateway",))
        t0 = time.monotonic()
        verdict = await checks_backends.check_prometheus(ctx, target)
        assert verdict.status == "warn"
        assert "not scraped yet: traefik proxy:8080 (every 200ms)" in verdict.evidence
        assert 0.4 <= time.monotonic() - t0 < ctx.config.timeout_s  # two intervals waited, within the check
        down = {**up, "health": "down", "lastError": "refused"}
        stub_down = await prometheus_stub([down, fresh], set())
        try:
            target = PrometheusTarget(f"http://127.0.0.1:{stub_down.addresses[0][1]}", ("gateway",))
            with pytest.raises(CheckFailed) as caught:
                await checks_backends.check_prometheus(ctx, target)
            assert "gateway gw:3000 down: refused" in caught.value.evidence
            assert "not scraped yet: traefik" in caught.value.evidence
        finally:
            await stub_down.cleanup()
    finally:
        await ctx.close()
        await runner.cleanup()


def test_certificate_fixture_is_pem(tmp_path: Path) -> None:
    # Guards the helper above: the server cert is the proxy's, serialisable as the proxy serves it.
    assert cert(tmp_path).public_bytes(serialization.Encoding.PEM).startswith(b"-----BEGIN CERTIFICATE")
    assert json.dumps(checks_http.judge_certificate(cert(tmp_path), "localhost", 14, None, False).details)
