"""The capacity bench's callers and its step measurement (bench/capacity.py runs the ramp).

A ``Swarm`` is real callers (``PipelineClient``: speaker + listener, real WebRTC) on this process's
one asyncio loop, each speaking short clips on a shared grid of ``interval`` seconds, phases spread;
``measure_step`` measures one step's window (see bench/capacity.py for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from capacity_accounting import GroundTruth, StepLoad, quantile, stage_errors
from gateway_metrics import loop_delay_p99_ms
from looptrace import LoopTrace
from procstat import CpuSnapshot, gateway_decode_failures, rss_mb, stack_groups

from loadtest.fixtures import EncodedClip, FixtureLibrary
from loadtest.rows import ActiveUsers
from loadtest.timeline import Status, UtteranceTimeline, outcome
from loadtest.webrtc_client import (
    START_LEAD_S,
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
    UtteranceSink,
)

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
SNAPSHOT_GAP_S = 0.2  # between the CPU snapshot and the lateness window (see measure_step)
STATS_PERIOD_S = 2.0  # as loadtest run's direct engine polls RTC stats
MAX_UTTERANCES_PER_CALLER = 400  # bounds every caller's plan whatever the budget
NO_PORT = re.compile(r"no more available ports|port.{0,40}exhaust", re.IGNORECASE)  # mediasoup's words


@dataclass
class Caller:
    index: int
    client: PipelineClient
    phase_s: float  # where on the global utterance grid this caller speaks
    planned: list[float] = field(default_factory=list)  # absolute planned time of utterance seq k+1
    results: dict[int, UtteranceTimeline] = field(default_factory=dict)  # by seq
    connected: bool = False
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # connected or failed


class Swarm:
    """Callers on this loop, each speaking short clips on a shared grid of ``interval_s``, phases spread."""

    def __init__(self, options: ClientOptions, library: FixtureLibrary, fixture_ids: tuple[str, ...],
                 interval_s: float, silence: bytes, tag: str) -> None:
        self.options = options
        self.clips: list[tuple[str, EncodedClip]] = [(i, library.get(i)) for i in fixture_ids]
        self.interval_s = interval_s
        self.silence = silence
        self.tag = tag  # conversation names: unique per run
        self.epoch = time.monotonic()
        self.stop = asyncio.Event()
        self.callers: list[Caller] = []
        self.active = ActiveUsers()
        self._tasks: list[asyncio.Task[None]] = []

    async def grow(self, target: int, concurrency: int, timeout_s: float) -> list[Caller]:
        """Add callers up to ``target``, ``concurrency`` connecting at a time; return those that failed."""
        gate = asyncio.Semaphore(concurrency)
        new: list[Caller] = []
        for index in range(len(self.callers), target):
            caller = Caller(index, PipelineClient(self.options, self.silence, self._sink(index),
                                                  conversation=f"{self.tag}-u{index}"),
                            phase_s=(index * GOLDEN) % 1.0 * self.interval_s)
            self.callers.append(caller)
            new.append(caller)
            self._tasks.append(asyncio.create_task(self._life(caller, gate)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in new)), timeout_s)
        return [c for c in new if not c.connected]

    def _sink(self, index: int) -> UtteranceSink:
        def record(tl: UtteranceTimeline, client: PipelineClient) -> None:
            self.callers[index].results[tl.seq] = tl

        return record

    def _plan(self, caller: Caller, first_slot: float) -> Iterator[ScheduledUtterance]:
        """Endless (bounded) plan on the global grid: epoch + phase + k · interval, from the first slot."""
        k = max(0, math.ceil((first_slot - self.epoch - caller.phase_s) / self.interval_s))
        for n in range(MAX_UTTERANCES_PER_CALLER):
            planned = self.epoch + caller.phase_s + (k + n) * self.interval_s
            fixture_id, clip = self.clips[(caller.index + k + n) % len(self.clips)]
            caller.planned.append(planned)
            yield ScheduledUtterance(fixture_id, clip, planned - first_slot)

    async def _life(self, caller: Caller, gate: asyncio.Semaphore) -> None:
        client = caller.client
        try:
            async with gate:
                await client.connect()
            caller.connected = True
        except Exception as exc:  # whatever stops a caller connecting counts as a connect failure
            caller.error = f"{type(exc).__name__}: {exc}"
        finally:
            caller.done.set()
        if not caller.connected:
            await client.close()
            return
        self.active.change(time.monotonic(), +1)
        stats = asyncio.create_task(self._stats_loop(client))
        try:
            # speak() takes its first slot as clock() + START_LEAD_S synchronously on entry, so this
            # is the same instant to within microseconds: our planned times are its t_planned.
            first_slot = time.monotonic() + START_LEAD_S
            await client.speak(self._plan(caller, first_slot), self.stop, START_LEAD_S)
        finally:
            stats.cancel()
            self.active.change(time.monotonic(), -1)
            await client.close()

    async def _stats_loop(self, client: PipelineClient) -> None:
        # Cancelled when its caller ends; the count bounds it regardless.
        for _ in range(int(MAX_UTTERANCES_PER_CALLER * self.interval_s / STATS_PERIOD_S)):
            if self.stop.is_set():
                return
            with contextlib.suppress(Exception):
                await client.refresh_stats()
            await asyncio.sleep(STATS_PERIOD_S)  # sampling period, not synchronisation

    def packet_counts(self) -> list[int]:
        # The track's counters are the measurement itself; PipelineClient only exposes a full copy.
        return [c.client.speakers["a"].track.stats.packets for c in self.callers]

    def lateness_since(self, counts: list[int]) -> list[float]:
        """Every caller's packet lateness (s) after the counts taken by ``packet_counts``."""
        samples: list[float] = []
        for index, start in enumerate(counts):  # no caller joins during a window
            stats = self.callers[index].client.speakers["a"].track.stats
            new = min(stats.packets - start, len(stats.lateness_s))
            samples.extend(itertools.islice(stats.lateness_s, len(stats.lateness_s) - new, None))
        return samples

    def utterances_in(self, start: float, end: float) -> tuple[int, list[UtteranceTimeline]]:
        """(planned count, finished timelines) of the utterances planned in [start, end)."""
        expected = 0
        finished: list[UtteranceTimeline] = []
        for caller in self.callers:
            for seq, planned in enumerate(caller.planned, start=1):
                if start <= planned < end:
                    expected += 1
                    if seq in caller.results:
                        finished.append(caller.results[seq])
        return expected, finished

    async def shutdown(self, timeout_s: float) -> None:
        self.stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()


class TruthFile:
    """The stack's groundtruth.jsonl, read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.truth = GroundTruth()
        self._offset = 0

    def refresh(self) -> GroundTruth:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
            self._offset += len(data)
            self.truth.feed(data.decode())
        return self.truth


@dataclass
class StepResult:
    callers: int
    connect_failures: int
    cpu_percent: float  # the tester process's CPU time / wall (100 % = one core)
    tester_core_percent: float  # the tester's pinned core: max(tester's own share, the core's busy share)
    stack_core_percent: float  # the stack's pinned core: max(the stack's processes' share, the core's)
    rss_mb: float
    lateness_p50_ms: float
    lateness_p99_ms: float
    packets: int
    planned: int
    ok: int
    timeout: int
    error: int
    unfinished: int
    onset_misses: int
    stack_percent: dict[str, float]
    machine_percent: float
    loop_wait_percent: float  # the loop thread's run-queue wait / wall
    preemptions_per_s: float  # the loop thread's involuntary context switches
    not_ok: dict[str, int]  # the commonest reasons of utterances that were not ok
    gateway_decode_failures: int  # producers the gateway could not decode (this run)
    stage_error_p99_ms: dict[str, float | None]  # |tester − ground truth| per stage
    truth_unmatched: int  # utterances whose server id the ground truth lacks
    transit_ms: str  # p50/p99 of each tester↔gateway transit: where the stage error comes from
    stack_wait_percent: dict[str, float]  # run-queue wait of the stack's main threads / wall, by group
    tester_steal_percent: float  # the hypervisor's share of the tester's core (cores_steal_s)
    stack_steal_percent: float
    # CPU per packet the callers sent in the window (µs): the same work costs the same on a host of the
    # same speed, so runs compare by it (capacity_accounting.judge_runs). None: no packet measured.
    tester_us_per_packet: float | None
    stack_us_per_packet: float | None
    load: StepLoad
    passed: bool = False
    why: str = ""
    # The gateway's own event-loop delay p99 over its last 10-s window (worst replica), read as the
    # window ends: a saturated stack shows here before its packets reach the tester late.
    gateway_loop_delay_p99_ms: float | None = None


def start_py_spy(out: Path, duration_s: float) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: no profile recorded", file=sys.stderr)
        return None
    argv = [exe, "record", "--pid", str(os.getpid()), "--duration", str(math.ceil(duration_s)),
            "--rate", "100", "--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _share(after: float, before: float, wall: float) -> float:
    return 100.0 * (after - before) / wall


def _us_per_packet(percent: float, packets_per_s: float) -> float | None:
    """CPU µs per packet sent, from a CPU share (100 % = one core) and the callers' packet rate."""
    return 1e4 * percent / packets_per_s if packets_per_s > 0 else None


async def measure_step(swarm: Swarm, state_dir: Path, truth: TruthFile, failed: list[Caller],
                       args: argparse.Namespace, cores: tuple[int, int], decode_base: int,
                       drain_s: float, trace: LoopTrace | None = None,
                       gateway_urls: tuple[str, ...] = ()) -> StepResult:
    callers = len(swarm.callers)
    groups = stack_groups([state_dir])  # the gateway may have started workers since the last step
    profiler = None
    if args.py_spy is not None:
        profiler = start_py_spy(Path(args.py_spy) / f"step-{callers}.txt", args.window)
    before = CpuSnapshot.take(groups)
    # Reading /proc for the snapshot holds the loop for up to ~20 ms under load: the packets it delays
    # are the bench's, not the callers' load, so the lateness window starts once they have gone out.
    await asyncio.sleep(SNAPSHOT_GAP_S)
    counts = swarm.packet_counts()
    if trace is not None:
        trace.reset()
    await asyncio.sleep(args.window)  # the measurement window: the callers run meanwhile
    lateness = sorted(swarm.lateness_since(counts))
    if trace is not None:
        print(trace.summary(), flush=True)
    after = CpuSnapshot.take(groups)
    memory = rss_mb()
    loop_delay = await asyncio.to_thread(loop_delay_p99_ms, gateway_urls)  # off the callers' loop
    wall = after.wall - before.wall
    # Results of the window's utterances arrive up to clip + response timeout after it: wait for them
    # (at the same load), bounded.
    deadline = time.monotonic() + drain_s
    while True:
        expected, finished = swarm.utterances_in(before.wall, after.wall)
        if len(finished) >= expected or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.25)  # polling our own result table; results have no single "all done"
    if profiler is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=10)
        if profiler.poll() is None:
            profiler.kill()
    outcomes = [outcome(tl) for tl in finished]
    statuses = [o.status for o in outcomes]
    not_ok = Counter(f"{o.status.value} in {o.status_stage}: {o.error}" for o in outcomes
                     if o.status is not Status.OK)
    errors = stage_errors(finished, truth.refresh().marks)
    stack_percent = {k: _share(after.stack[k], before.stack[k], wall) for k in after.stack}
    tester_cpu = _share(after.tester, before.tester, wall)
    tester_core, stack_core = cores
    packets_per_s = len(lateness) / args.window
    result = StepResult(
        callers=callers, connect_failures=len(failed), cpu_percent=tester_cpu,
        tester_core_percent=max(tester_cpu,
                                _share(after.cores[tester_core], before.cores[tester_core], wall)),
        stack_core_percent=max(sum(stack_percent.values()),
                               _share(after.cores[stack_core], before.cores[stack_core], wall)),
        rss_mb=memory,
        lateness_p50_ms=1000.0 * quantile(lateness, 0.50), lateness_p99_ms=1000.0 * quantile(lateness, 0.99),
        packets=len(lateness), planned=expected,
        ok=statuses.count(Status.OK), timeout=statuses.count(Status.TIMEOUT),
        error=statuses.count(Status.ERROR), unfinished=expected - len(finished),
        onset_misses=sum(1 for tl in finished if tl.t_tts_event is not None and tl.t_audio_onset is None),
        stack_percent=stack_percent,
        machine_percent=100.0 * sum(t - before.machine.get(p, 0.0) for p, t in after.machine.items()) / wall,
        loop_wait_percent=_share(after.loop_wait, before.loop_wait, wall),
        preemptions_per_s=(after.loop_preempted - before.loop_preempted) / wall,
        not_ok=dict(not_ok.most_common(3)),
        gateway_decode_failures=gateway_decode_failures(state_dir) - decode_base,
        stage_error_p99_ms=errors.p99_ms(), truth_unmatched=errors.unmatched,
        transit_ms=errors.transit_summary(),
        stack_wait_percent={k: _share(after.stack_wait[k], before.stack_wait[k], wall)
                            for k in after.stack_wait},
        tester_steal_percent=_share(after.steal[tester_core], before.steal[tester_core], wall),
        stack_steal_percent=_share(after.steal[stack_core], before.steal[stack_core], wall),
        tester_us_per_packet=_us_per_packet(tester_cpu, packets_per_s),
        stack_us_per_packet=_us_per_packet(sum(stack_percent.values()), packets_per_s),
        load=StepLoad(False, False, 0.0, 0.0), gateway_loop_delay_p99_ms=loop_delay,
    )
    judge(result, failed, swarm.active.current, args.lateness_limit_ms, lateness_measured=bool(lateness))
    return result


def judge(r: StepResult, failed: list[Caller], active: int, limit_ms: float, lateness_measured: bool) -> None:
    """The step's verdict, its reasons, and the load figures the limit decision reads."""
    late_reasons, stack_reasons = [], []
    if not lateness_measured or r.lateness_p99_ms > limit_ms:
        late_reasons.append(f"lateness p99 {r.lateness_p99_ms:.1f} ms > {limit_ms:g}")
    if failed:
        stack_reasons.append(f"{len(failed)} connect failures ({failed[0].error})")
    if active < r.callers - len(failed):
        stack_reasons.append(f"{r.callers - len(failed) - active} callers dropped out")
    if r.onset_misses:
        stack_reasons.append(f"{r.onset_misses} onset misses")
    if r.ok != r.planned:
        stack_reasons.append(f"{r.planned - r.ok} of {r.planned} utterances not ok")
    if r.planned == 0:
        stack_reasons.append("no utterance planned in the window")
    if r.gateway_decode_failures:
        stack_reasons.append(f"the gateway failed to decode {r.gateway_decode_failures} callers' audio")
    r.load = StepLoad(late=bool(late_reasons), stack_failed=bool(stack_reasons),
                      tester_core_percent=r.tester_core_percent, stack_core_percent=r.stack_core_percent,
                      ports_exhausted=any(NO_PORT.search(c.error or "") for c in failed),
                      tester_own_percent=r.cpu_percent, tester_steal_percent=r.tester_steal_percent,
                      stack_steal_percent=r.stack_steal_percent)
    r.passed = not late_reasons and not stack_reasons
    r.why = "; ".join(late_reasons + stack_reasons)


HEADER = (f"{'callers':>7} {'cpu%':>6} {'core T%':>7} {'core S%':>7} {'rss MB':>7} {'late p50':>9} "
          f"{'late p99':>9} {'ok/planned':>11} {'timeout':>7} {'error':>5} {'onset miss':>10} "
          f"{'gateway%':>8} {'worker%':>7} {'machine%':>8} {'rq wait%':>8} {'err stt':>7} {'err e2e':>7}"
          "  verdict")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def row(r: StepResult) -> str:
    verdict = "pass" if r.passed else f"FAIL ({r.why})"
    err = r.stage_error_p99_ms
    return (f"{r.callers:>7} {r.cpu_percent:>6.1f} {r.tester_core_percent:>7.1f} "
            f"{r.stack_core_percent:>7.1f} {r.rss_mb:>7.0f} {r.lateness_p50_ms:>6.2f} ms "
            f"{r.lateness_p99_ms:>6.2f} ms "
            f"{f'{r.ok}/{r.planned}':>11} {r.timeout:>7} {r.error:>5} {r.onset_misses:>10} "
            f"{r.stack_percent['gateway']:>8.1f} {r.stack_percent['mediasoup']:>7.1f} "
            f"{r.machine_percent:>8.1f} "
            f"{r.loop_wait_percent:>8.1f} {_ms(err['stt']):>7} {_ms(err['e2e']):>7}  {verdict}")
