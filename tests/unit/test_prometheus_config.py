"""[prometheus] in a stack config: parsed, shifted with the port offset, a prometheus.yml promtool accepts;
the preflight's Prometheus check lets the tester's job be down; the services' /metrics text; what a
starting stack waits for (each target scraped once)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest.preflight.checks_backends import judge_targets
from loadtest.preflight.config import config_from_stack
from sut import prometheus as prom
from sut.config import StackConfigError, load_stack_config, stack_config_to_doc

pytestmark = pytest.mark.unit


def test_observed_config_enables_prometheus_and_offsets_shift_it() -> None:
    assert not load_stack_config("default").prometheus.enabled  # off by default: no test pays for it
    cfg = load_stack_config("observed").with_port_offset(1100)
    assert cfg.prometheus.enabled and cfg.prometheus.port == 9190 + 1100
    assert cfg.prometheus.tester_port == 9464 + 1100
    jobs = prom.scrape_jobs(cfg, ["stt", "tts"])
    expected = {"gateway": ["127.0.0.1:4100"], "stt": ["127.0.0.1:9102"], "tts": ["127.0.0.1:9103"],
                "tester": ["127.0.0.1:10564"]}
    assert {job: jobs[job] for job in expected} == expected  # (+ the edge proxy's own job, if it has one)
    assert "translation" not in jobs  # only the services given (a fault's missing service is not scraped)
    assert f"--web.listen-address=127.0.0.1:{9190 + 1100}" in prom.argv(cfg, Path("/state"))


def test_bad_values_name_their_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[prometheus]\nenabled = true\nretention = "forever"\n')
    with pytest.raises(StackConfigError, match="prometheus.retention"):
        load_stack_config(path)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")
def test_promtool_accepts_the_generated_config(tmp_path: Path) -> None:
    cfg = load_stack_config("observed").with_port_offset(1100)
    path = prom.write_config(cfg, tmp_path, ["stt", "translation", "tts"])
    proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_preflight_audits_the_stacks_prometheus_with_the_tester_optional(tmp_path: Path) -> None:
    cfg = load_stack_config("observed").with_port_offset(1100)
    (tmp_path / "stack.json").write_text(json.dumps(stack_config_to_doc(cfg)))
    (tmp_path / "pids.json").write_text(json.dumps({"target_url": "https://localhost:9543", "processes": []}))
    (tmp_path / "ca.pem").write_text("")
    target = config_from_stack(tmp_path).prometheus
    assert target is not None and target.url == "http://127.0.0.1:10290"
    assert set(target.jobs) == {"gateway", "stt", "translation", "tts"}
    assert target.optional_jobs == ("tester",)
    targets = [{"labels": {"job": "gateway", "instance": "a"}, "health": "up"},
               {"labels": {"job": "tester", "instance": "b"}, "health": "down", "lastError": "refused"}]
    problems, facts = judge_targets(targets, ("gateway",), ("tester",))
    assert problems == [] and "tester down (optional)" in facts
    problems, _ = judge_targets(targets, ("gateway",))
    assert problems and "tester" in problems[0]


def test_a_stack_waits_until_each_target_was_scraped_once() -> None:
    jobs = {"gateway": ["127.0.0.1:3000", "127.0.0.1:3001"], "traefik": ["127.0.0.1:8080"]}
    gw0 = {"labels": {"job": "gateway", "instance": "127.0.0.1:3000"}, "health": "up"}
    gw1 = {"labels": {"job": "gateway", "instance": "127.0.0.1:3001"}, "health": "down"}
    fresh = {"labels": {"job": "traefik", "instance": "127.0.0.1:8080"}, "health": "unknown"}
    assert prom.unscraped([], jobs) == ["gateway 127.0.0.1:3000", "gateway 127.0.0.1:3001",
                                        "traefik 127.0.0.1:8080"]  # not discovered yet
    assert prom.unscraped([gw0, gw1, fresh], jobs) == ["traefik 127.0.0.1:8080"]
    assert prom.unscraped([gw0, gw1, {**fresh, "health": "up"}], jobs) == []  # down is scraped


def test_services_serve_their_pool_as_prometheus_text() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sut.services.common import ServiceState, WorkerPool, _PoolCollector

    pool = WorkerPool(4)
    pool.served = 7
    registry = CollectorRegistry()
    registry.register(_PoolCollector(ServiceState("tts", "model", pool)))
    text = generate_latest(registry).decode()
    assert 'service_workers{engine="model",service="tts"} 4.0' in text
    assert 'service_requests_total{engine="model",service="tts"} 7.0' in text
    assert 'service_queued_requests{engine="model",service="tts"} 0.0' in text
