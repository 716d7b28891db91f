"""``loadtest run`` on locust: one headless locust (local, ``--processes``, master or worker) underneath.

Locust is started as a child process: its gevent monkey-patching must not reach this process, which
may be running the reference stack. Its stats CSVs land in the run directory beside our raw samples.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.adverse import locust_argv, stamp
from loadtest.config import RunConfig
from loadtest.credentials import AUTH_TOKEN_ENV
from loadtest.errors import RunFailed
from loadtest.ice import TURN_CREDENTIAL_ENV, choose_ice
from loadtest.journal import merge_to_parquet
from loadtest.redaction import redact_url
from loadtest.rundir import new_run_id, write_run_json
from loadtest.stopping import StopRequest, die_with_parent
from loadtest.target import Target

if TYPE_CHECKING:
    from loadtest.metrics import MetricsOptions

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DRAIN_MARGIN_S = 30.0


@dataclass(frozen=True)
class SwarmOptions:
    spawn_rate: float = 1.0
    shape: str = "steady"
    step_users: int = 1
    step_time_s: float = 30.0
    spike_users: int = 0
    spike_at_s: float = 20.0
    spike_time_s: float = 10.0
    processes: int = 0  # 0: one process; N: locust --processes N; -1: one per core
    master: bool = False
    expect_workers: int = 1
    worker: bool = False
    master_host: str = "127.0.0.1"


def locust_command(
    cfg: RunConfig, target: Target, run_dir: Path, swarm: SwarmOptions, run_id: str,
    metrics: MetricsOptions | None = None,
) -> list[str]:
    s = cfg.scenario
    cmd = [
        # The target URL travels by environment (child_env: LOCUST_HOST), not argv: it may hold a secret.
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--run-dir", str(run_dir), "--run-id", run_id, "--signaling-profile", cfg.target.profile,
        "--fixtures", s.fixtures, "--interval", str(s.utterance_interval_s),
        "--response-timeout", str(s.response_timeout_s), "--connect-timeout", str(s.connect_timeout_s),
        "--source-language", s.source_language, "--target-language", s.target_language,
        "--ice-address", ",".join(cfg.target.ice_addresses), "--only-summary", "--loglevel", "WARNING",
        "--scenario", s.kind, "--listeners", str(s.listeners), "--listen-sample", str(s.listen_sample),
    ]
    if s.target_languages:
        cmd += ["--target-languages", ",".join(s.target_languages)]
    if s.fixture_ids:
        cmd += ["--fixture-ids", ",".join(s.fixture_ids)]
    if s.reconnect:
        cmd += ["--reconnect"]
    cmd += locust_argv(cfg.impairment, cfg.noise)  # adverse conditions (docs/impairment.md)
    t = cfg.target
    if t.relay_only:  # the credential goes by environment (child_env), not argv
        cmd += ["--relay-only", "--turn-url", t.turn_url, "--turn-username", t.turn_username]
    if target.ca_cert:
        cmd += ["--ca-cert", target.ca_cert]
    if target.insecure:
        cmd += ["--insecure"]
    if swarm.worker:  # a worker ships its rows to the master, which serves the metrics
        return cmd + ["--worker", "--master-host", swarm.master_host]
    if metrics is not None:
        cmd += metrics.argv()
    cmd += ["-u", str(s.callers), "-r", str(swarm.spawn_rate), "-t", f"{int(round(s.duration_s))}s",
            "--csv", str(run_dir / "locust"), "--shape", swarm.shape,
            "--step-users", str(swarm.step_users), "--step-time", str(swarm.step_time_s),
            "--spike-users", str(swarm.spike_users), "--spike-at", str(swarm.spike_at_s),
            "--spike-time", str(swarm.spike_time_s)]
    if swarm.master:
        cmd += ["--master", "--expect-workers", str(swarm.expect_workers)]
    elif swarm.processes:
        # The master and its forked workers talk on this machine only, on a port nobody else holds
        # (locust's default binds 5557 on every interface: a second run beside this one would fail).
        port = free_loopback_port()
        cmd += ["--processes", str(swarm.processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--master-host", "127.0.0.1", "--master-port", str(port)]
    return cmd


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(cfg: RunConfig, target_url: str = "") -> dict[str, str]:
    """locust's environment: ours, plus what must not be on its command line (ps shows argv to every
    user): the target URL (LOCUST_HOST), the auth token and a relay-only run's TURN credential."""
    env = dict(os.environ)
    if target_url:
        env["LOCUST_HOST"] = target_url
    env.pop(TURN_CREDENTIAL_ENV, None)
    env.pop(AUTH_TOKEN_ENV, None)
    if cfg.target.auth_token:
        env[AUTH_TOKEN_ENV] = cfg.target.auth_token
    if cfg.target.relay_only and cfg.target.turn_credential:
        env[TURN_CREDENTIAL_ENV] = cfg.target.turn_credential
    return env


def execute_swarm(cfg: RunConfig, target: Target, run_dir: Path, swarm: SwarmOptions,
                  metrics: MetricsOptions | None = None, stop: StopRequest | None = None) -> int:
    """Run locust to completion, then merge every process's raw samples; returns utterances merged.

    Locust runs in its own session (a terminal's Ctrl-C reaches only us) and dies with us (SIGTERM on
    our death, kill -9 included). A graceful stop (`stop`) is forwarded as one SIGTERM: locust stops
    its users and drains their utterances (locustfile.py); a second signal kills it."""
    run_id = new_run_id()
    # What this host's locust processes will choose (each resolves "auto" itself, a remote worker too).
    ice = choose_ice(cfg.target.ice_addresses, target.url)
    print(ice.describe(), file=sys.stderr, flush=True)
    write_run_json(run_dir, {
        "run_id": run_id, "engine": "locust", "target": redact_url(target.url),
        "insecure_tls": target.insecure,
        "callers": cfg.scenario.callers, "duration_s": cfg.scenario.duration_s, "shape": swarm.shape,
        "processes": swarm.processes,
        "role": "worker" if swarm.worker else "master" if swarm.master else "local",
        **ice.stamp(), "relay_only": cfg.target.relay_only, **stamp(cfg.impairment, cfg.noise)})
    cmd = locust_command(cfg, target, run_dir, swarm, run_id, metrics)
    # Bounded: the run time, the drain of the last utterances, start-up, and a margin.
    limit = cfg.scenario.duration_s + cfg.scenario.response_timeout_s + 10.0 + DRAIN_MARGIN_S
    limit += metrics.linger_s if metrics is not None else 0.0
    if swarm.master or swarm.worker:
        limit += 600.0  # waiting for the other side of a distributed run
    proc = subprocess.Popen(cmd, env=child_env(cfg, target.url), start_new_session=True,
                            preexec_fn=die_with_parent())
    if stop is not None:
        stop.on_stop(lambda: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=cfg.scenario.response_timeout_s + DRAIN_MARGIN_S)
        print(f"warning: locust exceeded {limit:.0f} s and was stopped", file=sys.stderr)
    except KeyboardInterrupt:  # a second signal: no more waiting
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise
    merged = merge_to_parquet(run_dir) if not swarm.worker else None
    if merged is not None and merged.rows == 0:
        raise RunFailed(f"locust exited with {code} and no utterance was recorded "
                        f"(see the errors above; locust stats: {run_dir / 'locust_stats.csv'})")
    return merged.rows if merged is not None else 0
