"""Gateway cost per caller: CPU of the reference gateway (Node) and of its mediasoup worker per caller.

Starts the reference stack in its capacity config (``sut/configs/capacity.toml``: 1 ms model engines,
VAD on the RFC 6464 level header), drives ``--callers`` conversations with the tester's direct engine
(``loadtest.runner.execute_run``: real WebRTC speaker + listener per caller, one loop, in a thread of
this process), waits until the gateway runs a pipeline for every caller (its ``gateway_pipelines``
gauge), lets them settle, and measures over a steady window of ``--window`` seconds the CPU time
(utime + stime, all threads, from /proc/<pid>/stat) of:

* the gateway: the ``node`` process;
* the worker: its mediasoup worker process(es);

each divided by the wall time and the caller count: % of one core per caller. The gateway's idle
CPU (measured before the callers connect) is printed too; it is not subtracted (the figure is an
upper bound). Callers speak the corpus's short clips every ``--interval`` seconds, as bench/capacity.py.

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/gateway_cost.py --callers 20 [--window 30] [--interval 5] [--port-offset 960]

Ends with one JSON line: ``{"callers", "gateway_cpu_percent_per_caller", "worker_cpu_percent_per_caller",
...}``. Codec errors in the gateway's log and utterances that were not ok are reported: a cheap
gateway that drops audio is no result.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway_metrics import loop_delay_p99_ms, metric  # noqa: E402 -- bench/ is this script's own directory
from procstat import proc_cpu_s, stack_groups  # noqa: E402

from tests.integration.stackrun import run_callers, running_stack, short_fixture_ids  # noqa: E402

SETTLE_S = 3.0  # after the last pipeline starts: ICE/DTLS consent and the first packets settle
IDLE_S = 3.0  # the gateway's idle CPU, measured before any caller connects
CONNECT_BUDGET_S = 90.0  # every caller must be connected by then
CODEC_ERROR = re.compile(r"opus (?:decode|encode)[^\n]*fail|codec error|out of bounds", re.IGNORECASE)


def cpu_of(pids: list[int]) -> float:
    return sum(proc_cpu_s(p) for p in pids)


def wait_for_pipelines(url: str, callers: int, runner: threading.Thread,
                       errors: list[BaseException]) -> float:
    """Poll the gateway until it runs ``callers`` pipelines; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < CONNECT_BUDGET_S and runner.is_alive():
        if (metric(url, "gateway_pipelines") or 0) >= callers:
            return time.monotonic() - started
        time.sleep(0.2)  # polling the gateway's own gauge; there is no event to wait on
    why = f" (the callers' run failed: {errors[0]!r})" if errors else ""
    raise SystemExit(f"only {metric(url, 'gateway_pipelines')} of {callers} pipelines after "
                     f"{time.monotonic() - started:.0f} s{why}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--window", type=float, default=30.0, help="measurement window, s")
    parser.add_argument("--interval", type=float, default=5.0, help="utterance interval per caller, s")
    parser.add_argument("--port-offset", type=int, default=960)
    parser.add_argument("--config", default="capacity", help="stack config (default: capacity)")
    args = parser.parse_args()
    ids = short_fixture_ids(max_duration_s=3.5, count=6)
    # The run lasts the connect phase, the settle time, the window and a tail, whatever the connects took.
    duration_s = CONNECT_BUDGET_S / 3 + SETTLE_S + args.window + 2 * args.interval

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "stack"
        state.mkdir()
        with running_stack(args.config, state, args.port_offset) as info:
            gw = info.config.gateway
            url = f"http://{info.config.host}:{gw.port}"
            groups = stack_groups([state])
            t0, idle0 = time.monotonic(), cpu_of(groups["gateway"])
            time.sleep(IDLE_S)  # the idle measurement window
            idle_pct = 100.0 * (cpu_of(groups["gateway"]) - idle0) / (time.monotonic() - t0)

            frames: list[object] = []
            errors: list[BaseException] = []

            def drive() -> None:
                try:
                    frames.append(run_callers(info, Path(tmp) / "run", callers=args.callers,
                                              duration_s=duration_s, interval_s=args.interval,
                                              fixture_ids=ids, response_timeout_s=5.0))
                except BaseException as exc:  # reported below, after the window
                    errors.append(exc)

            runner = threading.Thread(target=drive, name="callers", daemon=True)
            runner.start()
            connect_s = wait_for_pipelines(url, args.callers, runner, errors)
            time.sleep(SETTLE_S)  # settling, not synchronisation: the callers are all connected
            groups = stack_groups([state])  # the worker's pid is known now for certain
            w0, g0, m0 = time.monotonic(), cpu_of(groups["gateway"]), cpu_of(groups["mediasoup"])
            time.sleep(args.window)  # the measurement window: the callers run meanwhile
            wall = time.monotonic() - w0
            g1, m1 = cpu_of(groups["gateway"]), cpu_of(groups["mediasoup"])
            pipelines = metric(url, "gateway_pipelines")
            loop_delay = loop_delay_p99_ms((url,))  # its last 10 s: inside the window
            runner.join(timeout=duration_s + 60.0)
            log_text = (state / "gateway.log").read_text(errors="replace")

    if errors:
        raise SystemExit(f"the callers' run failed: {errors[0]!r}")
    frame = frames[0] if frames else None
    statuses = frame["status"].value_counts().to_dict() if frame is not None else {}  # type: ignore[index]
    total = int(sum(statuses.values()))
    codec_errors = len(CODEC_ERROR.findall(log_text))
    gw_pct = 100.0 * (g1 - g0) / wall
    worker_pct = 100.0 * (m1 - m0) / wall
    print(f"{args.callers} callers ({args.config} config, utterances every {args.interval:g} s), all "
          f"connected in {connect_s:.1f} s; window {wall:.1f} s with {pipelines:.0f} pipelines")
    print(f"  gateway (node)      {gw_pct:6.2f} % of a core = {gw_pct / args.callers:.3f} % per caller "
          f"(idle before the callers: {idle_pct:.2f} %)")
    print(f"  mediasoup worker    {worker_pct:6.2f} % of a core = {worker_pct / args.callers:.3f} % "
          "per caller")
    if loop_delay is not None:
        print(f"  gateway event-loop delay p99 over the window's last 10 s: {loop_delay:.1f} ms")
    print(f"  utterances: {total} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}); "
          f"codec errors in the gateway log: {codec_errors}")
    print(json.dumps({
        "callers": args.callers,
        "gateway_cpu_percent_per_caller": round(gw_pct / args.callers, 3),
        "worker_cpu_percent_per_caller": round(worker_pct / args.callers, 3),
        "gateway_idle_cpu_percent": round(idle_pct, 2),
        "utterances": total,
        "ok": int(statuses.get("ok", 0)),
        "codec_errors": codec_errors,
        "gateway_loop_delay_p99_ms": None if loop_delay is None else round(loop_delay, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
