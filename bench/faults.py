"""The fault matrix on the real stack: each fault of sut/faultcases.py switched on (stack config
`[faults]`) or injected mid-run (a process killed, restarted), `loadtest run` against it, and the
outcome checked against the one the fault implies. Regenerates the table in docs/reliability.md
(between its `faults:begin`/`faults:end` markers) and ends with one JSON line:

    {"faults": N, "as_expected": N, "accounting_exact": N}

    export MEDIASOUP_WORKER_BIN=$(scripts/mediasoup_worker_path.sh)
    .venv/bin/python bench/faults.py [--only stt-500,tts-down] [--port-offset 1450] [--no-docs]

Each fault gets a fresh stack (~1 min each with its 30 s run); `--only` runs a subset and leaves the
other rows of the table as they were.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sut.faultcases import FAULTS, by_name  # noqa: E402
from sut.faultkit import Fault, Observed, run_fault  # noqa: E402

DOC = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
HEADER = ("| fault | made real by | expected outcome | measured outcome | as expected |\n"
          "|---|---|---|---|---|")


def how(fault: Fault) -> str:
    parts = [f"`{k} = {json.dumps(v)}`" for k, v in fault.faults.items()]
    if fault.action:
        verb, _, name = fault.action.partition(":")
        parts.append({"restart": f"SIGKILL to `{name}` mid-utterance, then restarted",
                      "kill": f"SIGKILL to `{name}` mid-utterance",
                      "kill-worker": "SIGKILL to the gateway's mediasoup worker mid-utterance"}[verb])
    if fault.base != "fixed-delays":
        parts.append(f"stack `{fault.base}`")
    if fault.reconnect:
        parts.append("`scenario.reconnect = true`")
    return "; ".join(parts)


def row(fault: Fault, o: Observed, problems: list[str]) -> str:
    verdict = "yes" if not problems else "**no**: " + "; ".join(problems)
    measured = o.describe() + (f"; tester exit {o.exit_code}" if o.exit_code is not None else "")
    return f"| {fault.title} | {how(fault)} | {fault.expected} | {measured} | {verdict} |"


def update_doc(rows: dict[str, str], stamp: str) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    old = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([^|]+?) \|.*$", text[start:end], re.M)}
    lines = [HEADER]
    for f in FAULTS:
        line = rows.get(f.name) or old.get(f.title)
        if line:
            lines.append(line)
    body = f"\n_Measured {stamp} by `bench/faults.py`._\n\n" + "\n".join(lines) + "\n"
    DOC.write_text(text[:start] + body + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated fault names (default: all)")
    parser.add_argument("--port-offset", type=int, default=1450)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each run speaks")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/reliability.md")
    parser.add_argument("--keep", help="keep every run's directory under this path")
    args = parser.parse_args()
    faults = by_name(args.only.split(",")) if args.only else list(FAULTS)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="speechload-faults-"))
    rows: dict[str, str] = {}
    as_expected = exact = 0
    for fault in faults:
        t0 = time.monotonic()
        o = run_fault(fault, root / fault.name, args.port_offset, duration_s=args.duration)
        problems = o.problems + fault.check(o)
        as_expected += not problems
        exact += not any(p.startswith("accounting") for p in o.problems)
        rows[fault.name] = row(fault, o, problems)
        print(f"{fault.name:28s} {'ok ' if not problems else 'NO '} {o.describe()}  "
              f"({time.monotonic() - t0:.0f} s){'  -- ' + '; '.join(problems) if problems else ''}",
              file=sys.stderr, flush=True)
    if not args.no_docs:
        update_doc(rows, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps({"faults": len(faults), "as_expected": as_expected, "accounting_exact": exact}))
    return 0 if as_expected == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
