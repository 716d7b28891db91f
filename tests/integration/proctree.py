"""Real processes for the kill and fault tests: `loadtest run` as a child, its process tree, bounded waits.

Waiting here is polling another process's state (its journal growing, its exit, its children dying):
there is nothing to be notified by, so each wait polls with a deadline and fails the test on expiry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sut.procs import start_ticks

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.2


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)  # polling another process's state: nothing to be notified by


@dataclass(frozen=True)
class Proc:
    pid: int
    ticks: int
    cmd: str

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        fields = state[state.rindex(")") + 2:].split()
        return fields[0] != "Z" and int(fields[19]) == self.ticks


def descendants(root: int) -> list[Proc]:
    """Every live process below `root` (by parent pid), with its start time and command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[Proc] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        ticks = start_ticks(pid)
        try:
            cmd = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
        if ticks is not None:
            found.append(Proc(pid, ticks, cmd.strip()))
        todo.extend(children.get(pid, []))
    return found


def loadtest(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen[bytes]:
    """`loadtest ARGS` as a child process, output to the given files (default: captured pipes)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "loadtest.cli", *args], cwd=REPO, env=full_env,
                            **popen)  # type: ignore[call-overload]


def journal_lines(run_dir: Path) -> list[str]:
    lines: list[str] = []
    for shard in sorted((run_dir / "journal").glob("*.jsonl")):
        lines += [line for line in shard.read_text().splitlines() if line.strip()]
    return lines


def run_toml(path: Path, state_dir: Path, fixture_ids: tuple[str, ...], **scenario: object) -> Path:
    """A run config: the embedded stack's state dir and the scenario (keys of [scenario])."""
    values = {"fixture_ids": list(fixture_ids), **scenario}
    lines = ["[stack]", f'state_dir = "{state_dir}"', "", "[scenario]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path
