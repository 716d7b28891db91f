"""The media loop beside locust's gevent, under real monkey-patching (in a child process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent('''
    import locust  # noqa: F401 -- patches threading, select, socket, ssl like a locust run
    import asyncio, time, gevent
    from loadtest.bridge import MediaLoop, wait_in_greenlet

    media = MediaLoop()
    media.start()

    async def work(n):
        await asyncio.sleep(0.2)
        # asyncio resolves names in its executor: under patching that hung until bridge.py fixed it
        infos = await asyncio.get_running_loop().getaddrinfo("localhost", 80)
        return n * 2, bool(infos)

    ticks = []
    def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    started = time.monotonic()
    greenlets = [gevent.spawn(lambda i=i: wait_in_greenlet(media.submit(work(i)), 10)) for i in range(50)]
    tick = gevent.spawn(ticker)
    gevent.joinall(greenlets + [tick], timeout=20)
    elapsed = time.monotonic() - started
    media.stop()
    assert [g.value for g in greenlets] == [(i * 2, True) for i in range(50)], [g.value for g in greenlets]
    assert len(ticks) == 20, "the gevent hub stalled while the media loop worked"
    print(f"ok {elapsed:.2f}")
''')


def test_media_loop_serves_greenlets_and_resolves_names_under_gevent() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    elapsed = float(proc.stdout.split()[-1])
    assert elapsed < 5.0  # 50 concurrent 0.2 s waits: concurrent, not serial (10 s)
