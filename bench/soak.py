"""Long run: half the measured capacity for 30 minutes against the reference stack; are we leaking?

Runs `loadtest run --engine direct` (a child process) with `--callers N` (default: half the `callers`
of bench/capacity.py's last JSON line, saved with `bench/capacity.py | tail -1 > FILE`, read from
`--capacity-json`) for `--minutes`, then prints, from the tester's own samples (tester-health.jsonl:
one every 5 s) and its journal:

* RSS slope (MB/hour; least squares over the samples after the warm-up while every caller was
  connected), open fds and asyncio tasks at the start and the end of that steady stretch;
* send lateness p99 per 5-minute window (the tester falling behind its plan as it ages);
* the accounting: sent == ok + timeout + error == journaled rows.

Ends with one JSON line:

    {"minutes": M, "callers": N, "rss_slope_mb_per_hour": S, "fds_start": A, "fds_end": B,
     "tasks_start": T, "tasks_end": U, "lateness_p99_ms_max_window": L, "accounting_exact": true}

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/soak.py [--callers 10] [--minutes 30] [--port-offset 1455]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtest.selfwatch import lateness_windows, read_samples, slope_per_hour, steady  # noqa: E402
from sut.config import load_stack_config  # noqa: E402
from sut.stack import ReferenceStack  # noqa: E402

WARMUP_S = 60.0
WINDOW_S = 300.0


def capacity_callers(path: Path) -> int:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip().startswith("{")]
        return int(json.loads(lines[-1])["callers"])
    except (OSError, IndexError, KeyError, ValueError) as exc:
        raise SystemExit(f"soak: no measured capacity in {path} ({exc}): run bench/capacity.py and save its "
                         "last line there, or pass --callers N") from None


def soak_run(out: Path, target: Any, callers: int, seconds: float, extra: list[str]) -> int:
    """`loadtest run` against the started stack; returns its exit code (bounded wait)."""
    argv = [sys.executable, "-m", "loadtest.cli", "run", "--target", target.target_url, "--ca-cert",
            str(target.ca_cert), *target.resolve_args, "--engine", "direct", "--callers", str(callers),
            "--duration", str(seconds), "--skip-preflight", "--out", str(out), *extra]
    with (out.parent / "tester.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            return proc.wait(timeout=seconds + 180.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return -1


def figures(out: Path, callers: int, minutes: float, warmup_s: float = WARMUP_S,
            window_s: float = WINDOW_S) -> dict[str, Any]:
    """What a soak found, from the run directory."""
    samples = steady(read_samples(out), callers, warmup_s)
    rows = [json.loads(line) for shard in sorted((out / "journal").glob("*.jsonl"))
            for line in shard.read_text().splitlines() if line.strip()]
    try:
        counts = json.loads((out / "summary.json").read_text())["utterances"]
    except (OSError, ValueError, KeyError):
        counts = {}
    windows = lateness_windows(rows, window_s)
    worst = [p for _, _, p in windows if p is not None]
    exact = bool(counts) and counts["sent"] == counts["ok"] + counts["timeout"] + counts["error"] == len(rows)
    return {
        "minutes": minutes, "callers": callers,
        "rss_slope_mb_per_hour": _round(slope_per_hour([(s["t_s"], s["rss_mb"]) for s in samples])),
        "fds_start": samples[0]["fds"] if samples else None,
        "fds_end": samples[-1]["fds"] if samples else None,
        "tasks_start": samples[0]["tasks"] if samples else None,
        "tasks_end": samples[-1]["tasks"] if samples else None,
        "lateness_p99_ms_max_window": _round(max(worst)) if worst else None,
        "accounting_exact": exact, "utterances": counts, "windows": windows, "samples": len(samples),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, help="callers (default: half the measured capacity)")
    parser.add_argument("--capacity-json", default=str(REPO / "reports" / "bench" / "capacity.json"))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--port-offset", type=int, default=1455)
    parser.add_argument("--stack-config", default="fixed-delays")
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    callers = args.callers or max(1, capacity_callers(Path(args.capacity_json)) // 2)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="speechload-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    stack_cfg = load_stack_config(args.stack_config).with_port_offset(args.port_offset)
    stack = ReferenceStack(stack_cfg, root / "state")
    info = stack.start()
    t0 = time.monotonic()
    try:
        code = soak_run(root / "out", info, callers, args.minutes * 60.0, [])
    finally:
        stack.stop()
    found = figures(root / "out", callers, args.minutes)
    for k, n, p in found.pop("windows"):
        start = k * WINDOW_S / 60.0
        late = "–" if p is None else f"{p:.1f} ms"
        print(f"window {start:4.0f}–{start + WINDOW_S / 60:.0f} min: {n} utterances, lateness p99 {late}",
              file=sys.stderr)
    print(f"tester exit {code} after {time.monotonic() - t0:.0f} s; utterances {found.pop('utterances')}; "
          f"{found.pop('samples')} steady samples; run directory {root}", file=sys.stderr)
    print(json.dumps(found))
    return 0 if found["accounting_exact"] and code in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
