"""`loadtest preflight` against the real reference stack (behind Traefik, its default edge): a healthy stack
is all ✅ (Prometheus, which the stack does not run, is reported as not configured) -- Traefik's routers
included, read from its API --, each broken variant turns exactly the expected checks ❌/⚠️ naming the
cause, and the media and TURN checks really pass packets.

One stack start per variant, on port offsets 410-430 (clear of the other integration tests).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.preflight.audit import run_preflight_sync
from loadtest.preflight.command import preflight_before_run
from loadtest.preflight.config import config_from_stack
from loadtest.preflight.model import CheckResult, PreflightReport
from loadtest.preflight.report import to_markdown
from sut.stack import StackInfo
from tests.integration.stackrun import running_stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOT_CONFIGURED = {"metrics.prometheus"}  # the reference stack runs no Prometheus: a skip, stated as such
PACKETS = re.compile(
    r"(\d+)/(\d+) probe packets back through the SFU \(RTP stats: sent (\d+), received (\d+)")


def not_ok(report: PreflightReport) -> dict[str, str]:
    return {c.key: c.status for c in report.checks if c.status != "ok"}


def table(report: PreflightReport) -> str:
    return "\n".join(f"{c.icon} {c.key}: {c.evidence}" for c in report.checks)


def assert_packets_passed(check: CheckResult, candidate: str) -> None:
    match = PACKETS.search(check.evidence)
    assert match, check.evidence
    received, sent, rtp_sent, rtp_received = (int(g) for g in match.groups())
    assert sent == 50 and rtp_sent == 50, check.evidence  # one second of 20 ms packets
    assert received >= 48 and rtp_received >= 48, check.evidence
    assert check.details["candidate_type"] == candidate, check.details
    assert check.details["listener_candidate_type"] == candidate, check.details
    for step in ("signaling", "join", "transports", "produce", "consume", "ice", "dtls", "audio"):
        assert check.details["steps_ms"][step] >= 0, step


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    with running_stack("default", tmp_path_factory.mktemp("stack"), port_offset=410) as info:
        yield info


def test_healthy_stack_is_all_ok_in_under_ten_seconds(healthy: StackInfo) -> None:
    report = run_preflight_sync(config_from_stack(healthy.state_dir))
    print(f"\npreflight of the healthy reference stack: {report.elapsed_s:.2f} s, {report.summary_line()}")
    print(to_markdown(report))
    assert not_ok(report) == {key: "skip" for key in NOT_CONFIGURED}, table(report)
    assert report.exit_code() == 0
    assert report.elapsed_s < 10.0
    keys = {c.key for c in report.checks}
    port, turn = healthy.config.proxy.https_port, healthy.config.turn.port
    tls = [f"routes.tls[{name}.speechload.test:{port}]" for name in ("webrtc", "www", "grafana")]
    routers = [f"traefik.router[{name}@file]" for name in ("gateway", "www", "grafana")]
    for expected in (*tls, *routers, "traefik.api", "routes.route[frontend]", "routes.route[grafana]",
                     "routes.route[http → https]", "gateway.health",
                     "gateway.coordination", "gateway.socketio-polling", "gateway.socketio-websocket",
                     "media.webrtc", f"turn.allocation[turn:127.0.0.1:{turn}?transport=udp]",
                     f"turn.relay-media[turn:127.0.0.1:{turn}?transport=udp]", "backends.stt",
                     "backends.translation", "backends.tts", "backends.redis", "metrics.gateway",
                     "metrics.proxy", "pipeline.smoke"):
        assert expected in keys, expected
    turn_url = f"turn:127.0.0.1:{turn}?transport=udp"
    assert_packets_passed(report.check("media.webrtc"), "host")
    assert_packets_passed(report.check(f"turn.relay-media[{turn_url}]"), "relay")
    assert "relay round trip" in report.check(f"turn.allocation[{turn_url}]").evidence
    assert "cluster mode" in report.check("gateway.coordination").evidence
    assert "pub/sub round trip" in report.check("backends.redis").evidence
    gateway = report.check("traefik.router[gateway@file]").evidence
    assert "Host(`webrtc.speechload.test`)" in gateway and f"websecure :{port}" in gateway, gateway
    assert "TLS" in gateway and "1/1 servers UP" in gateway and "WebSocket upgrade 101" in gateway, gateway
    smoke = report.check("pipeline.smoke").details
    assert smoke["status"] == "ok"
    assert all(smoke["stages_ms"][s] > 0 for s in ("stt", "translation", "tts", "e2e"))


def test_cli_writes_json_and_markdown_and_exits_zero(healthy: StackInfo, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "loadtest.preflight", "--state-dir", str(healthy.state_dir), "--strict",
            "--json", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "p.md"), "--no-smoke"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout and "Preflight audit" in done.stdout
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["exit_code"] == 0 and doc["summary"]["fail"] == 0 and doc["summary"]["warn"] == 0
    assert "pipeline.smoke" not in {c["key"] for c in doc["checks"]}
    assert (tmp_path / "p.md").read_text().startswith(f"### Preflight audit: {healthy.target_url}")


def test_before_run_hook_writes_into_the_run_dir(healthy: StackInfo, tmp_path: Path) -> None:
    report = preflight_before_run(healthy.target_url, str(healthy.ca_cert), state_dir=healthy.state_dir,
                                  out_dir=tmp_path, media=False, smoke=False)
    assert report.exit_code() == 0, table(report)
    assert json.loads((tmp_path / "preflight.json").read_text())["exit_code"] == 0
    assert (tmp_path / "preflight.md").is_file()


Expectation = dict[str, tuple[str, tuple[str, ...]]]  # key → (status, phrases its evidence must contain)


def tls_key(info: StackInfo, name: str = "webrtc") -> str:
    return f"routes.tls[{name}.speechload.test:{info.config.proxy.https_port}]"


def turn_key(info: StackInfo, kind: str) -> str:
    return f"turn.{kind}[turn:127.0.0.1:{info.config.turn.port}?transport=udp]"


VARIANTS: list[tuple[str, int, Callable[[StackInfo], Expectation]]] = [
    ("broken-redis-host", 415, lambda info: {
        "backends.redis": ("fail", ("'redis_gateway' does not resolve", "the gateway would run standalone")),
        "gateway.coordination": ("fail", ("STANDALONE", "redis_gateway", "ENOTFOUND")),
    }),
    ("broken-tts-down", 420, lambda info: {
        "backends.tts": ("fail", ("connection refused", f":{info.config.tts.port}")),
        "gateway.health": ("warn", ("degraded", "backend tts down")),
        "pipeline.smoke": ("fail", ("error at tts", "ECONNREFUSED")),
    }),
    ("broken-cert", 425, lambda info: {  # every host name Traefik serves gets the misissued certificate
        tls_key(info, name): ("fail", ("certificate is for gateway.other.example",
                                       f"not valid for host '{name}.speechload.test'"))
        for name in ("webrtc", "www", "grafana")
    }),
    ("broken-turn-auth", 430, lambda info: {
        turn_key(info, "allocation"): ("fail", ("401 Unauthorized", "user 'speechload'")),
        turn_key(info, "relay-media"): ("skip", ("no allocation",)),
    }),
]


@pytest.mark.parametrize(("variant", "offset", "expect"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_broken_variant_fails_exactly_the_expected_checks(
        variant: str, offset: int, expect: Callable[[StackInfo], Expectation], tmp_path: Path) -> None:
    with running_stack(variant, tmp_path / "stack", port_offset=offset) as info:
        report = run_preflight_sync(config_from_stack(info.state_dir))
    print(f"\n{variant}: {report.summary_line()}\n{table(report)}")
    expected = expect(info)
    wanted = {key: status for key, (status, _) in expected.items()}
    wanted.update({key: "skip" for key in NOT_CONFIGURED})
    assert not_ok(report) == wanted, table(report)
    for key, (_, phrases) in expected.items():
        evidence = report.check(key).evidence
        for phrase in phrases:
            assert phrase in evidence, (key, phrase, evidence)
    assert report.exit_code() == 1
    if variant == "broken-cert":
        assert any("TLS relaxed" in n for n in report.notes)  # the rest was still audited, and passed
        assert_packets_passed(report.check("media.webrtc"), "host")
