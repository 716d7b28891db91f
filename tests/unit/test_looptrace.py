"""The capacity bench's loop trace (bench/looptrace.py): slow turns are found and named by their callback,
collections are attributed, and the loop is left as it was."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from looptrace import LoopTrace  # noqa: E402 -- bench/ is not a package

pytestmark = pytest.mark.unit


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


async def quick_task() -> None:
    await asyncio.sleep(0)


async def test_a_slow_callback_is_a_slow_turn_named_after_it() -> None:
    loop = asyncio.get_running_loop()
    trace = LoopTrace(slow_turn_ms=5.0)
    trace.install(loop)
    try:
        trace.reset()
        done = loop.create_future()

        def slow_one() -> None:
            busy(8.0)
            gc.collect(0)
            done.set_result(None)

        loop.call_soon(slow_one)
        await asyncio.gather(done, quick_task())
        summary = trace.summary()
    finally:
        trace.uninstall()
    slowest = max(trace.slow_turns, key=lambda t: t.work_ms)
    assert slowest.work_ms >= 8.0 and slowest.longest[0][1].endswith("slow_one")
    assert slowest.cpu_ms >= 5.0  # it ran on the CPU: not a descheduled turn
    assert trace.sources["task quick_task"].count >= 1
    assert len(trace.gc_ms[0]) >= 1
    assert "slow_one" in summary and "gc gen0" in summary
    # Uninstalled: the loop's own methods again, and no callback of ours left behind.
    assert "_run_once" not in vars(loop) and "select" not in vars(loop._selector)  # type: ignore[attr-defined]
    assert trace._on_gc not in gc.callbacks
    assert asyncio.events.Handle._run.__qualname__ == "Handle._run"
