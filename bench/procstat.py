"""Process CPU and scheduling figures from /proc, for the capacity bench (Linux only)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


CLK_TCK = os.sysconf("SC_CLK_TCK")  # /proc CPU times are in clock ticks



def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), seconds; 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime is field 14 of stat, index 11 here; stime index 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def descendants(roots: list[int]) -> list[int]:
    """The roots and every process below them (one scan of /proc, bounded by the process count)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parent[int(entry.name)] = int(fields[1])
    found = set(roots)
    for _ in range(8):  # process trees here are at most 3 deep; 8 passes bound the walk
        more = {pid for pid, ppid in parent.items() if ppid in found and pid not in found}
        if not more:
            break
        found |= more
    return sorted(found)


def stack_records(state_dirs: list[Path]) -> list[dict[str, Any]]:
    """The stacks' process records (pids.json: name, pid, ...), the processes each stack started."""
    return [r for d in state_dirs for r in json.loads((d / "pids.json").read_text()).get("processes", [])]


def stack_groups(state_dirs: list[Path]) -> dict[str, list[int]]:
    """Stack pids by group: gateway (node), mediasoup (its workers), other (proxy, services)."""
    records = stack_records(state_dirs)
    groups: dict[str, list[int]] = {"gateway": [], "mediasoup": [], "other": []}
    for record in records:
        for pid in descendants([int(record["pid"])]):
            if "mediasoup" in _comm(pid):
                groups["mediasoup"].append(pid)
            elif record["name"] == "gateway":
                groups["gateway"].append(pid)
            else:
                groups["other"].append(pid)
    return groups


def all_processes_cpu_s() -> dict[int, float]:
    """CPU seconds of every process on the machine, by pid.

    Not /proc/stat: its busy time is sampled at the timer tick, and a loop whose work follows its
    timers (ours does) is mostly asleep at the tick, so it undercounts; per-process times are exact.
    """
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return times


CORE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def core_ticks() -> dict[int, dict[str, int]]:
    """Each CPU's time split since boot (/proc/stat ``cpuN``, CORE_FIELDS, clock ticks), by CPU number."""
    ticks: dict[int, dict[str, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks[int(name[3:])] = dict(zip(CORE_FIELDS, map(int, values[:8]), strict=True))
    return ticks


def cores_busy_s(ticks: dict[int, dict[str, int]]) -> dict[int, float]:
    """Busy seconds of each CPU (all but idle and iowait) from ``core_ticks``.

    Tick-sampled, so it undercounts a timer-driven loop (see ``all_processes_cpu_s``); a core's busy
    share is therefore read as the larger of this and the pinned processes' own exact CPU time.
    """
    return {cpu: (sum(t.values()) - t["idle"] - t["iowait"]) / CLK_TCK for cpu, t in ticks.items()}


def cores_steal_s(ticks: dict[int, dict[str, int]]) -> dict[int, float]:
    """Seconds the hypervisor ran something else on each of our virtual CPUs (``steal``), from
    ``core_ticks``.

    Invisible to the guest's run queues: the whole vCPU stops, every process on it with it (measured
    here in ~10 ms slices, 0.5-4.5 % of the tester's core per 20 s window on a shared host).
    """
    return {cpu: t["steal"] / CLK_TCK for cpu, t in ticks.items()}


def loop_thread_sched() -> tuple[float, float, int]:
    """(on-CPU s, runnable-but-waiting s, involuntary context switches) of this process's main thread.

    The loop runs on the main thread. Waiting on the run queue while runnable is time the machine's
    other work took from the loop: lateness the tester cannot cause or cure itself.
    """
    pid = os.getpid()
    run_ns, wait_ns, _ = (int(v) for v in Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split())
    involuntary = 0
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            involuntary = int(line.split()[1])
    return run_ns / 1e9, wait_ns / 1e9, involuntary


def main_thread_wait_s(pid: int) -> float:
    """Seconds a process's main thread has waited on a run queue while runnable (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def gateway_decode_failures(state_dir: Path) -> int:
    """Mic producers whose Opus decoding failed in the gateway's tap, from its log (cumulative).

    A producer the gateway cannot decode is a caller whose utterances the VAD never hears: they time
    out in stt. That is the stack failing, not the tester (the old opusscript wrapper broke this way
    past ~37 callers on one gateway; sut/gateway/src/opus.js replaced it).
    """
    try:
        text = (state_dir / "gateway.log").read_text(errors="replace")
    except OSError:
        return 0
    return len(set(re.findall(r"producer (\S+): opus decode failed", text)))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def trim_heap_mb() -> float:
    """Hand the heap the C allocator holds free back to the OS (``malloc_trim``, glibc; 0 elsewhere): the
    RSS that went (MB). A process whose RSS stays high after its objects are gone either leaks or keeps
    freed heap; this tells them apart."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return 0.0
    before = rss_mb()
    trim(0)
    return before - rss_mb()


@dataclass
class CpuSnapshot:
    wall: float
    tester: float
    stack: dict[str, float]
    machine: dict[int, float]
    loop_wait: float
    loop_preempted: int
    cores: dict[int, float]  # busy seconds of each CPU (cores_busy_s)
    # Run-queue wait (s) of each stack group's main threads: the gateway's event loop, the workers'.
    stack_wait: dict[str, float]
    steal: dict[int, float]  # cores_steal_s

    @staticmethod
    def take(groups: dict[str, list[int]]) -> CpuSnapshot:
        stack = {name: sum(proc_cpu_s(p) for p in pids) for name, pids in groups.items()}
        _, wait, preempted = loop_thread_sched()
        stack_wait = {name: sum(main_thread_wait_s(p) for p in pids) for name, pids in groups.items()}
        ticks = core_ticks()
        return CpuSnapshot(time.monotonic(), time.process_time(), stack, all_processes_cpu_s(), wait,
                           preempted, cores_busy_s(ticks), stack_wait, cores_steal_s(ticks))

