"""bench/capacity.py's CPU pinning reaches every process and thread of the stack (bench/affinity.py).

The capacity figure means "callers per core" only if the tester and the stack really sit on their own
cores: every process of the stack (its pids.json and their children, e.g. the gateway's mediasoup
worker) and every thread of each must carry the stack's core in /proc/<pid>/task/<tid>/status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stackrun import running_stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from affinity import ENGINES, allowed_cpus, lower_engines, parse_cpu_list, pin_process, pin_stack, threads  # noqa: E402
from procstat import stack_groups, stack_records  # noqa: E402

pytestmark = pytest.mark.integration

THREADED_CHILD = """
import sys, threading
stop = threading.Event()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def test_cpu_list_format() -> None:
    assert parse_cpu_list("0-2,5\n") == {0, 1, 2, 5}
    assert parse_cpu_list("1") == {1}


def test_every_thread_of_a_process_is_pinned() -> None:
    cpu = max(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", THREADED_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        tids = threads(child.pid)
        assert len(tids) >= 4  # the main thread and three more
        assert pin_process(child.pid, {cpu}) == len(tids)
        assert all(allowed_cpus(child.pid, tid) == {cpu} for tid in tids)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_the_stacks_processes_and_their_children_are_pinned(state_dir: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    with running_stack("capacity-truth", state_dir, port_offset=1540) as info:
        groups = stack_groups([info.state_dir])
        assert groups["gateway"] and groups["mediasoup"], groups  # the worker is the gateway's child
        pinned = pin_stack([info.state_dir], {cpu})
        pids = {pid for group in groups.values() for pid in group}
        assert set(pinned) == pids
        for pid in pids:
            assert allowed_cpus(pid) == {cpu}, (pid, allowed_cpus(pid))  # Cpus_allowed_list
            assert all(allowed_cpus(pid, tid) == {cpu} for tid in threads(pid)), pid
        # The engines' sessions go below the media path on that core; the gateway's stays as started.
        autogroup = Path(f"/proc/{groups['gateway'][0]}/autogroup")
        if not autogroup.exists():
            pytest.skip("no autogroup scheduling in this kernel")
        engines = [int(r["pid"]) for r in stack_records([info.state_dir]) if r["name"] in ENGINES]
        assert len(engines) == len(ENGINES)
        assert lower_engines([info.state_dir], 10) == len(ENGINES)
        assert all(Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == "10" for pid in engines)
        assert autogroup.read_text().split()[-1] == "0"
