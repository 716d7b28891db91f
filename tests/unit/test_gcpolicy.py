"""The collector policy: after callers are frozen out of full collections, full collections still
happen (no garbage pile-up); collections follow the clock while callers are connected; closed callers'
frozen cycles are freed by a thaw.

Freezing runs in a child interpreter: freezing the collector in the pytest process would freeze the
suite's own objects for every later test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# Both child programs: the repository on the path, and reference cycles (as aiortc's transports and
# handlers have) to collect.
PRELUDE = textwrap.dedent("""
    import asyncio, gc, sys, weakref
    sys.path.insert(0, sys.argv[1])
    from loadtest import gcpolicy

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.peer, b.peer = b, a
        return a
""")

PROGRAM = PRELUDE + textwrap.dedent("""
    heap = [[[] for _ in range(10)] for _ in range(100_000)]  # a connected swarm's long-lived objects
    gc.collect()
    if sys.argv[2] == "settle":
        gcpolicy.settle_connected()
    else:
        gc.freeze()
    before = gc.get_stats()[2]["collections"]
    # Garbage that lives long enough to reach the oldest generation, as per-utterance records do.
    keep = []
    for i in range(400_000):
        keep.append(cycle())
        if len(keep) > 2000:
            keep.clear()
    print(gc.get_stats()[2]["collections"] - before, gc.get_freeze_count() > 100_000)
""")


def run_child(program: str, *args: str) -> list[str]:
    repo = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-c", program, repo, *args], capture_output=True, text=True,
                          timeout=120, check=True).stdout.split()


def full_collections(mode: str) -> tuple[int, bool]:
    out = run_child(PROGRAM, mode)
    return int(out[0]), out[1] == "True"


def test_settled_callers_leave_full_collections_running() -> None:
    collections, frozen = full_collections("settle")
    assert frozen  # the long-lived heap is out of the collector's walks
    assert collections >= 5


def test_a_bare_freeze_would_stop_them() -> None:
    """Control: what settle_connected guards against (CPython keeps the stale long-lived count)."""
    collections, frozen = full_collections("freeze")
    assert frozen
    assert collections == 0


async def test_cadence_collects_by_the_clock_while_held(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import gc

    from loadtest import gcpolicy

    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collected.append(generation) or 0)
    loop = asyncio.get_running_loop()
    cadence = gcpolicy.Cadence(loop, period_s=0.001)
    assert cadence._timer is None
    cadence.hold()
    cadence.hold()
    timer = cadence._timer
    assert timer is not None and not timer.cancelled()
    per_full = gcpolicy.YOUNG_PER_MIDDLE * gcpolicy.MIDDLE_PER_FULL
    for _ in range(per_full):
        cadence._tick()  # what the timer runs; driven here rather than waited for
    assert collected.count(2) == 1 and collected[-1] == 2
    assert collected.count(1) == gcpolicy.MIDDLE_PER_FULL - 1
    middle = gcpolicy.YOUNG_PER_MIDDLE - 1
    assert collected[middle] == 1 and set(collected[:middle]) == {0}
    assert cadence.collections == [collected.count(0), collected.count(1), 1]
    cadence.release()
    assert cadence._timer is not None  # one caller still connected
    last = cadence._timer
    cadence.release()
    assert cadence._timer is None and last.cancelled()
    cadence.release()  # an extra release stays at zero
    assert cadence.holders == 0


def test_one_cadence_per_loop() -> None:
    import asyncio

    from loadtest import gcpolicy

    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        assert gcpolicy.cadence_for(a) is gcpolicy.cadence_for(a)
        assert gcpolicy.cadence_for(a) is not gcpolicy.cadence_for(b)
    finally:
        a.close()
        b.close()


THAW_PROGRAM = PRELUDE + textwrap.dedent("""
    async def main():
        cadence = gcpolicy.Cadence(asyncio.get_running_loop(), period_s=3600)
        calls = []
        for _ in range(int(sys.argv[2])):
            calls.append(cycle())  # a connected caller's objects
            gcpolicy.settle_connected()
            cadence.hold()
        alive = [weakref.ref(c) for c in calls]
        closing = int(sys.argv[3])
        for _ in range(closing):
            calls.pop()
            cadence.release()
        gc.collect()  # an ordinary full collection cannot reach frozen cycles
        print(sum(r() is not None for r in alive), cadence.thaws, gc.get_freeze_count() > 0)

    asyncio.run(main())
""")


def after_closing(callers: int, closing: int) -> tuple[int, int, bool]:
    out = run_child(THAW_PROGRAM, str(callers), str(closing))
    return int(out[0]), int(out[1]), out[2] == "True"


def test_closed_callers_frozen_cycles_are_freed_by_a_thaw() -> None:
    # 3 of 20 closed: fewer than the thaw minimum, their cycles wait (frozen, still alive).
    assert after_closing(20, 3) == (20, 0, True)
    # 10 of 20 closed: as many closed as still connected, one thaw frees them; the rest stay frozen.
    assert after_closing(20, 10) == (10, 1, True)
    # All closed: the last release thaws, nothing is left frozen.
    alive, thaws, frozen = after_closing(5, 5)
    assert (alive, frozen) == (0, False) and thaws == 1
