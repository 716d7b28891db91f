"""Start, stop and inspect the reference stack: STT/translation/TTS services, the gateway, the TLS proxy.

Process contract (see docs/reference-stack.md, "Processes"):
* services: ``<python> -m sut.services.<stt|translation|tts> --stack-json <state_dir>/stack.json``; the
  JSON is the stack TOML's layout with every value resolved (ports offset, fixtures absolute). Each binds
  ``[stack].host:[<svc>].port`` and serves ``GET /health``.
* gateway: ``node sut/gateway/src/server.js --config <state_dir>/gateway.json`` with MEDIASOUP_WORKER_BIN;
  with ``[gateway] replicas = N > 1``, N of them (``gateway-<i>``, ``gateway-<i>.json``), one port each.
* proxy (`[proxy] kind`, sut/proxy/edge.py): ``traefik --configFile=<state_dir>/traefik.yml`` and the
  static page server ``www`` (default), or ``nginx -p <state_dir> -c <state_dir>/nginx.conf``; TLS with
  the state dir's local CA.
Logs go to ``<state_dir>/<name>.log``, pids to ``<state_dir>/pids.json`` so another process can stop it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sut import infra, procs, proxy
from sut import prometheus as prom
from sut.config import REPO_ROOT, StackConfig, stack_config_to_doc
from sut.pki import ensure_pki
from sut.procs import ProcessRecord
from sut.proxy import edge, traefik
from sut.stack_files import (
    enabled_services,
    gateway_json,
    gateway_names,
    gateway_urls,
    target_url,
    url_of,
)

GATEWAY_DIR = REPO_ROOT / "sut" / "gateway"
WORKER_PATH_SCRIPT = REPO_ROOT / "scripts" / "mediasoup_worker_path.sh"
PIDS_FILE = "pids.json"


class StackError(RuntimeError):
    """The reference stack cannot start or stop; the message names the process or port at fault."""


@dataclass(frozen=True)
class StackInfo:
    target_url: str  # what the tester connects to, e.g. https://localhost:8443
    ca_cert: Path  # the local CA that signed the proxy's certificate
    state_dir: Path
    config: StackConfig
    ground_truth_path: Path | None
    # Each gateway replica's own plain-HTTP address (loopback; the proxy spreads clients over them).
    gateway_urls: tuple[str, ...] = ()
    # Host name → address overrides the tester needs for target_url (Traefik routes by host name:
    # webrtc.<domain> → [stack].host); () when the target's host resolves by itself (nginx: localhost).
    resolve: tuple[tuple[str, str], ...] = ()
    traefik_api: str = ""  # Traefik's API, dashboard and /metrics (loopback); "" with nginx

    @property
    def resolve_args(self) -> list[str]:
        """The tester's flags for `resolve`: ``--resolve host:ip`` each."""
        return [arg for host, ip in self.resolve for arg in ("--resolve", f"{host}:{ip}")]


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    alive: bool
    healthy: bool | None  # None: the process has no health endpoint
    log: Path


@dataclass(frozen=True)
class StackStatus:
    state_dir: Path
    running: bool  # every recorded process alive and healthy
    target_url: str | None
    ca_cert: Path | None
    processes: tuple[ProcessStatus, ...]


def mediasoup_worker_bin() -> Path:
    """MEDIASOUP_WORKER_BIN if set, else the cached build of scripts/build_mediasoup_worker.sh."""
    given = os.environ.get("MEDIASOUP_WORKER_BIN")
    if given:
        path = Path(given)
    else:
        script = ["bash", str(WORKER_PATH_SCRIPT)]
        path = Path(subprocess.run(script, capture_output=True, text=True, check=False).stdout.strip())
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(f"mediasoup worker not built at {path} (run scripts/setup.sh)")
    return path


def _read_records(state_dir: Path) -> tuple[dict[str, object], list[ProcessRecord]]:
    try:
        doc = json.loads((state_dir / PIDS_FILE).read_text())
    except FileNotFoundError:
        return {}, []
    except ValueError as exc:
        raise StackError(f"{state_dir / PIDS_FILE}: unreadable ({exc}); remove it after checking") from None
    return doc, [ProcessRecord.from_json(item) for item in doc.get("processes", [])]


class ReferenceStack:
    """The reference stack as one object: ``with ReferenceStack(cfg, Path(".stack")) as info: ...``."""

    def __init__(self, config: StackConfig, state_dir: Path, owned: bool = False) -> None:
        """owned: this process owns the stack (`loadtest run`'s embedded one): its processes die with this
        process (PR_SET_PDEATHSIG), pids.json names the owner, and a later start reclaims the stack if the
        owner died and anything of it still runs. Unowned stacks (`stack up`) are never reclaimed."""
        self.config = config
        self.state_dir = state_dir.resolve()
        self.owned = owned
        self.reclaimed: list[str] = []  # what start() stopped of an orphaned stack in the state dir
        self._records: list[ProcessRecord] = []
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._launch: dict[str, tuple[list[str], dict[str, str], str, str | None]] = {}  # for restart()
        self.info: StackInfo | None = None

    # -- start -------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 90) -> StackInfo:
        """Start services, gateway and proxy; return once /health answers through the proxy (and, with
        Prometheus, once it scraped each of its targets)."""
        deadline = time.monotonic() + timeout_s
        self._refuse_if_running()
        self._check_ports()
        worker_bin = self._check_prerequisites()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        info = self._prepare_files()
        try:
            self._spawn_all(worker_bin, info, deadline)
            self._wait_healthy(info, deadline)
            if self.config.prometheus.enabled:
                self._wait_first_scrapes(deadline)
        except BaseException:
            self.stop()
            raise
        self.info = info
        return info

    def _refuse_if_running(self) -> None:
        doc, records = _read_records(self.state_dir)
        alive = [f"{r.name} (pid {r.pid})" for r in records if procs.is_alive(r)]
        if alive and procs.owner_died(doc):
            self.reclaimed = stop_stack(self.state_dir)
            return
        if alive:
            raise StackError(
                f"a stack is already running from {self.state_dir}: {', '.join(alive)}; "
                f"stop it with `loadtest stack down --state-dir {self.state_dir}`"
            )

    def _check_ports(self) -> None:
        cfg = self.config
        ports = [("proxy.https_port", cfg.proxy.https_port)]
        if cfg.gateway.replicas == 1:
            ports.append(("gateway.port", cfg.gateway.port))
        else:
            replicas = range(cfg.gateway.replicas)
            ports += [(f"gateway.port + {i}", cfg.gateway.replica_port(i)) for i in replicas]
        ports += [(f"{name}.port", cfg.service(name).port) for name in enabled_services(cfg)]
        if cfg.proxy.http_port:
            ports.append(("proxy.http_port", cfg.proxy.http_port))
        ports += edge.extra_ports(cfg)
        if cfg.redis.enabled:
            ports.append(("redis.port", cfg.redis.port))
        if cfg.turn.enabled:
            ports.append(("turn.port", cfg.turn.port))  # coturn listens on TCP and UDP
        if cfg.prometheus.enabled:
            ports.append(("prometheus.port", cfg.prometheus.port))
        for key, port in ports:
            if procs.port_in_use(cfg.host, port):
                raise StackError(f"port {port} ({key}) on {cfg.host} is already in use")
        if cfg.turn.enabled and procs.port_in_use(cfg.host, cfg.turn.port, udp=True):
            raise StackError(f"UDP port {cfg.turn.port} (turn.port) on {cfg.host} is already in use")

    def _check_prerequisites(self) -> Path:
        for name in enabled_services(self.config):
            if importlib.util.find_spec(f"sut.services.{name}") is None:
                raise StackError(f"service module sut.services.{name} not found")
        if shutil.which("node") is None:
            raise StackError("node not found on PATH (Node.js 18+ runs the gateway)")
        if not (GATEWAY_DIR / "src" / "server.js").exists():
            raise StackError(f"gateway entry point missing: {GATEWAY_DIR / 'src' / 'server.js'}")
        if not (GATEWAY_DIR / "node_modules" / "mediasoup").is_dir():
            raise StackError(f"gateway dependencies not installed in {GATEWAY_DIR} (run scripts/setup.sh)")
        try:
            edge.check_binary(self.config)
            infra.check_binaries(self.config)
            if self.config.prometheus.enabled:
                prom.binary()
        except (proxy.ProxyError, traefik.TraefikError, infra.InfraError, prom.PrometheusError) as exc:
            raise StackError(str(exc)) from None
        return mediasoup_worker_bin()

    def _prepare_files(self) -> StackInfo:
        cfg, state = self.config, self.state_dir
        certs = ensure_pki(state, cfg.proxy.server_name, [cfg.host], only_name=cfg.faults.certificate_host,
                           extra_names=edge.cert_names(cfg))
        ground_truth = state / "groundtruth.jsonl" if cfg.ground_truth else None
        # The gateway appends: a previous run's facts must not mix with this run's.
        (state / "groundtruth.jsonl").unlink(missing_ok=True)
        (state / "stack.json").write_text(json.dumps(stack_config_to_doc(cfg), indent=2) + "\n")
        # Every replica appends to the one ground-truth file: whole lines per write(2) on an O_APPEND
        # descriptor, so lines of different processes never interleave.
        for i, name in enumerate(gateway_names(cfg)):
            doc = gateway_json(cfg, ground_truth, i)
            (state / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        edge.write_config(cfg, state, certs)  # traefik.yml + traefik-dynamic.yml + www/, or nginx.conf
        if cfg.turn.enabled:
            infra.write_turn_config(cfg, state)
        if cfg.prometheus.enabled:
            prom.write_config(cfg, state, enabled_services(cfg))
        return StackInfo(target_url(cfg), certs.ca_cert, state, cfg, ground_truth, gateway_urls(cfg),
                         edge.resolve(cfg), edge.api_url(cfg))

    def _spawn_all(self, worker_bin: Path, info: StackInfo, deadline: float) -> None:
        cfg, state = self.config, self.state_dir
        py_env = dict(os.environ, PYTHONUNBUFFERED="1")
        py_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        # Redis and TURN first, and ready before the gateway starts: the gateway looks for Redis once,
        # at start, and stays standalone if it is not there (as the production gateway it models does).
        if cfg.redis.enabled:
            self._spawn("redis", infra.redis_argv(cfg, state), dict(os.environ), infra.redis_health_url(cfg))
        if cfg.turn.enabled:
            self._spawn("turn", infra.turn_argv(state), dict(os.environ), infra.turn_health_url(cfg))
        for record in list(self._records):
            self._wait_one(record, info.ca_cert, deadline)
        for name in enabled_services(cfg):
            argv = [sys.executable, "-m", f"sut.services.{name}", "--stack-json", str(state / "stack.json")]
            self._spawn(name, argv, py_env, url_of(cfg.host, cfg.service(name).port, "/health"))
        # Each tier ready before the next: Traefik health-checks every gateway replica from its start
        # (one not listening yet is DOWN until its next check), and a gateway caches its backends'
        # states (a service still booting would read "down").
        for record in list(self._records):
            self._wait_one(record, info.ca_cert, deadline)
        node_env = dict(os.environ, MEDIASOUP_WORKER_BIN=str(worker_bin))
        for i, name in enumerate(gateway_names(cfg)):
            argv = ["node", str(GATEWAY_DIR / "src" / "server.js"), "--config", str(state / f"{name}.json")]
            self._spawn(name, argv, node_env, url_of(cfg.host, cfg.gateway.replica_port(i), "/health"))
        for record in list(self._records):
            self._wait_one(record, info.ca_cert, deadline)
        for p in edge.processes(cfg, state):  # the static page server, then the proxy
            self._spawn(p.name, p.argv, dict(os.environ), p.health_url, p.connect_to)
        if cfg.prometheus.enabled:  # last: everything it scrapes is already listening
            self._spawn("prometheus", prom.argv(cfg, state), dict(os.environ), prom.health_url(cfg))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], health_url: str,
               connect_to: str | None = None) -> None:
        cwd = GATEWAY_DIR if name.startswith("gateway") else REPO_ROOT
        try:
            child, record = procs.spawn(name, argv, self.state_dir / f"{name}.log", env, cwd, health_url,
                                        die_with_parent=self.owned, connect_to=connect_to)
        except OSError as exc:
            raise StackError(f"cannot start {name} ({argv[0]}): {exc}") from None
        self._children[record.pid] = child
        self._records.append(record)
        self._launch[name] = (argv, env, health_url, connect_to)
        self._write_pids()  # after every spawn: a half-started stack can still be stopped from elsewhere

    def _write_pids(self) -> None:
        doc = {
            "config": self.config.name,
            "target_url": target_url(self.config),
            "ca_cert": str(self.state_dir / "ca.pem"),
            # What a tester needs besides the URL (Traefik: --resolve and --traefik-api).
            "proxy_kind": self.config.proxy.kind,
            "resolve": dict(edge.resolve(self.config)),
            "traefik_api": edge.api_url(self.config),
            "processes": [r.to_json() for r in self._records],
        }
        if self.owned:
            doc["owner"] = {"pid": os.getpid(), "start_ticks": procs.start_ticks(os.getpid())}
        tmp = self.state_dir / f"{PIDS_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self.state_dir / PIDS_FILE)

    def _wait_healthy(self, info: StackInfo, deadline: float) -> None:
        # In start order: Redis/TURN, services, then the gateway, then the proxy (whose /health is the
        # gateway's).
        for record in self._records:
            self._wait_one(record, info.ca_cert, deadline)

    def _wait_one(self, record: ProcessRecord, ca_cert: Path, deadline: float) -> None:
        assert record.health_url is not None
        while True:
            self._fail_if_any_exited()
            if procs.probe_health(record.health_url, ca_cert, 2.0, record.connect_to) is not None:
                return
            if time.monotonic() >= deadline:
                raise StackError(self._failure(record, f"not healthy at {record.health_url} in time"))
            time.sleep(procs.POLL_S)  # polling another process's readiness: it cannot notify us

    def _wait_first_scrapes(self, deadline: float) -> None:
        # Ready (/-/ready) is before its targets are discovered and scraped: a preflight or a dashboard
        # right after `stack up` would read no targets, or "unknown" ones.
        jobs = prom.scrape_jobs(self.config, enabled_services(self.config))
        while True:
            self._fail_if_any_exited()
            targets = prom.read_targets(self.config)
            pending = prom.unscraped(targets or [], jobs)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise StackError(f"Prometheus did not scrape {', '.join(pending)} in time "
                                 f"(see {self.state_dir / 'prometheus.log'})")
            time.sleep(procs.POLL_S)  # polling another process's state: it cannot notify us

    def _fail_if_any_exited(self) -> None:
        for record in self._records:
            code = self._children[record.pid].poll()
            if code is not None:
                raise StackError(self._failure(record, f"exited with code {code}"))

    def _failure(self, record: ProcessRecord, what: str) -> str:
        log = Path(record.log)
        return f"{record.name} {what}; last lines of {log}:\n{procs.tail(log)}"

    # -- stop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process this object started; idempotent. (A stack started by another process:
        `stop_stack(state_dir)`. Never touching it here keeps a failed `start()` — e.g. "already
        running" — from killing the stack that made it fail.)"""
        if not self._records:
            return
        _stop_records(self._records, self._children)
        self._records = []
        self._children = {}
        (self.state_dir / PIDS_FILE).unlink(missing_ok=True)
        self.info = None

    def record(self, name: str) -> ProcessRecord:
        """The running record of process `name` (e.g. to kill it: fault injection)."""
        for r in self._records:
            if r.name == name:
                return r
        raise StackError(f"no process {name!r} in this stack ({', '.join(r.name for r in self._records)})")

    def restart(self, name: str, timeout_s: float = 60.0) -> ProcessRecord:
        """Start process `name` again, in its place in the stop order, and wait until it is healthy;
        whatever is left of the old one is stopped first (bench/faults.py kills, then restarts)."""
        old = self.record(name)
        procs.stop_process(old, self._children.pop(old.pid, None))
        argv, env, health_url, connect_to = self._launch[name]
        index = self._records.index(old)
        self._records.remove(old)
        self._spawn(name, argv, env, health_url, connect_to)
        new = self._records.pop()
        self._records.insert(index, new)
        self._write_pids()
        assert self.info is not None
        self._wait_one(new, self.info.ca_cert, time.monotonic() + timeout_s)
        return new

    def exited(self) -> list[str]:
        """Names of the processes this object started that are no longer running."""
        return [r.name for r in self._records if not procs.is_alive(r)]

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _stop_records(records: Iterable[ProcessRecord], children: dict[int, subprocess.Popen[bytes]]) -> None:
    # Reverse start order: the proxy stops taking requests before the gateway and services go away.
    for record in reversed(list(records)):
        procs.stop_process(record, children.get(record.pid))


def stop_stack(state_dir: Path) -> list[str]:
    """Stop the stack recorded in `state_dir` (from any process); returns the names of what was running."""
    _, records = _read_records(state_dir)
    running = [r.name for r in records if procs.is_alive(r)]
    _stop_records(records, {})
    (state_dir / PIDS_FILE).unlink(missing_ok=True)
    return running


def stack_status(state_dir: Path) -> StackStatus:
    """What pids.json records, whether each process lives, and whether its /health answers."""
    doc, records = _read_records(state_dir)
    ca = Path(str(doc["ca_cert"])) if "ca_cert" in doc else None
    statuses = []
    for r in records:
        alive = procs.is_alive(r)
        healthy = None
        if r.health_url is not None:
            healthy = alive and procs.probe_health(r.health_url, ca, 1.0, r.connect_to) is not None
        statuses.append(ProcessStatus(r.name, r.pid, alive, healthy, Path(r.log)))
    running = bool(statuses) and all(s.alive and s.healthy is not False for s in statuses)
    target = str(doc["target_url"]) if "target_url" in doc else None
    return StackStatus(state_dir, running, target, ca, tuple(statuses))
