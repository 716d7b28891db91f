"""How long the `loadtest` command takes before it does any work, and a whole preflight of a healthy stack.

    .venv/bin/python bench/cli_startup.py [--repeat 5] [--port-offset 320]

`help_s`: median wall time of `loadtest --help` (a new process each time: interpreter start and every
import the verbs' registration pulls in). `preflight_s`: median wall time of `loadtest preflight` against
the reference stack (default config, started once here), as a user runs it: imports plus the checks.
Goals: help ≤ 0.5 s, preflight ≤ 3 s. Ends with one JSON line of its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOADTEST = [sys.executable, "-m", "loadtest.cli"]


def timed(cmd: list[str], timeout_s: float) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=timeout_s, check=False)
    return time.perf_counter() - started, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port-offset", type=int, default=320)
    args = parser.parse_args()

    help_times = []
    for _ in range(args.repeat):
        elapsed, code = timed([*LOADTEST, "--help"], 30)
        if code != 0:
            print(f"loadtest --help exited {code}", file=sys.stderr)
            return 1
        help_times.append(elapsed)
    print(f"loadtest --help: median {statistics.median(help_times):.3f} s "
          f"(min {min(help_times):.3f}, max {max(help_times):.3f}, n={len(help_times)})")

    preflight_times = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "stack"
        up = [sys.executable, "-m", "sut.stack_cli", "up", "--config", "default", "--state-dir", str(state),
              "--port-offset", str(args.port_offset)]
        print("starting the reference stack …", flush=True)
        subprocess.run(up, cwd=REPO, check=True, timeout=180, stdout=subprocess.DEVNULL)
        try:
            for _ in range(args.repeat):
                elapsed, code = timed([*LOADTEST, "preflight", "--state-dir", str(state)], 120)
                if code != 0:
                    print(f"warning: preflight exited {code} (the stack is not healthy?)", file=sys.stderr)
                preflight_times.append(elapsed)
        finally:
            subprocess.run([sys.executable, "-m", "sut.stack_cli", "down", "--state-dir", str(state)],
                           cwd=REPO, check=False, timeout=60, stdout=subprocess.DEVNULL)
    print(f"loadtest preflight: median {statistics.median(preflight_times):.3f} s "
          f"(min {min(preflight_times):.3f}, max {max(preflight_times):.3f}, n={len(preflight_times)})")
    print(json.dumps({"help_s": round(statistics.median(help_times), 3),
                      "preflight_s": round(statistics.median(preflight_times), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
