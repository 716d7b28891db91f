"""Where an asyncio loop's time goes, turn by turn: a diagnostic for the capacity bench's lateness.

An aggregate profile (py-spy) says what the loop spends its CPU on, not what makes one packet 30 ms
late: that is one long loop turn, or the process not running at all. ``LoopTrace`` wraps the loop's
turn (``_run_once``), its selector wait and every callback it runs (``Handle._run``) and keeps, per
window, the turns whose work (the turn minus the selector wait) exceeded ``slow_turn_ms``, with their
longest callbacks, and per callback source (a task's coroutine, a callback's qualified name) the count,
total and longest run; per garbage collection its pause and CPU time, and optionally (``census``)
what it walked. A turn's CPU time (``thread_time``) against its wall time tells a turn that worked
from one the process spent descheduled (another process, or the hypervisor: steal time, also shown
from /proc/stat for the tester's core).

Costs a few clock reads per callback (a few per cent at 100 callers): diagnostic only, off by default.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from procstat import core_ticks

_clock = time.perf_counter
_CONTAINERS = (list, dict, set, tuple, deque)


@dataclass
class SlowTurn:
    at: float  # perf_counter at the turn's start
    work_ms: float  # turn minus selector wait
    select_ms: float
    callbacks: int
    longest: list[tuple[float, str]]  # (ms, source), the turn's three longest callbacks
    callbacks_ms: float  # the sum of this turn's callbacks
    gc_ms: float  # garbage collections during the turn
    cpu_ms: float  # the loop thread's CPU time in the turn (all of it, the selector wait included)


@dataclass
class SourceStats:
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0


@dataclass
class LoopTrace:
    slow_turn_ms: float = 5.0
    slow_turns: list[SlowTurn] = field(default_factory=list)
    sources: dict[str, SourceStats] = field(default_factory=lambda: defaultdict(SourceStats))
    turns: int = 0
    work_ms: list[float] = field(default_factory=list)  # every turn's work, for a distribution
    gc_ms: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))  # by generation
    gc_in_turn_ms: float = 0.0
    _gc_start: float = 0.0
    _gc_cpu: float = 0.0
    # What the first collections of each window find (--loop-census; slow itself: each census stalls the
    # loop for ~10-20 ms at 100+ callers, inside the turn that triggered the collection).
    census: bool = False
    _stat_before: dict[str, int] = field(default_factory=dict)
    gc_census: list[Any] = field(default_factory=list)
    gc_detail: list[tuple[float, float, int, int, tuple[int, int, int]]] = field(default_factory=list)
    _turn: list[tuple[float, str]] = field(default_factory=list)
    _select_s: float = 0.0
    _installed: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        handle_run = asyncio.events.Handle._run
        run_once = loop._run_once  # type: ignore[attr-defined]
        selector = loop._selector  # type: ignore[attr-defined]
        select = selector.select
        trace = self

        def timed_run(handle: asyncio.Handle) -> None:
            start = _clock()
            handle_run(handle)
            trace._turn.append((_clock() - start, _source(handle)))

        def timed_select(timeout: float | None = None) -> Any:
            start = _clock()
            try:
                return select(timeout)
            finally:
                trace._select_s += _clock() - start

        def timed_run_once() -> None:
            trace._turn.clear()
            trace._select_s = 0.0
            trace.gc_in_turn_ms = 0.0
            start, cpu = _clock(), time.thread_time()
            run_once()
            trace._end_turn(start, _clock(), time.thread_time() - cpu)

        gc.callbacks.append(self._on_gc)
        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        selector.select = timed_select
        loop._run_once = timed_run_once  # type: ignore[attr-defined]
        self._installed = (handle_run, loop, selector)

    def uninstall(self) -> None:
        if self._installed is None:
            return
        handle_run, loop, selector = self._installed
        gc.callbacks.remove(self._on_gc)
        asyncio.events.Handle._run = handle_run  # type: ignore[method-assign]
        del selector.select
        del loop._run_once
        self._installed = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if self.census and len(self.gc_census) < 6:
                self._take_census(info["generation"])
            self._gc_start = _clock()
            self._gc_cpu = time.thread_time()
        else:
            ms = 1000.0 * (_clock() - self._gc_start)
            cpu_ms = 1000.0 * (time.thread_time() - self._gc_cpu)
            self.gc_ms[info["generation"]].append(ms)
            if ms >= 5:
                self.gc_detail.append((round(ms, 1), round(cpu_ms, 1), info["generation"],
                                       info["collected"], gc.get_count()))
            self.gc_in_turn_ms += ms

    def _take_census(self, generation: int) -> None:
        """What the collection is about to walk: object counts by type, the largest containers."""
        young = gc.get_objects(generation=generation)
        types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in young)
        big = sorted(((len(o), type(o).__name__) for o in young if isinstance(o, _CONTAINERS)), reverse=True)
        self.gc_census.append((generation, len(young), types.most_common(14), big[:5]))

    def reset(self) -> None:
        self._stat_before = _tester_core_ticks()
        self.gc_census.clear()
        self.gc_ms.clear()
        self.gc_detail.clear()
        self.slow_turns.clear()
        self.sources.clear()
        self.work_ms.clear()
        self.turns = 0

    def _end_turn(self, start: float, end: float, cpu_s: float) -> None:
        self.turns += 1
        work_ms = 1000.0 * (end - start - self._select_s)
        self.work_ms.append(work_ms)
        for seconds, source in self._turn:
            s = self.sources[source]
            s.count += 1
            s.total_ms += 1000.0 * seconds
            s.max_ms = max(s.max_ms, 1000.0 * seconds)
        if work_ms >= self.slow_turn_ms and len(self.slow_turns) < 10_000:
            longest = sorted(self._turn, reverse=True)[:3]
            self.slow_turns.append(SlowTurn(
                start, work_ms, 1000.0 * self._select_s, len(self._turn),
                [(round(1000.0 * s, 2), src) for s, src in longest],
                1000.0 * sum(s for s, _ in self._turn), self.gc_in_turn_ms, 1000.0 * cpu_s))

    def summary(self, top: int = 12) -> str:
        lines_cb = f"  gc.callbacks: {gc.callbacks}"
        lines = [f"loop trace: {self.turns} turns, {len(self.slow_turns)} with work >= "
                 f"{self.slow_turn_ms:g} ms"]
        if self.work_ms:
            ordered = sorted(self.work_ms)
            q = [ordered[min(len(ordered) - 1, int(p * len(ordered)))] for p in (0.5, 0.99, 0.999)]
            lines.append(f"  turn work ms: p50 {q[0]:.2f} p99 {q[1]:.2f} p99.9 {q[2]:.2f} "
                         f"max {ordered[-1]:.1f}")
        for gen, pauses in sorted(self.gc_ms.items()):
            lines.append(f"  gc gen{gen}: {len(pauses)} collections, max {max(pauses):.1f} ms, "
                         f"total {sum(pauses):.0f} ms, >= 5 ms: {sum(1 for p in pauses if p >= 5)}")
        lines.append(f"  slow gcs (wall ms, cpu ms, gen, collected, counts after): {self.gc_detail[:20]}")
        after = _tester_core_ticks()
        total = sum(after.values()) - sum(self._stat_before.values()) or 1
        lines.append("  tester core /proc/stat: " + ", ".join(
            f"{k} {100.0 * (after[k] - self._stat_before.get(k, 0)) / total:.1f}%" for k in after))
        lines.append(lines_cb)
        for c in self.gc_census:
            lines.append(f"  census gen{c[0]}: {c[1]} objects; {c[2]}; biggest {c[3]}")
        lines.append(f"  threads: {[t.name for t in threading.enumerate()]}; gc counts {gc.get_count()}, "
                     f"frozen {gc.get_freeze_count()}, thresholds {gc.get_threshold()}")
        outside = [t for t in self.slow_turns if t.work_ms - t.callbacks_ms > 0.5 * t.work_ms]
        lines.append(f"  slow turns mostly outside callbacks: {len(outside)}")
        off_cpu = [t for t in self.slow_turns if t.work_ms + t.select_ms - t.cpu_ms > 0.5 * t.work_ms]
        lines.append(f"  slow turns mostly off the CPU (descheduled): {len(off_cpu)}, "
                     f"{sum(t.work_ms + t.select_ms - t.cpu_ms for t in off_cpu):.0f} ms; "
                     f"in gc: {sum(t.gc_ms for t in self.slow_turns):.0f} ms of "
                     f"{sum(t.work_ms for t in self.slow_turns):.0f} ms slow-turn work")
        lines.append("  sources by total ms (count, total, max):")
        for name, s in sorted(self.sources.items(), key=lambda kv: -kv[1].total_ms)[:top]:
            lines.append(f"    {s.count:>8} {s.total_ms:>9.1f} {s.max_ms:>7.2f}  {name}")
        lines.append("  sources by max ms:")
        for name, s in sorted(self.sources.items(), key=lambda kv: -kv[1].max_ms)[:top]:
            lines.append(f"    {s.count:>8} {s.total_ms:>9.1f} {s.max_ms:>7.2f}  {name}")
        lines.append("  slowest turns (work ms, select ms, callbacks, callbacks ms, gc ms, cpu ms, longest):")
        for t in sorted(self.slow_turns, key=lambda t: -t.work_ms)[:top]:
            lines.append(f"    {t.work_ms:>7.1f} {t.select_ms:>6.1f} {t.callbacks:>5} "
                         f"{t.callbacks_ms:>7.1f} {t.gc_ms:>6.1f} {t.cpu_ms:>6.1f}  {t.longest}")
        return "\n".join(lines)


def _source(handle: asyncio.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
    return getattr(callback, "__qualname__", type(callback).__name__)


def _tester_core_ticks() -> dict[str, int]:
    """The first CPU this process may use (the bench pins it there): its /proc/stat time split."""
    return core_ticks().get(min(os.sched_getaffinity(0)), {})
