"""Start the foreign SFU (sut/foreign/server.js) for tests and demos, and mint its access tokens.

    with foreign_gateway(7601, jwt_secret="s3cret", allowed_origin="http://app.test") as gw:
        token = mint_token("s3cret", {"sub": "alice", "room": "r1"})
        ...  # connect a Socket.IO client to gw.url, path "rtc", namespace "/sfu"
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVER_JS = REPO / "sut" / "foreign" / "server.js"
GATEWAY_MODULES = REPO / "sut" / "gateway" / "node_modules"
WORKER_PATH_SCRIPT = REPO / "scripts" / "mediasoup_worker_path.sh"
READY_PREFIX = "listening on "


class ForeignGatewayError(RuntimeError):
    """The gateway did not come up; the message carries its last output lines."""


@dataclass
class ForeignGateway:
    url: str  # http://<listen ip>:<port>
    process: subprocess.Popen[str]
    output: deque[str] = field(default_factory=lambda: deque(maxlen=500))  # stdout + stderr lines


def mint_token(secret: str, claims: Mapping[str, Any]) -> str:
    """An HS256 JWT of `claims` (PyJWT), as the gateway's `access_token`."""
    import jwt

    return str(jwt.encode(dict(claims), secret, algorithm="HS256"))


def worker_bin() -> str:
    """MEDIASOUP_WORKER_BIN, else the cached build's path from scripts/mediasoup_worker_path.sh."""
    path = os.environ.get("MEDIASOUP_WORKER_BIN", "")
    if not path:
        done = subprocess.run([str(WORKER_PATH_SCRIPT)], capture_output=True, text=True, timeout=10,
                              check=False)  # exit 1 = not built yet; the is_file check below says so
        path = done.stdout.strip()
    if not path or not Path(path).is_file():
        raise ForeignGatewayError(f"no mediasoup worker binary at {path!r}: run `make setup`")
    return path


def _pump(stream: Any, sink: deque[str], lines: queue.Queue[str | None]) -> None:
    # Drains the pipe for the process's whole life, so a chatty gateway never blocks on a full pipe;
    # lines are queued for _wait_ready only until the ready line (after it, only `sink` keeps them).
    waiting = True
    for line in stream:
        sink.append(line.rstrip("\n"))
        if waiting:
            lines.put(line)
            waiting = not line.startswith(READY_PREFIX)
    lines.put(None)  # EOF: the process has gone


def _stop(proc: subprocess.Popen[str], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace_s)


@contextlib.contextmanager
def foreign_gateway(
    port: int,
    *,
    jwt_secret: str,
    allowed_origin: str,
    stats_key: str = "",
    listen_ip: str = "127.0.0.1",
    announced_ip: str | None = None,
    rtc_ports: tuple[int, int] = (46000, 46099),
    ready_timeout_s: float = 20.0,
    stop_timeout_s: float = 5.0,
) -> Iterator[ForeignGateway]:
    """Run the foreign SFU until the block exits; raises ForeignGatewayError if it is not ready in time."""
    node = shutil.which("node")
    if node is None:
        raise ForeignGatewayError("node is not on PATH")
    env = dict(os.environ, MEDIASOUP_WORKER_BIN=worker_bin())
    # server.js finds ../gateway/node_modules itself; NODE_PATH covers a copy of server.js run elsewhere.
    env["NODE_PATH"] = os.pathsep.join(p for p in (str(GATEWAY_MODULES), env.get("NODE_PATH", "")) if p)
    argv = [
        node, str(SERVER_JS),
        "--port", str(port),
        "--listen-ip", listen_ip,
        "--announced-ip", announced_ip or listen_ip,
        "--rtc-min-port", str(rtc_ports[0]),
        "--rtc-max-port", str(rtc_ports[1]),
        "--jwt-secret", jwt_secret,
        "--allowed-origin", allowed_origin,
    ]
    if stats_key:
        argv += ["--stats-key", stats_key]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    gateway = ForeignGateway(url=f"http://{listen_ip}:{port}", process=proc)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, gateway.output, lines), daemon=True,
                              name=f"foreign-gateway-{port}")
    reader.start()
    try:
        _wait_ready(gateway, lines, ready_timeout_s)
        yield gateway
    finally:
        _stop(proc, stop_timeout_s)
        reader.join(stop_timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_ready(gateway: ForeignGateway, lines: queue.Queue[str | None], timeout_s: float) -> None:
    """Read the gateway's output until its `listening on` line; the deadline bounds the whole wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise queue.Empty
            line = lines.get(timeout=remaining)
        except queue.Empty:
            raise ForeignGatewayError(f"foreign gateway not ready within {timeout_s:.0f} s; output:\n"
                                      + _tail(gateway)) from None
        if line is None:  # the process closed its output: it has exited
            code = gateway.process.wait(5)
            raise ForeignGatewayError(f"foreign gateway exited with {code}; output:\n" + _tail(gateway))
        if line.startswith(READY_PREFIX):
            return


def _tail(gateway: ForeignGateway, n: int = 20) -> str:
    return "\n".join(list(gateway.output)[-n:])
