"""Tester capacity: how many callers one tester process (one asyncio loop) carries before it gets late.

Starts the reference stack in its cheap mode (``sut/configs/capacity.toml``: 1 ms model engines, VAD
on the RFC 6464 level header) and drives real callers (``PipelineClient``: speaker + listener, real
WebRTC) from this process, on one loop, as ``loadtest run``'s direct engine does. One gateway holds
only ~37 callers (opusscript's fixed WebAssembly heap, see ``gateway_decode_failures``), so by default
``--stacks 3`` identical stacks run side by side (port offsets 600, 625, 650) and caller i talks to
stack i mod 3: the tester is still one process on one loop. The caller count is raised step by step
(callers already connected stay; they connect ``--connect-concurrency`` at a time, utterances every
``--interval`` s with phases spread over it); each step measures, once every caller has connected
and settled, a window of ``--window`` seconds:

* send lateness: actual − planned send time of every packet every caller's track handed to aiortc in
  the window (``SendStats.lateness_s``), p50/p99 over all of them;
* tester CPU %: this process's CPU time (all threads, ``time.process_time``) / wall time of the
  window, 100 % = one core; RSS from /proc/self/status at the window's end;
* utterances planned in the window, once each has its final status: ok / timeout / error, and onset
  misses (a tts event arrived but no translated-audio onset was detected);
* the stack's CPU over the same window from /proc/<pid>/stat of the processes in its pids.json and
  their children (the gateway's mediasoup worker, nginx's workers), and the CPU of every process on
  the machine (``machine%``, of 100 % per core), so a reader sees whether the tester or the stack
  saturated the shared cores;
* the loop thread's run-queue wait (``rq wait%``: runnable but not running, /proc/<pid>/task/<tid>/
  schedstat) and involuntary context switches (``preempt/s``): lateness the machine's other work
  caused, not the tester's own work.

A step passes when lateness p99 <= ``--lateness-limit-ms`` (10 ms), every utterance is ok, no onset is
missed and every caller connected. The ramp stops at the first failing step (or when the time budget
would be exceeded).

Definitions in the final JSON line (the largest passing step's figures):
* ``callers``: the largest passing caller count: callers one tester process (= one loop) carries.
* ``callers_per_core`` = ``callers`` / (tester CPU % / 100) at that step: callers per core of CPU the
  tester actually consumed. It is an efficiency figure: a single loop cannot use more than one core
  and its lateness rises before it is saturated, so it is an upper bound for one process per core;
  ``callers`` is what was demonstrated.

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/capacity.py [--steps 10,25,35,50,75,100,150,200] [--stacks 3] [--nice -10]

On a small machine the stack shares the cores with the tester, and the scheduler shares them between
sessions first: each stack process has a session of its own, so under contention the tester's loop
waits on the run queue (``rq wait%``) and gets late through no work of its own. ``--nice -10`` (root)
gives the tester's session the larger share, as if the stack ran elsewhere; the default leaves it.

``--py-spy DIR`` records a py-spy profile (raw collapsed stacks, non-blocking) of this process over
each step's window into DIR/step-<callers>.txt (py-spy is a dev tool: ``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from procstat import (  # noqa: E402 -- bench/ is this script's own directory
    CpuSnapshot,
    gateway_decode_failures,
    rss_mb,
    stack_groups,
)

from loadtest.config import RunConfig  # noqa: E402
from loadtest.fixtures import EncodedClip, FixtureLibrary, silence_packet  # noqa: E402
from loadtest.ice import choose_ice  # noqa: E402
from loadtest.profile_file import load_profile  # noqa: E402
from loadtest.rows import ActiveUsers  # noqa: E402
from loadtest.target import Target, ssl_context  # noqa: E402
from loadtest.timeline import Status, UtteranceTimeline, outcome  # noqa: E402
from loadtest.webrtc_client import (  # noqa: E402
    START_LEAD_S,
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
    UtteranceSink,
)
from sut.stack import StackInfo  # noqa: E402
from tests.integration.stackrun import MANIFEST, running_stack, short_fixture_ids  # noqa: E402

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
STACK_OFFSET_STRIDE = 25  # capacity.toml's 250 RTC ports shift by 10 per offset: 25 keeps them apart
PORTS_PER_CALLER = 4  # mediasoup: send + recv WebRTC transports, the gateway's tap and TTS inject
SETTLE_S = 3.0  # after the last connect: DTLS/ICE consent and the new callers' first packets settle
STATS_PERIOD_S = 2.0  # as loadtest run's direct engine polls RTC stats
MAX_UTTERANCES_PER_CALLER = 400  # bounds every caller's plan whatever the budget




# ---------------------------------------------------------------------------------------- callers


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

    def __init__(self, options: list[ClientOptions], library: FixtureLibrary, fixture_ids: tuple[str, ...],
                 interval_s: float, silence: bytes) -> None:
        self.options = options  # one per stack: caller i talks to stack i mod len(options)
        self.clips: list[tuple[str, EncodedClip]] = [(i, library.get(i)) for i in fixture_ids]
        self.interval_s = interval_s
        self.silence = silence
        self.epoch = time.monotonic()
        self.stop = asyncio.Event()
        self.callers: list[Caller] = []
        self.active = ActiveUsers()
        self._tasks: list[asyncio.Task[None]] = []

    async def grow(self, target: int, concurrency: int, timeout_s: float) -> int:
        """Add callers up to ``target``, ``concurrency`` connecting at a time; return how many failed."""
        gate = asyncio.Semaphore(concurrency)
        new: list[Caller] = []
        for index in range(len(self.callers), target):
            options = self.options[index % len(self.options)]
            caller = Caller(index, PipelineClient(options, self.silence, self._sink(index),
                                                  conversation=f"cap-{os.getpid()}-u{index}"),
                            phase_s=(index * GOLDEN) % 1.0 * self.interval_s)
            self.callers.append(caller)
            new.append(caller)
            self._tasks.append(asyncio.create_task(self._life(caller, gate)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in new)), timeout_s)
        return sum(1 for c in new if not c.connected)

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
        return [c.client._track.stats.packets for c in self.callers]

    def lateness_since(self, counts: list[int]) -> list[float]:
        """Every caller's packet lateness (s) after the counts taken by ``packet_counts``."""
        samples: list[float] = []
        for index, start in enumerate(counts):  # no caller joins during a window
            stats = self.callers[index].client._track.stats
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


# ---------------------------------------------------------------------------------------- steps


@dataclass
class StepResult:
    callers: int
    connect_failures: int
    cpu_percent: float
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
    gateway_decode_failures: int  # producers the gateway could not decode (so far)
    passed: bool = False
    why: str = ""


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted list (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def start_py_spy(out: Path, duration_s: float) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: no profile recorded", file=sys.stderr)
        return None
    argv = [exe, "record", "--pid", str(os.getpid()), "--duration", str(math.ceil(duration_s)),
            "--rate", "100", "--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure_step(swarm: Swarm, state_dirs: list[Path], callers: int, failures: int,
                       args: argparse.Namespace, drain_s: float) -> StepResult:
    groups = stack_groups(state_dirs)  # the gateway may have started workers since the last step
    profiler = None
    if args.py_spy is not None:
        profiler = start_py_spy(Path(args.py_spy) / f"step-{callers}.txt", args.window)
    counts = swarm.packet_counts()
    before = CpuSnapshot.take(groups)
    await asyncio.sleep(args.window)  # the measurement window: the callers run meanwhile
    after = CpuSnapshot.take(groups)
    lateness = sorted(swarm.lateness_since(counts))
    memory = rss_mb()
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
    result = StepResult(
        callers=callers, connect_failures=failures,
        cpu_percent=100.0 * (after.tester - before.tester) / wall, rss_mb=memory,
        lateness_p50_ms=1000.0 * quantile(lateness, 0.50), lateness_p99_ms=1000.0 * quantile(lateness, 0.99),
        packets=len(lateness), planned=expected,
        ok=statuses.count(Status.OK), timeout=statuses.count(Status.TIMEOUT),
        error=statuses.count(Status.ERROR), unfinished=expected - len(finished),
        onset_misses=sum(1 for tl in finished if tl.t_tts_event is not None and tl.t_audio_onset is None),
        stack_percent={k: 100.0 * (after.stack[k] - before.stack[k]) / wall for k in after.stack},
        machine_percent=100.0 * sum(t - before.machine.get(p, 0.0) for p, t in after.machine.items()) / wall,
        loop_wait_percent=100.0 * (after.loop_wait - before.loop_wait) / wall,
        preemptions_per_s=(after.loop_preempted - before.loop_preempted) / wall,
        not_ok=dict(not_ok.most_common(3)),
        gateway_decode_failures=sum(gateway_decode_failures(d) for d in state_dirs),
    )
    reasons = []
    if failures:
        reasons.append(f"{failures} connect failures")
    if swarm.active.current < callers - failures:
        reasons.append(f"{callers - failures - swarm.active.current} callers dropped out")
    if not lateness or result.lateness_p99_ms > args.lateness_limit_ms:
        reasons.append(f"lateness p99 {result.lateness_p99_ms:.1f} ms > {args.lateness_limit_ms:g}")
    if result.onset_misses:
        reasons.append(f"{result.onset_misses} onset misses")
    if result.ok != result.planned:
        reasons.append(f"{result.planned - result.ok} of {result.planned} utterances not ok")
    if result.planned == 0:
        reasons.append("no utterance planned in the window")
    if result.gateway_decode_failures:
        reasons.append(f"stack: the gateway failed to decode {result.gateway_decode_failures} callers' audio")
    result.passed = not reasons
    result.why = "; ".join(reasons)
    return result


HEADER = (f"{'callers':>7} {'cpu%':>6} {'rss MB':>7} {'late p50':>9} {'late p99':>9} {'ok/planned':>11} "
          f"{'timeout':>7} {'error':>5} {'onset miss':>10} {'gateway%':>8} {'worker%':>7} {'stack%':>6} "
          f"{'machine%':>8} {'rq wait%':>8} {'preempt/s':>9}  verdict")


def row(r: StepResult) -> str:
    stack = sum(r.stack_percent.values())
    verdict = "pass" if r.passed else f"FAIL ({r.why})"
    return (f"{r.callers:>7} {r.cpu_percent:>6.1f} {r.rss_mb:>7.0f} {r.lateness_p50_ms:>6.2f} ms "
            f"{r.lateness_p99_ms:>6.2f} ms {f'{r.ok}/{r.planned}':>11} {r.timeout:>7} {r.error:>5} "
            f"{r.onset_misses:>10} {r.stack_percent['gateway']:>8.1f} {r.stack_percent['mediasoup']:>7.1f} "
            f"{stack:>6.1f} {r.machine_percent:>8.1f} {r.loop_wait_percent:>8.1f} {r.preemptions_per_s:>9.0f}"
            f"  {verdict}")


async def ramp(stacks: list[StackInfo], args: argparse.Namespace, steps: list[int]) -> list[StepResult]:
    fixture_ids = short_fixture_ids(max_duration_s=3.5, count=6)
    library = FixtureLibrary(MANIFEST)
    # Encode every clip before any caller runs: encoding on the media loop would stall every caller.
    longest = max(library.get(i).duration_s for i in fixture_ids)
    cfg = RunConfig()
    choose_ice(cfg.target.ice_addresses, stacks[0].target_url).apply()  # the stacks are all on loopback
    options = [ClientOptions(
        url=info.target_url, profile=load_profile(cfg.target.profile),
        ssl_context=ssl_context(Target(info.target_url, str(info.ca_cert), False)),
        connect_timeout_s=15.0, request_timeout_s=15.0, response_timeout_s=args.response_timeout,
        source_language=cfg.scenario.source_language, target_language=cfg.scenario.target_language)
        for info in stacks]
    state_dirs = [info.state_dir for info in stacks]
    swarm = Swarm(options, library, fixture_ids, args.interval, silence_packet())
    drain_s = longest + args.response_timeout + 2.0
    started = time.monotonic()
    results: list[StepResult] = []
    print(HEADER, flush=True)
    try:
        for callers in steps:
            # A step costs connecting, settling, the window and the drain; skip what the budget can't hold.
            step_cost = SETTLE_S + args.window + drain_s + 0.1 * (callers - len(swarm.callers)) + 10.0
            if time.monotonic() - started + step_cost > args.budget:
                print(f"(time budget {args.budget:.0f} s reached before {callers} callers)", flush=True)
                break
            failures = await swarm.grow(callers, args.connect_concurrency, timeout_s=120.0)
            await asyncio.sleep(SETTLE_S)  # the new callers' connection work must not count as lateness
            result = await measure_step(swarm, state_dirs, callers, failures, args, drain_s)
            results.append(result)
            print(row(result), flush=True)
            for reason, count in result.not_ok.items():
                print(f"{'':>7} {count} × {reason}", flush=True)
            if not result.passed and not args.keep_going:
                break
    finally:
        await swarm.shutdown(timeout_s=drain_s + 30.0)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,25,35,50,75,100,150,200")
    parser.add_argument("--window", type=float, default=20.0, help="measurement window per step, s")
    parser.add_argument("--interval", type=float, default=5.0, help="utterance interval per caller, s")
    parser.add_argument("--response-timeout", type=float, default=5.0)
    parser.add_argument("--lateness-limit-ms", type=float, default=10.0)
    parser.add_argument("--connect-concurrency", type=int, default=10)
    parser.add_argument("--budget", type=float, default=600.0, help="total time budget of the ramp, s")
    parser.add_argument("--port-offset", type=int, default=600)
    parser.add_argument("--stacks", type=int, default=3,
                        help="stacks to spread the callers over (one gateway holds ~39 callers)")
    parser.add_argument("--state-dir", default=None, help="keep the stacks' state dirs here (default: temp)")
    parser.add_argument("--nice", type=int, default=0,
                        help="diagnostic: give the tester's session (autogroup) this nice value (e.g. -10, "
                        "as root) so that contention for the shared cores lands on the stack")
    parser.add_argument("--keep-going", action="store_true",
                        help="measure every step, also after a failing one (diagnostics)")
    parser.add_argument("--py-spy", metavar="DIR", default=None, help="record a py-spy profile per step")
    args = parser.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    offsets = [args.port_offset + STACK_OFFSET_STRIDE * k for k in range(args.stacks)]
    if args.stacks < 1 or not 600 <= offsets[0] <= offsets[-1] <= 699:
        parser.error(f"port offsets {offsets} must lie within 600-699")
    if args.py_spy is not None:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stacks:
        infos: list[StackInfo] = []
        for k, offset in enumerate(offsets):
            state = Path(args.state_dir or tmp) / f"stack-{k}"
            state.mkdir(parents=True, exist_ok=True)
            infos.append(stacks.enter_context(running_stack("capacity", state, offset)))
        gw = infos[0].config.gateway
        max_callers = args.stacks * ((gw.rtc_max_port - gw.rtc_min_port + 1) // PORTS_PER_CALLER)
        if any(s > max_callers for s in steps):
            print(f"(steps above {max_callers} callers skipped: the RTC ports of {args.stacks} stacks)",
                  flush=True)
        steps = [s for s in steps if s <= max_callers]
        autogroup = Path("/proc/self/autogroup")
        if args.nice:
            # The scheduler shares the cores between sessions (autogroups) first: every stack process
            # runs in a session of its own, so a plain nice value would change nothing here.
            autogroup.write_text(str(args.nice))
        try:
            results = asyncio.run(ramp(infos, args, steps))
        finally:
            if args.nice:
                autogroup.write_text("0")

    # Only an unbroken run of passing steps counts: with --keep-going a later step may pass by luck.
    passing = list(itertools.takewhile(lambda r: r.passed, results))
    best = passing[-1] if passing else None
    print()
    if best is None:
        print("no step passed")
        figures = {"callers_per_core": 0.0, "lateness_p99_ms": None, "cpu_percent": None, "rss_mb": None,
                   "callers": 0}
    else:
        per_core = best.callers / max(best.cpu_percent / 100.0, 1e-6)
        stack = sum(best.stack_percent.values())
        cores = 100 * (os.cpu_count() or 1)
        print(f"largest passing step: {best.callers} callers in one tester process (one loop), tester CPU "
              f"{best.cpu_percent:.1f} % → {per_core:.0f} callers per core of tester CPU")
        print(f"stack CPU at that step: gateway {best.stack_percent['gateway']:.1f} %, mediasoup worker "
              f"{best.stack_percent['mediasoup']:.1f} %, other {best.stack_percent['other']:.1f} % "
              f"(total {stack:.1f} %); machine {best.machine_percent:.1f} % of {cores} %")
        if len(results) > len(passing):
            failed = results[len(passing)]
            print(f"first failing step: {failed.callers} callers: {failed.why}")
        figures = {"callers_per_core": round(per_core, 1), "lateness_p99_ms": round(best.lateness_p99_ms, 2),
                   "cpu_percent": round(best.cpu_percent, 1), "rss_mb": round(best.rss_mb, 1),
                   "callers": best.callers}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
