"""Tester capacity: how many callers one tester process (one asyncio loop, one core) carries.

Starts the reference stack in its cheap mode with ground truth (``sut/configs/capacity-truth.toml``:
1 ms model engines, VAD on the RFC 6464 level header, 1000 RTC ports = 250 callers, the gateway's
ground-truth log on) and pins the tester and the stack to one core each (CPU affinity, bench/
affinity.py): this process and all its threads on the first usable core, every process of the stack
(its pids.json and their children: Traefik, the gateway, its mediasoup worker, the services) on the
second, pinned once the stack is up and again after every step (for workers started meanwhile).
Other work on the machine is not pinned: it still lands on both cores (the per-core busy figures
show it). On the stack's core, the engine services (STT, translation, TTS: each its own session) run at
``--engines-nice`` (10) below the media path (gateway, mediasoup worker) and the proxy, as a deployment
runs its engines on machines of their own: measured at 150 callers, their bursts otherwise queued the
gateway (its run-queue wait 37-39 % of the window against 21-22 %) and the packets in transit to it
(p99 26-42 ms against 15-17), which the stage error counts (bench/affinity.py lower_engines).

It then drives real callers (``PipelineClient``: speaker + listener, real WebRTC) from this process,
on one loop, as ``loadtest run``'s direct engine does (bench/capacity_swarm.py). The caller count is
raised step by step (callers already connected stay; they connect ``--connect-concurrency`` at a
time, utterances every ``--interval`` s with phases spread over it); each step measures, once every
caller has connected and settled, a window of ``--window`` seconds:

* send lateness: actual − planned send time of every packet every caller's track handed to aiortc in
  the window (``SendStats.lateness_s``), p50/p99 over all of them;
* tester CPU % (``cpu%``): this process's CPU time (all threads) / wall, 100 % = one core; the busy
  share of each pinned core (``core T%`` tester, ``core S%`` stack): the larger of the pinned
  processes' own CPU share and the core's busy time in /proc/stat (which includes other work);
* utterances planned in the window, once each has its final status: ok / timeout / error, and onset
  misses (a tts event arrived but no translated-audio onset was detected);
* stage error against the stack's ground truth (``err stt``, ``err e2e``): for every utterance of the
  window, |tester's stage − the ground truth's same stage| (both CLOCK_MONOTONIC on this host;
  bench/capacity_accounting.py), p99 per stage;
* the stack's CPU by group, the whole machine's (``machine%``, 100 % per core), the loop thread's
  run-queue wait (``rq wait%``);
* on a second line, where a stage error comes from: p50/p99 of each transit between tester and gateway
  (``in``: our last voiced packet leaving to the gateway hearing it; ``transcript``, ``translation``,
  ``audio``: the gateway emitting to us receiving), the run-queue wait of the stack's main threads (its
  processes queueing for their shared core) and each pinned core's steal time.

A step passes when lateness p99 <= ``--lateness-limit-ms`` (10 ms), every utterance is ok, no onset is
missed and every caller connected. A ramp stops at its first failing step, when the RTC ports would
not hold the next step, or when its time budget (``--budget``, per run) would be exceeded. What stopped
it is ``limited_by`` (``capacity_accounting.limited_by``):

* ``tester``: the tester was late (lateness p99 over the limit) while its core was busy (>= 85 %) and
  the stack's was not (or while neither was: lateness on the tester's core, from its own work or from
  unpinned work sharing that core);
* ``stack``: the stack's core saturated, or the stack failed utterances or calls, first;
* ``ports``: the stack's RTC port range ran out;
* ``time``: the budget (or the step list) ran out before anything failed.

The ramp runs ``--runs`` times (3) against the same stack; the bench prints min/median/max of the
largest passing step. This machine may be a virtual one on a shared host, and a run can measure the
host rather than the tester or the stack, in two ways (capacity_accounting.judge_runs):

* steal: at the run's failing step the host took either pinned core for 1 % of the window or more
  (steal time, /proc/stat);
* speed: the same work took another amount of CPU. Every step records the CPU per packet the callers
  sent (µs, tester and stack apart); for the side that stopped each run, its figure at the reference
  step (the largest step every run passed) is compared with the runs' median, and its figure at the
  step that stopped it with the other runs' at that same step. A run more than 10 % off at the
  reference, or more than 10 % dearer at its stop, ran on a core of another speed (this host moves it
  by 20-40 % without any steal).

Such a run is reported and not counted, and another runs in its place (``--reruns``, 2 at most). The
final JSON line:

* ``callers``: the largest passing step, median of the runs (figures below: of the median run);
* ``callers_per_core``: the same number (the tester had exactly one core). It is what one core was
  measured to carry only when ``limited_by`` is ``tester``, the tester's core was busy (>= 85 %) and
  the tester's own work was most of that at the failing step; otherwise (the ramp stopped for something
  else first, or the tester was late with CPU to spare: its loop stalled, or unpinned work from
  elsewhere crowded the tester's core, or the host took its virtual CPU for 1 % of the window: steal
  time) it is a lower bound
  (``callers_per_core_is_lower_bound``, ``runs[].stopped_at`` has the core shares);
* ``limited_by``, ``lateness_p99_ms`` and ``stage_error_p99_ms`` (per stage, ms) at the largest passing
  step (the summary also prints each run's stage error at 100 callers;
  ``runs[].stage_error_p99_ms_by_step`` has every passing step's; ``runs[].gateway_loop_delay_p99_ms_by_step``
  the gateway's own event-loop delay at every step, the failing one included), ``runs`` (each counted run's
  figures, with its ``us_per_packet`` at the reference step, its ``speed_deviation`` and its
  ``stop_deviation``),
  ``disturbed_runs`` (those left out, ``left_out`` says why),
  ``speed_reference_callers``, ``loadavg`` (the machine's load at start and end).

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/capacity.py [--runs 3] [--steps 10,50,100,125,150,165,...] [--budget 600]

After each ramp the bench hands the heap the C allocator keeps free back to the OS and prints how much
that was (``after run N: RSS ...``): the process's memory across ramps, without the allocator's slack.

``--nice -10`` (root) gives the tester's session a larger share against unpinned work on its core;
``--py-spy DIR`` records a py-spy profile of this process over each step's window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affinity import choose_cores, lower_engines, pin_self, pin_stack  # noqa: E402 -- bench/ is this script's directory
from capacity_accounting import SPEED_TOLERANCE, STEAL_PERCENT  # noqa: E402
from capacity_runs import RunResult, assess, print_speeds, summarize  # noqa: E402
from capacity_swarm import HEADER, Swarm, TruthFile, measure_step, row  # noqa: E402
from looptrace import LoopTrace  # noqa: E402
from procstat import gateway_decode_failures, rss_mb, trim_heap_mb  # noqa: E402

from loadtest.config import RunConfig  # noqa: E402
from loadtest.fixtures import FixtureLibrary, silence_packet  # noqa: E402
from loadtest.ice import choose_ice  # noqa: E402
from loadtest.media import FRAME_S, LATENESS_KEPT  # noqa: E402
from loadtest.profile_file import load_profile  # noqa: E402
from loadtest.target import ssl_context, stack_target  # noqa: E402
from loadtest.webrtc_client import ClientOptions  # noqa: E402
from sut.stack import StackInfo  # noqa: E402
from tests.integration.stackrun import MANIFEST, running_stack, short_fixture_ids  # noqa: E402

PORTS_PER_CALLER = 4  # mediasoup: send + recv WebRTC transports, the gateway's tap and TTS inject
# 10 % apart from 150 up, where the runs end: runs one step apart then differ by 10 %, not 17 %. The
# last is over what the capacity config's ports hold (250): a ramp that passes 240 is limited by ports.
DEFAULT_STEPS = (10, 50, 100, 125, 150, 165, 180, 200, 220, 240, 260)
SETTLE_S = 3.0  # after the last connect: DTLS/ICE consent and the new callers' first packets settle


async def ramp(info: StackInfo, args: argparse.Namespace, steps: list[int], cores: tuple[int, int],
               truth: TruthFile, run: int, dropped_for_ports: bool) -> RunResult:
    fixture_ids = short_fixture_ids(max_duration_s=3.5, count=6)
    library = FixtureLibrary(MANIFEST)
    # Encode every clip before any caller runs: encoding on the media loop would stall every caller.
    longest = max(library.get(i).duration_s for i in fixture_ids)
    cfg = RunConfig()
    choose_ice(cfg.target.ice_addresses, info.target_url).apply()  # the stack is on loopback
    options = ClientOptions(
        url=info.target_url, profile=load_profile(cfg.target.profile),
        ssl_context=ssl_context(stack_target(info)),  # also resolves the stack's host names to it
        connect_timeout_s=15.0, request_timeout_s=15.0, response_timeout_s=args.response_timeout,
        source_language=cfg.scenario.source_language, target_language=cfg.scenario.target_language)
    swarm = Swarm(options, library, fixture_ids, args.interval, silence_packet(),
                  tag=f"cap-{os.getpid()}-r{run}")
    decode_base = gateway_decode_failures(info.state_dir)
    drain_s = longest + args.response_timeout + 2.0
    started = time.monotonic()
    result = RunResult()
    trace = None
    if args.loop_trace or args.loop_census:
        trace = LoopTrace(census=args.loop_census)
        trace.install(asyncio.get_running_loop())
    stack_cpus = {cores[1]}
    pinned = pin_stack([info.state_dir], stack_cpus)
    print(f"run {run}: {len(pinned)} stack processes pinned to CPU {cores[1]}", flush=True)
    print(HEADER, flush=True)
    try:
        for callers in steps:
            # A step costs connecting, settling, the window and the drain; skip what the budget can't hold.
            step_cost = SETTLE_S + args.window + drain_s + 0.1 * (callers - len(swarm.callers)) + 10.0
            if time.monotonic() - started + step_cost > args.budget:
                print(f"(time budget {args.budget:.0f} s reached before {callers} callers)", flush=True)
                return result
            failed = await swarm.grow(callers, args.connect_concurrency, timeout_s=120.0)
            pin_stack([info.state_dir], stack_cpus)  # workers the gateway started for the new callers
            await asyncio.sleep(SETTLE_S)  # the new callers' connection work must not count as lateness
            step = await measure_step(swarm, info.state_dir, truth, failed, args, cores, decode_base, drain_s,
                                      trace, info.gateway_urls)
            pin_stack([info.state_dir], stack_cpus)
            result.steps.append(step)
            print(row(step), flush=True)
            if step.transit_ms:
                waits = ", ".join(f"{k} {v:.1f} %" for k, v in step.stack_wait_percent.items())
                loop = ("" if step.gateway_loop_delay_p99_ms is None else
                        f"; gateway loop delay p99 {step.gateway_loop_delay_p99_ms:.1f} ms")
                print(f"{'':>7} transit p50/p99 ms: {step.transit_ms}; stack run-queue wait: {waits}; "
                      f"steal T {step.tester_steal_percent:.1f} %, S {step.stack_steal_percent:.1f} %{loop}",
                      flush=True)
            for reason, count in step.not_ok.items():
                print(f"{'':>7} {count} × {reason}", flush=True)
            if not step.passed and not args.keep_going:
                return result
        result.next_step_over_ports = dropped_for_ports and all(s.passed for s in result.steps)
        return result
    finally:
        await swarm.shutdown(timeout_s=drain_s + 30.0)
        if trace is not None:
            trace.uninstall()


def measure_runs(info: StackInfo, args: argparse.Namespace, steps: list[int], cores: tuple[int, int],
                 truth: TruthFile, dropped_for_ports: bool) -> list[RunResult]:
    """``--runs`` ramps that count, with up to ``--reruns`` more in place of runs the host disturbed (steal)
    or ran at another speed (``judge_runs``: judged once ``--runs`` ramps have run)."""
    runs: list[RunResult] = []
    while len(runs) < args.runs + args.reruns:
        if len(runs) >= args.runs:
            reference, verdicts = assess(runs)
            if sum(v.counted for v in verdicts) >= args.runs:
                break
            print_speeds(runs, reference, verdicts)
            print(f"{sum(v.counted for v in verdicts)} of {len(runs)} runs count: one more", flush=True)
        run = asyncio.run(ramp(info, args, steps, cores, truth, len(runs) + 1, dropped_for_ports))
        runs.append(run)
        gc.collect()
        rss, freed = rss_mb(), trim_heap_mb()
        print(f"after run {len(runs)}: RSS {rss:.0f} MB, of which {freed:.0f} MB freed heap the C allocator "
              "kept (returned to the OS now)", flush=True)
        if run.disturbed and run.failed is not None:
            print(f"run {len(runs)}: the host took the cores at the failing step (steal: tester "
                  f"{run.failed.tester_steal_percent:.1f} %, stack {run.failed.stack_steal_percent:.1f} %): "
                  "this run measured the host, not counted", flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)))
    parser.add_argument("--runs", type=int, default=3, help="ramps to run (min/median/max reported)")
    parser.add_argument("--reruns", type=int, default=2,
                        help="extra ramps at most, in place of runs that measured the host: steal time >= "
                        f"{STEAL_PERCENT:g} %% of a pinned core at the failing step, or CPU per packet "
                        f"{100 * SPEED_TOLERANCE:g} %% off the runs' median (or dearer than the others' "
                        "at the failing step)")
    parser.add_argument("--window", type=float, default=20.0, help="measurement window per step, s")
    parser.add_argument("--interval", type=float, default=5.0, help="utterance interval per caller, s")
    parser.add_argument("--response-timeout", type=float, default=5.0)
    parser.add_argument("--lateness-limit-ms", type=float, default=10.0)
    parser.add_argument("--connect-concurrency", type=int, default=10)
    parser.add_argument("--budget", type=float, default=600.0, help="time budget of each run's ramp, s")
    parser.add_argument("--port-offset", type=int, default=1500)
    parser.add_argument("--config", default="capacity-truth", help="stack config (ground_truth = true)")
    parser.add_argument("--state-dir", default=None, help="keep the stack's state dir here (default: temp)")
    parser.add_argument("--nice", type=int, default=0,
                        help="diagnostic: give the tester's session (autogroup) this nice value (e.g. -10, "
                        "as root) against the unpinned work sharing its core")
    parser.add_argument("--engines-nice", type=int, default=10,
                        help="nice value of the stack's engine services' sessions (stt, translation, tts) on "
                        "the stack's core, below its media path and proxy (0: as started)")
    parser.add_argument("--keep-going", action="store_true",
                        help="measure every step, also after a failing one (diagnostics)")
    parser.add_argument("--loop-trace", action="store_true",
                        help="diagnostic: print where the loop's time went in each step's window "
                        "(slow turns, callback sources; bench/looptrace.py)")
    parser.add_argument("--loop-census", action="store_true",
                        help="diagnostic: --loop-trace, plus what the window's first collections walked "
                        "(object counts by type; stalls the loop itself)")
    parser.add_argument("--py-spy", metavar="DIR", default=None, help="record a py-spy profile per step")
    args = parser.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    if args.window / FRAME_S > LATENESS_KEPT:
        kept_s = LATENESS_KEPT * FRAME_S
        parser.error(f"--window {args.window:g}: each track keeps the last {kept_s:.0f} s of packet lateness "
                     "(loadtest/media.py LATENESS_KEPT); a longer window is not measured whole")
    if args.runs < 1 or args.reruns < 0 or not steps:
        parser.error("--runs must be >= 1, --reruns >= 0 and --steps non-empty")
    if args.py_spy is not None:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    load_start = tuple(round(x, 2) for x in os.getloadavg())
    cores = choose_cores()

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(args.state_dir or tmp) / "stack"
        state.mkdir(parents=True, exist_ok=True)
        # The stack starts before this process is pinned: its processes inherit no mask from us.
        with running_stack(args.config, state, args.port_offset) as info:
            if info.ground_truth_path is None:
                parser.error(f"stack config {args.config} has ground_truth = false: no stage error")
            gw = info.config.gateway
            max_callers = (gw.rtc_max_port - gw.rtc_min_port + 1) // PORTS_PER_CALLER
            dropped = [s for s in steps if s > max_callers]
            if dropped:
                print(f"(steps {dropped} skipped: the stack's RTC ports hold {max_callers} callers)",
                      flush=True)
            steps = [s for s in steps if s <= max_callers]
            if args.engines_nice:
                lowered = lower_engines([info.state_dir], args.engines_nice)
                print(f"the stack's {lowered} engine services at nice {args.engines_nice} on its core",
                      flush=True)
            threads = pin_self({cores[0]})
            print(f"tester pinned to CPU {cores[0]} ({threads} threads); load average {load_start}",
                  flush=True)
            autogroup = Path("/proc/self/autogroup")
            if args.nice:
                autogroup.write_text(str(args.nice))
            truth = TruthFile(info.ground_truth_path)
            try:
                runs = measure_runs(info, args, steps, cores, truth, bool(dropped))
            finally:
                if args.nice:
                    autogroup.write_text("0")
    print(json.dumps(summarize(runs, cores, load_start)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
