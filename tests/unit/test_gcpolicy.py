"""After callers are frozen out of full collections, full collections still happen (no garbage pile-up).

Runs in a child interpreter: freezing the collector in the pytest process would freeze the suite's own
objects for every later test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

PROGRAM = textwrap.dedent("""
    import gc, sys
    sys.path.insert(0, sys.argv[1])
    from loadtest import gcpolicy

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.peer, b.peer = b, a
        return a

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


def full_collections(mode: str) -> tuple[int, bool]:
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", PROGRAM, repo, mode], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
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
