"""Child-process plumbing for the reference stack: spawn with a log file, recognise, stop, and probe health.

Each process runs in its own session (process group), so stopping it also stops what it spawned (the
gateway's mediasoup workers, nginx's workers). A recorded pid is trusted only together with the
process's start time from /proc, so a recycled pid is never signalled.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest import stopping

TERM_GRACE_S = 10.0
KILL_GRACE_S = 5.0
POLL_S = 0.1


@dataclass(frozen=True)
class ProcessRecord:
    """What pids.json remembers about one process."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: with the pid, identifies the process
    log: str
    health_url: str | None
    # Connect here instead of the health URL's host, which stays the TLS SNI and Host header (a proxy
    # that routes by host name, reached on [stack].host); None: the URL's host.
    connect_to: str | None = None

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @staticmethod
    def from_json(data: Mapping[str, object]) -> ProcessRecord:
        return ProcessRecord(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            start_ticks=int(str(data["start_ticks"])),
            log=str(data["log"]),
            health_url=None if data.get("health_url") is None else str(data["health_url"]),
            connect_to=None if data.get("connect_to") is None else str(data["connect_to"]),
        )


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    """True while the recorded process (same pid *and* start time) exists and is not a zombie."""
    fields = _stat_fields(record.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == record.start_ticks


def owner_died(doc: Mapping[str, object]) -> bool:
    """pids.json names an owner process (a run's embedded stack) that no longer exists."""
    owner = doc.get("owner")
    if not isinstance(owner, dict):
        return False
    try:
        record = ProcessRecord("owner", int(owner["pid"]), int(owner["start_ticks"]), "", None)
    except (KeyError, TypeError, ValueError):
        return False
    return not is_alive(record)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path, health_url: str | None,
    die_with_parent: bool = False, connect_to: str | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start one process in its own session; `die_with_parent`: it gets SIGTERM when this process dies."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # own process group: stopping it reaches its children too
            preexec_fn=stopping.die_with_parent() if die_with_parent else None,
        )
    ticks = start_ticks(proc.pid)
    record = ProcessRecord(name, proc.pid, ticks if ticks is not None else -1, str(log_path), health_url,
                           connect_to)
    return proc, record


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)  # polling an external process's state; nothing to be notified by


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(record: ProcessRecord, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process's group, SIGKILL after TERM_GRACE_S; then sweep the group's leftovers."""
    pgid = record.pid  # start_new_session=True: the leader's pid is the group id

    def gone() -> bool:
        if child is not None:
            child.poll()  # reap our own child, else it lingers as a zombie
        return not is_alive(record)

    if is_alive(record):
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_until(gone, TERM_GRACE_S):
            _signal_group(pgid, signal.SIGKILL)
            _wait_until(gone, KILL_GRACE_S)
    # Members that outlived the leader (e.g. a worker that ignored SIGTERM) belong to this stack too.
    if group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        _wait_until(lambda: not group_members(pgid), KILL_GRACE_S)


def port_in_use(host: str, port: int, udp: bool = False) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as servers set it: TIME_WAIT leftovers of a previous run do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def probe_health(url: str, ca_cert: Path | None = None, timeout_s: float = 2.0,
                 connect_to: str | None = None) -> dict[str, object] | None:
    """Readiness of one process: GET a /health URL (the decoded JSON if the server answered 200 or a
    JSON "degraded"); ``redis://host:port`` answers PING; ``stun://host:port`` answers a STUN Binding
    request over UDP (coturn). None when not ready. `connect_to`: the address to connect to (the
    URL's host stays the SNI and Host header)."""
    scheme, _, rest = url.partition("://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if scheme == "redis":
        return _probe_redis(host, int(port), timeout_s)
    if scheme == "stun":
        return _probe_stun(host, int(port), timeout_s)
    conn: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
        # Readiness, not an audit: the chain must lead to the stack's CA, but the host name is not
        # checked, so a stack with the misissued-certificate fault still comes up (preflight judges it).
        context.check_hostname = False
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout_s, context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        if connect_to is not None:  # connected here, so http.client never resolves the URL's host
            sock = socket.create_connection((connect_to, int(port)), timeout=timeout_s)
            conn.sock = context.wrap_socket(sock, server_hostname=host) if scheme == "https" else sock
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    # A gateway with a backend down answers "degraded" (maybe with 503): it is up and serving.
    if response.status == 200 or data.get("status") == "degraded":
        return data
    return None


def _probe_redis(host: str, port: int, timeout_s: float) -> dict[str, object] | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError:
        return None
    return {"status": "ok"} if answer.startswith(b"+PONG") else None


STUN_MAGIC = 0x2112A442


def _probe_stun(host: str, port: int, timeout_s: float) -> dict[str, object] | None:
    # RFC 5389 Binding request: type 0x0001, length 0, magic cookie, 12-byte transaction id.
    transaction = os.urandom(12)
    request = b"\x00\x01\x00\x00" + STUN_MAGIC.to_bytes(4, "big") + transaction
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(request, (host, port))
            answer = sock.recv(2048)
        except OSError:
            return None
    # 0x0101: Binding success response, for our transaction.
    if len(answer) >= 20 and answer[:2] == b"\x01\x01" and answer[8:20] == transaction:
        return {"status": "ok"}
    return None


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"
