"""CPU affinity for the capacity bench: the tester on one core, the stack on another (Linux only).

``os.sched_setaffinity(pid)`` sets one thread's mask (the pid is that thread's id), so a process is
pinned thread by thread through /proc/<pid>/task; threads started later inherit their creator's mask,
processes started later their parent's, and the bench pins the stack again after every step for
workers that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from procstat import stack_groups, stack_records


def parse_cpu_list(text: str) -> set[int]:
    """``0-2,5`` (the kernel's list format, e.g. Cpus_allowed_list) → {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def allowed_cpus(pid: int, tid: int | None = None) -> set[int]:
    """The CPUs a process's main thread (or thread ``tid``) may run on, from its status file."""
    status = Path(f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpu_list(line.split(":", 1)[1])
    raise ValueError(f"no Cpus_allowed_list in {status}")


def threads(pid: int) -> list[int]:
    """The thread ids of a process (empty when it is gone)."""
    try:
        return sorted(int(entry.name) for entry in os.scandir(f"/proc/{pid}/task"))
    except OSError:
        return []


def pin_process(pid: int, cpus: set[int]) -> int:
    """Pin every thread of ``pid`` to ``cpus``; the number of threads pinned (0: the process is gone)."""
    pinned = 0
    for tid in threads(pid):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(tid, cpus)
            pinned += 1
    return pinned


def pin_processes(pids: Iterable[int], cpus: set[int]) -> dict[int, int]:
    """Pin each process (all its threads); {pid: threads pinned} for the processes still alive."""
    counts = {pid: pin_process(pid, cpus) for pid in pids}
    return {pid: n for pid, n in counts.items() if n}


def pin_stack(state_dirs: list[Path], cpus: set[int]) -> dict[int, int]:
    """Pin every process in the stacks' pids.json and all their children (proxy and gateway workers)."""
    pids = sorted({pid for group in stack_groups(state_dirs).values() for pid in group})
    return pin_processes(pids, cpus)


def pin_self(cpus: set[int]) -> int:
    """Pin this process, every thread it has now (later ones inherit the mask)."""
    return pin_process(os.getpid(), cpus)


def choose_cores() -> tuple[int, int]:
    """(tester core, stack core): the first two CPUs this process may use (the same one if only one)."""
    usable = sorted(os.sched_getaffinity(0))
    return usable[0], usable[1] if len(usable) > 1 else usable[0]


ENGINES = ("stt", "translation", "tts")  # the stack's services whose work is not on the media path


def lower_engines(state_dirs: list[Path], nice: int) -> int:
    """Give the sessions (autogroups) of the stack's engine services this nice value; the count set.

    With autogroup scheduling on (/proc/sys/kernel/sched_autogroup_enabled), sessions share a core
    before processes do, and every stack process is its own session (the gateway's mediasoup workers
    share the gateway's). A deployment runs its engines on machines of their own; on the stack's one
    core their bursts (a synthesis, a request's parsing) would otherwise queue the media path and the
    proxy: packets and events in transit, which the stage error counts. Their own work is inside the
    stages on both clocks, so a lower priority moves no stage boundary.
    """
    done = 0
    for record in stack_records(state_dirs):
        if record["name"] not in ENGINES:
            continue
        try:
            Path(f"/proc/{int(record['pid'])}/autogroup").write_text(str(nice))
            done += 1
        except OSError:
            continue  # gone, or no autogroup scheduling
    return done
