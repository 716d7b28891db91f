"""One fault, for real: the reference stack with it switched on (stack config `[faults]`) or injected
mid-run (a process killed and restarted), `loadtest run --target` (the direct engine, a child process)
against it, and what came out: the tester's exit, the accounting, where and why utterances failed.

Used by bench/faults.py (the whole matrix, docs/reliability.md) and tests/integration/test_faults.py.
Waiting is polling other processes (the journal growing, the tester's exit): bounded, never a sleep
standing in for an event.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sut import procs
from sut.config import REPO_ROOT, StackConfig, load_stack_config
from sut.stack import ReferenceStack

POLL_S = 0.2
FIXTURE_IDS = ("cards-001", "cards-004", "cards-003", "cards-002")  # the shortest clips (1.1–1.8 s)


@dataclass(frozen=True)
class Fault:
    name: str
    title: str  # the fault, for the table
    expected: str  # what it implies, in words
    check: Callable[[Observed], list[str]]  # the expected outcome: problems found ([] = as expected)
    faults: dict[str, Any] = field(default_factory=dict)  # stack config [faults] keys
    gateway: dict[str, Any] = field(default_factory=dict)  # stack config [gateway] keys
    base: str = "fixed-delays"  # stack config the fault modifies
    action: str = ""  # mid-run: "restart:<process>", "kill:<process>", "kill-worker" (mediasoup worker)
    reconnect: bool = False
    callers: int = 2
    engine: str = "direct"  # or "locust"


@dataclass
class Observed:
    fault: str
    exit_code: int | None  # the tester's; None: it had to be killed (did not survive)
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    acted_at: float | None  # wall clock of the mid-run action
    tester_log: str
    problems: list[str] = field(default_factory=list)  # generic checks (accounting, stages, report)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.summary.get("utterances", {}))

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]

    def after(self) -> list[dict[str, Any]]:
        """Rows of utterances planned after the mid-run action (2 s margin)."""
        t = self.acted_at
        return [] if t is None else [r for r in self.rows if float(r["wall_start"]) > t + 2.0]

    def before(self) -> list[dict[str, Any]]:
        """Rows of utterances planned at least 4 s before the action: a clip (<= 1.8 s) and its results
        (~1.3 s) were over by then. Those in between met the fault in flight and are neither."""
        t = self.acted_at
        return list(self.rows) if t is None else [r for r in self.rows if float(r["wall_start"]) < t - 4.0]

    def describe(self) -> str:
        c = self.counts
        text = f"sent {c.get('sent', 0)}: ok {c.get('ok', 0)}, timeout {c.get('timeout', 0)}, " \
               f"error {c.get('error', 0)}"
        stages: dict[str, int] = {}
        for r in self.failed():
            key = f"{r.get('status')} at {r.get('status_stage')}"
            stages[key] = stages.get(key, 0) + 1
        if stages:
            text += " (" + ", ".join(f"{n} {k}" for k, n in sorted(stages.items())) + ")"
        if self.summary.get("reconnects"):
            text += f"; {self.summary['reconnects']} reconnects"
        figures = self.summary.get("stages", {})
        p50 = {k: (figures.get(k) or {}).get("p50") for k in ("stt", "e2e")}
        if c.get("ok") and None not in p50.values():
            text += f"; p50 stt {p50['stt']:.0f} ms, e2e {p50['e2e']:.0f} ms"
        return text


def stack_config(fault: Fault, port_offset: int) -> StackConfig:
    cfg = load_stack_config(fault.base)
    faults, gateway = replace(cfg.faults, **fault.faults), replace(cfg.gateway, **fault.gateway)
    cfg = replace(cfg, faults=faults, gateway=gateway)
    return cfg.with_port_offset(port_offset)


def run_fault(fault: Fault, workdir: Path, port_offset: int, duration_s: float = 30.0,
              interval_s: float = 4.0, response_timeout_s: float = 6.0) -> Observed:
    """The fault on a fresh stack in `workdir`; the stack is stopped on return."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = ReferenceStack(stack_config(fault, port_offset), workdir / "state")
    info = stack.start()
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)  # a previous run's journal must not look like this run's
    try:
        config = workdir / "run.toml"
        config.write_text(
            "[scenario]\n" f"fixture_ids = {json.dumps(list(FIXTURE_IDS))}\n"
            f"utterance_interval_s = {interval_s}\nresponse_timeout_s = {response_timeout_s}\n"
            f"reconnect = {'true' if fault.reconnect else 'false'}\n")
        argv = [sys.executable, "-m", "loadtest.cli", "run", "--target", info.target_url, "--ca-cert",
                str(info.ca_cert), *info.resolve_args, "--config", str(config), "--engine", fault.engine,
                "--callers", str(fault.callers), "--duration", str(duration_s), "--skip-preflight",
                "--out", str(out)]
        log_path = workdir / "tester.log"
        with log_path.open("wb") as log:
            tester = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
            acted_at = None
            try:
                if fault.action:
                    _wait(lambda: _journaled(out) >= 2 * fault.callers or tester.poll() is not None, 90.0)
                    # Mid-utterance: 1 s into the next slot (speech or STT in flight), so the fault
                    # meets utterances in flight, not an idle gap between two.
                    slot = max((float(r["wall_start"]) for r in _rows(out)), default=time.time())
                    moment = slot + interval_s + 1.0
                    _wait(lambda: time.time() >= moment or tester.poll() is not None, interval_s + 5.0)
                    acted_at = time.time()
                    _act(stack, fault.action)
                limit = duration_s + response_timeout_s + 90.0
                _wait(lambda: tester.poll() is not None, limit)
            finally:
                if tester.poll() is None:  # it did not survive the fault in time: that is the finding
                    tester.kill()
                    tester.wait(timeout=10)
                    code = None
                else:
                    code = tester.returncode
    finally:
        stack.stop()
    observed = Observed(fault.name, code, _read_json(out / "summary.json"), _rows(out), acted_at,
                        log_path.read_text(errors="replace"))
    observed.problems = generic_problems(observed, out)
    return observed


def generic_problems(o: Observed, out: Path) -> list[str]:
    """What every fault must leave intact: the tester survives (exit 0/1), the report builds, every
    utterance is accounted exactly once, and every failed one names its stage and why."""
    problems = []
    if o.exit_code not in (0, 1):
        problems.append(f"tester exit {o.exit_code} (did not survive or nothing measured)")
    if not (out / "report.html").is_file() or not o.summary:
        problems.append("no report")
    c = o.counts
    if not c or c["sent"] != c["ok"] + c["timeout"] + c["error"] or c["sent"] != len(o.rows):
        problems.append(f"accounting: {c} vs {len(o.rows)} journaled rows")
    unnamed = [r for r in o.failed() if not r.get("status_stage") or not r.get("error")]
    if unnamed:
        problems.append(f"{len(unnamed)} failed utterance(s) without stage or reason")
    return problems


def _act(stack: ReferenceStack, action: str) -> None:
    verb, _, name = action.partition(":")
    if verb == "kill-worker":
        gateway = stack.record(name or "gateway")
        workers = [pid for pid in _children(gateway.pid) if b"mediasoup-worker" in _cmdline(pid)]
        if not workers:
            raise RuntimeError("no mediasoup worker under the gateway")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        return
    record = stack.record(name)
    os.killpg(record.pid, signal.SIGKILL)  # the process and what it spawned, as a crash or OOM kill
    _wait(lambda: not procs.is_alive(record), 10.0)
    if verb == "restart":
        stack.restart(name)
    elif verb != "kill":
        raise ValueError(f"unknown action {action!r}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout_s:.0f} s")
        time.sleep(POLL_S)  # polling other processes' state: nothing to be notified by


def _journaled(out: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in (out / "journal").glob("*.jsonl"))


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for shard in sorted((out / "journal").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
