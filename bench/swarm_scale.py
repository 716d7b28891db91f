"""A large swarm end to end: ``loadtest run --processes N`` (locust: a master and N worker processes)
with >= 150 conversations against the replicated reference stack, every utterance accounted for.

Starts ``sut/configs/replicas-scale.toml`` (two gateway replicas behind Traefik, rooms through Redis,
media piped between replicas; 1 ms model engines, level-header VAD, no TURN) on shifted ports, runs
``loadtest run`` against it as a user would (``--target`` + ``--resolve``, preflight included) with
``--callers`` conversations started ``--spawn-rate`` per second over ``--duration`` s, bounded by
``--hard-timeout`` (the whole locust process group is killed past it), then checks the accounting:

* ``rows == sent == ok + timeout + error``: samples.parquet against summary.json;
* every conversation spoke (``conversations == callers``);
* the master/worker sample merge: one run id; (run_id, utterance_id) unique in samples.parquet; the
  master's journal (``journal/worker-<id>.jsonl``, what the workers shipped) holds every row exactly
  once; each worker's own crash trail (``worker-journal/``) is one shard per worker process, the
  shards are disjoint and their union is exactly samples.parquet's utterances.

Throughput and latency figures are printed for context (the machine also runs the stack, so they are
not the tester's capacity: bench/capacity.py measures that). Ends with one JSON line; exit 1 when a
check failed.

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/swarm_scale.py [--callers 150] [--processes 2] [--spawn-rate 5] [--duration 90]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sut.stack import StackInfo  # noqa: E402
from tests.integration.stackrun import running_stack, short_fixture_ids  # noqa: E402


def loadtest_run(info: StackInfo, out: Path, args: argparse.Namespace) -> tuple[int, float]:
    """``loadtest run`` as a user runs it; (exit code, wall s). Killed, with all of locust, past the bound."""
    config = out.parent / "run.toml"
    ids = short_fixture_ids(max_duration_s=3.5, count=6)
    config.write_text(f"[scenario]\nfixture_ids = {json.dumps(list(ids))}\n")
    cmd = [sys.executable, "-m", "loadtest.cli", "run", "--target", info.target_url, *info.resolve_args,
           "--ca-cert", str(info.ca_cert), "--out", str(out), "--config", str(config),
           "--callers", str(args.callers), "--spawn-rate", str(args.spawn_rate),
           "--duration", str(args.duration), "--interval", str(args.interval),
           "--response-timeout", str(args.response_timeout), "--processes", str(args.processes)]
    started = time.monotonic()
    with (out.parent / "loadtest.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=args.hard_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: loadtest, locust's master and workers
            proc.wait(timeout=30)
            code = -1
    return code, time.monotonic() - started


def jsonl_ids(paths: list[Path]) -> list[list[str]]:
    return [[json.loads(line)["utterance_id"] for line in p.read_text().splitlines() if line.strip()]
            for p in paths]


def account(out: Path, callers: int, processes: int) -> tuple[dict[str, Any], list[str]]:
    """The run directory's figures and the checks that failed (empty: all passed)."""
    frame = pd.read_parquet(out / "samples.parquet")
    u = json.loads((out / "summary.json").read_text())["utterances"]
    master = jsonl_ids(sorted((out / "journal").glob("*.jsonl")))
    trails = jsonl_ids(sorted((out / "worker-journal").glob("*.jsonl")))
    merged = set(frame["utterance_id"])
    union = set().union(*map(set, trails)) if trails else set()
    ok = frame[frame["status"] == "ok"]
    figures = {
        "callers": callers, "processes": processes, "rows": len(frame), "sent": u["sent"], "ok": u["ok"],
        "timeout": u["timeout"], "error": u["error"], "conversations": int(frame["conversation"].nunique()),
        "run_ids": int(frame["run_id"].nunique()),
        "unique_run_utterance": bool(not frame.duplicated(["run_id", "utterance_id"]).any()),
        "workers": int(frame["worker"].nunique()),
        "replicas_seen": int(pd.concat([frame["speaker_node"], frame["listener_node"]]).dropna().nunique()),
        "cross_replica_conversations": int(frame.loc[frame["speaker_node"] != frame["listener_node"],
                                                     "conversation"].nunique()),
        "master_journal_rows": sum(map(len, master)), "worker_journal_rows": [len(t) for t in trails],
        "e2e_p50_ms": round(float(ok["e2e_ms"].quantile(0.50)), 1) if len(ok) else None,
        "e2e_p95_ms": round(float(ok["e2e_ms"].quantile(0.95)), 1) if len(ok) else None,
    }
    checks = {
        "rows == sent == ok + timeout + error":
            len(frame) == u["sent"] == u["ok"] + u["timeout"] + u["error"],
        f"every one of {callers} conversations spoke": figures["conversations"] == callers,
        "one run id": figures["run_ids"] == 1,
        "(run_id, utterance_id) unique": figures["unique_run_utterance"],
        "master journal: every row exactly once": sorted(sum(master, [])) == sorted(merged),
        f"{processes} worker trails": len(trails) == processes == figures["workers"],
        "worker trails disjoint": sum(map(len, trails)) == len(union),
        "worker trails' union == samples": union == merged,
    }
    return figures, [name for name, passed in checks.items() if not passed]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=150)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="conversations started per second")
    parser.add_argument("--duration", type=float, default=90.0, help="run time (locust -t), s")
    parser.add_argument("--interval", type=float, default=10.0, help="utterance interval per caller, s")
    parser.add_argument("--response-timeout", type=float, default=10.0)
    parser.add_argument("--hard-timeout", type=float, default=600.0, help="kill the run past this, s")
    parser.add_argument("--port-offset", type=int, default=1520)
    parser.add_argument("--config", default="replicas-scale")
    parser.add_argument("--out", default=None, help="keep the run directory here (default: temp)")
    args = parser.parse_args()
    if args.callers < 1 or args.processes < 1 or args.spawn_rate <= 0:
        parser.error("--callers, --processes and --spawn-rate must be positive")
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        base.mkdir(parents=True, exist_ok=True)
        (base / "stack").mkdir(exist_ok=True)
        out = base / "run"
        with running_stack(args.config, base / "stack", args.port_offset) as info:
            print(f"stack {args.config} up ({info.config.gateway.replicas} gateway replicas); "
                  f"{args.callers} conversations, {args.processes} locust workers, load average {load_start}",
                  flush=True)
            code, wall = loadtest_run(info, out, args)
        print(f"loadtest run exited {code} after {wall:.0f} s", flush=True)
        if code not in (0, 1) or not (out / "samples.parquet").exists():
            print((base / "loadtest.log").read_text()[-3000:])
            print(json.dumps({"callers": args.callers, "exit_code": code, "checks_passed": False}))
            return 1
        figures, failed = account(out, args.callers, args.processes)
    figures.update(exit_code=code, wall_s=round(wall, 1), checks_passed=not failed, failed_checks=failed,
                   loadavg={"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]})
    f = figures
    print(f"rows {f['rows']} = sent {f['sent']} = ok {f['ok']} + timeout {f['timeout']} "
          f"+ error {f['error']}; {f['conversations']} conversations on {f['workers']} workers "
          f"(trails {figures['worker_journal_rows']}, master journal {figures['master_journal_rows']} rows)")
    print(f"ok e2e p50 {figures['e2e_p50_ms']} ms, p95 {figures['e2e_p95_ms']} ms")
    print("all checks passed" if not failed else f"FAILED: {'; '.join(failed)}")
    print(json.dumps(figures))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
