"""A 3-minute soak (bench/soak.py runs 30): under a constant load the tester's open fds and asyncio tasks
stay flat, its RSS does not climb grossly, and every utterance is accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import figures, soak_run
from tests.integration.stackrun import running_stack
from tests.prereq import require_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CALLERS = 4
MINUTES = 3.0
WARMUP_S = 30.0


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require_worker()


def test_three_minutes_leak_no_fds_or_tasks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with running_stack("fixed-delays", tmp_path / "state", 1480) as info:
        code = soak_run(out, info, CALLERS, MINUTES * 60.0, [])
    log = (tmp_path / "tester.log").read_text()
    assert code in (0, 1), log[-3000:]
    found = figures(out, CALLERS, MINUTES, warmup_s=WARMUP_S, window_s=60.0)
    print({k: v for k, v in found.items() if k != "windows"})
    assert found["accounting_exact"], found["utterances"]
    assert found["samples"] >= 20  # a sample every 5 s over the steady stretch
    assert found["fds_end"] - found["fds_start"] <= 3, "open fds grew under a constant load"
    assert found["tasks_end"] - found["tasks_start"] <= 2, "asyncio tasks grew under a constant load"
    assert found["rss_slope_mb_per_hour"] < 500.0  # a per-utterance leak of 1 MB would be ~1.6 GB/hour
    assert found["lateness_p99_ms_max_window"] is not None
