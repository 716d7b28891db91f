"""The tester's live Prometheus series (loadtest/metrics.py): what a row becomes, served over HTTP."""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.metrics import STAGE_BUCKETS, LiveMetrics, MetricsOptions, serve

pytestmark = pytest.mark.unit


def row(conv: str, status: str = "ok", stage: str | None = None, e2e: float | None = 1200.0
        ) -> dict[str, Any]:
    return {"worker": "w0", "conversation": conv, "status": status, "status_stage": stage, "connect_ms": 80.0,
            "stt_ms": 400.0, "translation_ms": 100.0 if e2e else None, "tts_ms": 700.0 if e2e else None,
            "e2e_ms": e2e, "sfu_ms": None, "send_lateness_p99_ms": 3.0}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rows_become_series_with_run_and_scenario_labels() -> None:
    m = LiveMetrics("r1", "nightly")
    failed = (row("b", "timeout", "tts", None), row("b", "error", "translation", None))
    for r in (row("a"), row("a"), row("b"), *failed):
        m.observe(r)
    active = {"n": 3}
    m.track_active(lambda: active["n"])
    from prometheus_client import generate_latest

    got = samples(generate_latest(m.registry).decode())
    base = (("run_id", "r1"), ("scenario", "nightly"))

    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted((*base, *labels.items())))

    assert got[key("speechload_utterances_total", status="ok", stage="e2e")] == 3
    assert got[key("speechload_utterances_total", status="timeout", stage="tts")] == 1
    assert got[key("speechload_utterances_total", status="error", stage="translation")] == 1
    total = sum(v for (n, _), v in got.items() if n == "speechload_utterances_total")
    assert total == 5  # sent == ok + timeout + error
    assert got[key("speechload_stage_seconds_count", stage="stt")] == 5
    assert got[key("speechload_stage_seconds_count", stage="e2e")] == 3
    assert got[key("speechload_stage_seconds_bucket", stage="e2e", le="1.2")] == 3
    assert got[key("speechload_stage_seconds_bucket", stage="e2e", le="1.15")] == 0
    assert got[key("speechload_connect_seconds_count")] == 2  # once per conversation, as the report counts
    assert got[key("speechload_send_lateness_seconds_count")] == 5
    assert got[key("speechload_active_callers")] == 3
    assert STAGE_BUCKETS[:3] == (0.05, 0.1, 0.15) and STAGE_BUCKETS[39] == 2.0


def test_served_on_loopback_and_waits_for_a_final_scrape() -> None:
    exporter = serve("r2", MetricsOptions(port=0, scenario="s", linger_s=0.2))
    try:
        exporter.metrics.observe(row("a"))
        with urllib.request.urlopen(exporter.url, timeout=5) as resp:
            text = resp.read().decode()
        assert 'speechload_utterances_total{run_id="r2",scenario="s",stage="e2e",status="ok"} 1.0' in text
        assert exporter.url.startswith("http://127.0.0.1:")
        assert exporter.final_scrape() is False  # nobody scraped within linger_s: bounded, says so
        done = threading.Event()
        result: list[bool] = []

        def wait() -> None:
            result.append(exporter.metrics.scrapes.wait_next(10.0))
            done.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        for _ in range(200):  # a scraper, as Prometheus would be: until the waiter has seen one
            urllib.request.urlopen(exporter.url, timeout=5).read()
            if done.wait(0.05):
                break
        waiter.join(timeout=10)
        assert result == [True]
    finally:
        exporter.close()
