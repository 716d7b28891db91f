"""The reference stack as processes: start through the TLS proxy, refuse conflicts, stop leaving nothing.

Runs the real services, gateway (with its mediasoup worker) and Traefik (the default edge: host names
resolved to 127.0.0.1 by the client, tests/integration/edge_http.py) on shifted ports (offsets 150-170,
clear of the other integration tests). Needs `make setup` (worker built, gateway node_modules).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.resolve import StaticResolver
from sut.config import load_stack_config
from sut.pki import create_ca
from sut.procs import ProcessRecord, group_members, is_alive, port_in_use
from sut.stack import ReferenceStack, StackError, StackInfo, stack_status
from tests.integration.edge_http import EdgeClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def https_get(info: StackInfo, url: str, ca_cert: Path | None = None) -> tuple[int, bytes]:
    answer = EdgeClient(info, ca_cert=ca_cert).request(url)
    return answer.status, answer.body


def recorded(state_dir: Path) -> list[ProcessRecord]:
    doc = json.loads((state_dir / "pids.json").read_text())
    return [ProcessRecord.from_json(item) for item in doc["processes"]]


def assert_all_gone(records: list[ProcessRecord]) -> None:
    for record in records:
        assert not is_alive(record), f"{record.name} (pid {record.pid}) still running"
        assert not group_members(record.pid), f"{record.name}'s children still running"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackInfo, list[ProcessRecord]]]:
    state_dir = tmp_path_factory.mktemp("stack")
    ref = ReferenceStack(load_stack_config("default").with_port_offset(150), state_dir)
    info = ref.start()
    records = recorded(state_dir)
    yield info, records
    ref.stop()
    assert_all_gone(records)
    assert not (state_dir / "pids.json").exists()
    config = info.config
    for port in (config.proxy.https_port, config.gateway.port, config.stt.port, config.tts.port):
        assert not port_in_use(config.host, port), f"port {port} still taken after stop()"


def test_health_through_the_proxy_verifies_against_the_generated_ca(stack) -> None:
    info, records = stack
    assert info.target_url == "https://webrtc.speechload.test:8593"
    assert info.resolve_args[:2] == ["--resolve", "webrtc.speechload.test:127.0.0.1"]
    assert sorted(r.name for r in records) == [
        "gateway", "proxy", "redis", "stt", "translation", "tts", "turn", "www"]
    status, body = https_get(info, f"{info.target_url}/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok", body


def test_another_ca_is_refused(stack, tmp_path: Path) -> None:
    info, _ = stack
    create_ca(tmp_path / "other.pem", tmp_path / "other.key", common_name="not the stack's CA")
    with pytest.raises(urllib.error.URLError) as caught:
        https_get(info, f"{info.target_url}/health", tmp_path / "other.pem")
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_socketio_polling_handshake_through_the_proxy(stack) -> None:
    info, _ = stack
    status, body = https_get(info, f"{info.target_url}/socket.io/?EIO=4&transport=polling")
    assert status == 200
    text = body.decode()
    assert text.startswith("0"), text  # Engine.IO "open" packet
    handshake = json.loads(text[1:])
    assert handshake["sid"] and "websocket" in handshake["upgrades"]


async def test_websocket_upgrade_through_the_proxy(stack) -> None:
    info, _ = stack
    context = ssl.create_default_context(cafile=str(info.ca_cert))
    url = f"{info.target_url.replace('https', 'wss')}/socket.io/?EIO=4&transport=websocket"
    connector = aiohttp.TCPConnector(resolver=StaticResolver(dict(info.resolve)))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.ws_connect(url, ssl=context) as ws:
        first = await ws.receive_str(timeout=10)
        assert first.startswith("0") and "sid" in first


def test_metrics_through_the_proxy(stack) -> None:
    info, _ = stack
    status, body = https_get(info, f"{info.target_url}/metrics")
    assert status == 200 and b"# TYPE" in body
    # The gateway's event-loop delay: quantiles in seconds (an idle gateway's loop is not a minute late).
    delays = {s.labels["quantile"]: s.value for f in text_string_to_metric_families(body.decode())
              for s in f.samples if s.name == "gateway_event_loop_delay_seconds"}
    assert set(delays) == {"0.5", "0.9", "0.99", "1"}, delays
    assert all(0.0 <= v < 60.0 for v in delays.values()), delays
    assert delays["0.5"] <= delays["0.99"] <= delays["1"], delays


def test_status_and_refusals_while_running(stack, tmp_path: Path) -> None:
    info, _ = stack
    status = stack_status(info.state_dir)
    assert status.running and all(p.alive and p.healthy is not False for p in status.processes)
    refused = ReferenceStack(info.config, info.state_dir)
    with pytest.raises(StackError, match="already running"):
        refused.start()
    refused.stop()  # what a caller does after a failed start: must not stop the running stack
    assert stack_status(info.state_dir).running
    with pytest.raises(StackError, match=f"port {info.config.proxy.https_port} \\(proxy.https_port\\)"):
        ReferenceStack(info.config, tmp_path / "second").start()


def test_a_stage_down_is_not_started(state_dir: Path) -> None:
    ref = ReferenceStack(load_stack_config("tts-down").with_port_offset(160), state_dir)
    with ref as info:
        records = recorded(state_dir)
        assert sorted(r.name for r in records) == ["gateway", "proxy", "stt", "translation", "www"]
        health = json.loads(https_get(info, f"{info.target_url}/health")[1])
        assert health["backends"]["tts"] == "down"
    assert_all_gone(records)


def test_a_failing_process_is_named_with_its_log(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker binary that exits at once: the gateway cannot start its mediasoup worker.
    monkeypatch.setenv("MEDIASOUP_WORKER_BIN", "/bin/false")
    ref = ReferenceStack(load_stack_config("default").with_port_offset(160), state_dir)
    with pytest.raises(StackError, match=r"gateway (exited with code|not healthy)") as caught:
        ref.start(timeout_s=60)
    assert "gateway.log" in str(caught.value)
    assert not (state_dir / "pids.json").exists(), "a failed start must stop what it started"


def test_cli_up_status_down_across_processes(state_dir: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sut.stack_cli", *args, "--state-dir", str(state_dir)]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)

    up = cli("up", "--config", "default", "--port-offset", "170")
    assert up.returncode == 0, up.stderr
    assert "https://webrtc.speechload.test:8613" in up.stdout
    assert "--resolve webrtc.speechload.test:127.0.0.1" in up.stdout
    records = recorded(state_dir)
    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    down = cli("down")
    assert down.returncode == 0 and "stopped:" in down.stdout
    assert_all_gone(records)
    assert cli("status").returncode == 1
