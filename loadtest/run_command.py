"""``loadtest run``: its options, the target (given, or the embedded reference stack), preflight, an engine,
the report.

Registering the verb imports nothing heavy; the engines (aiortc, locust's child process) and the
reference stack load only when the verb runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.cast import KINDS
from loadtest.config import ConfigError, RunConfig, load_run_config
from loadtest.credentials import AUTH_TOKEN_ENV
from loadtest.errors import RunError, RunFailed
from loadtest.ice import TURN_CREDENTIAL_ENV, parse_ice_flag
from loadtest.proxywatch import watch_proxy
from loadtest.redaction import install_log_scrubbing, redact_url, register, register_url
from loadtest.rundir import prepare_run_dir, update_run_json, write_failure
from loadtest.stopping import StopRequest
from loadtest.target import Target, given_target, stack_target

if TYPE_CHECKING:
    from loadtest.fixtures import FixtureLibrary
    from loadtest.locust_run import SwarmOptions
    from loadtest.metrics import MetricsOptions
    from sut.config import StackConfig


def add_run_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run callers against a target (default: the embedded reference stack)")
    p.add_argument("--config", help="run config TOML (flags below override it)")
    p.add_argument("--target", help="gateway URL through its proxy, e.g. https://host:443 "
                                    "(default: start the reference stack)")
    p.add_argument("--ca-cert", help="PEM bundle that signs the target's certificate")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="do not verify the target's certificate (recorded in the report)")
    p.add_argument("--auth-token", help=f"static token for every caller (better: ${AUTH_TOKEN_ENV}); never "
                                        "written to the run directory")
    p.add_argument("--profile", help="signaling profile name or TOML path (default: reference)")
    p.add_argument("--callers", type=int, help="concurrent conversations (speaker + listener each)")
    p.add_argument("--duration", type=float, help="seconds each caller speaks")
    p.add_argument("--interval", type=float, help="planned seconds between utterance starts")
    p.add_argument("--response-timeout", type=float, help="seconds an utterance may wait for its result")
    p.add_argument("--scenario", choices=KINDS, help="call shape: one-way (default), two-way, group, "
                                                    "barge-in, monologue (docs/scenarios.md)")
    p.add_argument("--listeners", type=int, help="group: listeners per call (default 4)")
    p.add_argument("--target-languages", help="group: the listeners' languages in turn, e.g. es,fr")
    p.add_argument("--listen-sample", type=float, help="share of utterances whose translated audio is "
                                                       "decoded and checked for silence and clipping")
    p.add_argument("--reconnect", action="store_true", default=None,
                   help="a caller the server drops connects again and speaks on (scenario.reconnect)")
    p.add_argument("--fixtures", help="fixture manifest (default: fixtures/audio/manifest.json)")
    p.add_argument("--stack-config", help="reference stack config name or TOML (without --target)")
    p.add_argument("--port-offset", type=int, help="shift the reference stack's ports")
    p.add_argument("--out", default="reports/latest", help="run directory to write (default: %(default)s)")
    p.add_argument("--engine", choices=["locust", "direct"], default="locust",
                   help="locust users (default) or one in-process asyncio loop without locust")
    p.add_argument("--skip-preflight", action="store_true", help="do not audit the target before the run")
    p.add_argument("--ice-address", help="local ICE host addresses, comma-separated, or \"auto\" (default: "
                                         "loopback for a loopback target, else every interface)")
    p.add_argument("--relay-only", action="store_true", default=None,
                   help="relay all media through --turn-url (ICE transport policy \"relay\")")
    p.add_argument("--turn-url", help="TURN server for --relay-only, e.g. turn:turn.example:3478")
    p.add_argument("--turn-username", help="TURN user name")
    p.add_argument("--turn-credential", help=f"TURN password (better: ${TURN_CREDENTIAL_ENV}); never written "
                                             "to the run directory")
    p.add_argument("--resolve", action="append", metavar="HOST:IP",
                   help="connect to IP whenever a URL names HOST, as curl's --resolve (repeatable): a proxy "
                        "that routes by host name, reached on another address")
    p.add_argument("--traefik-api", help="the target's Traefik API, e.g. http://127.0.0.1:8080: preflight "
                                         "audits its routers, the run records its metrics")
    p.add_argument("--traefik-metrics", help="Traefik's Prometheus endpoint (default <traefik-api>/metrics)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML: a test case per threshold")
    p.add_argument("--no-report", dest="report", action="store_false", help=argparse.SUPPRESS)  # nightly's
    live = p.add_argument_group("live metrics (Prometheus; docs/observability.md)")
    live.add_argument("--metrics-port", type=int, help="serve speechload_* series on this port while running")
    live.add_argument("--metrics-host", default="127.0.0.1", help="listen address (default: %(default)s)")
    live.add_argument("--metrics-linger", type=float, default=15.0,
                      help="after the last utterance, wait up to this many seconds for a final scrape")
    live.add_argument("--metrics-label", help="the metrics' `scenario` label (default: the --config file's "
                                             "name, else the scenario kind)")
    adverse = p.add_argument_group("adverse conditions (docs/impairment.md)")
    adverse.add_argument("--impairment", help="network impairment profile for every caller (wifi-good, "
                                              "4g-busy, lossy-5, satellite, …), or callers split across "
                                              "profiles: lossy-5:1,none:1")
    adverse.add_argument("--impairment-file", help="TOML file of more impairment profiles")
    adverse.add_argument("--impairment-seed", type=int, help="seed of the impairment models (default 0)")
    adverse.add_argument("--snr-db", help="mix noise into the speech at these SNRs, callers split across "
                                          "them (caller i takes the i-th mod n): 20,10,5 (\"clean\": none)")
    adverse.add_argument("--noise", choices=["pink", "babble"], help="noise kind (default pink)")
    swarm = p.add_argument_group("swarm (locust engine)")
    swarm.add_argument("--spawn-rate", type=float, default=1.0, help="callers started per second")
    swarm.add_argument("--shape", choices=["steady", "step", "spike"], default="steady")
    swarm.add_argument("--step-users", type=int, default=1, help="step: callers added per step")
    swarm.add_argument("--step-time", type=float, default=30.0, help="step: seconds per step")
    swarm.add_argument("--spike-users", type=int, default=0, help="spike: callers at the peak")
    swarm.add_argument("--spike-at", type=float, default=20.0, help="spike: seconds before the spike")
    swarm.add_argument("--spike-time", type=float, default=10.0, help="spike: seconds the spike lasts")
    swarm.add_argument("--processes", type=int, default=0, help="locust worker processes (-1: one per core)")
    swarm.add_argument("--master", action="store_true", help="run as locust master for remote workers")
    swarm.add_argument("--expect-workers", type=int, default=1, help="master: workers to wait for")
    swarm.add_argument("--worker", action="store_true", help="run as a locust worker of --master-host")
    swarm.add_argument("--master-host", default="127.0.0.1", help="worker: the master's address")
    p.set_defaults(func=cmd_run)


def build_config(args: argparse.Namespace) -> RunConfig:
    cfg = load_run_config(args.config)
    return with_conditions(cfg, args).with_overrides(
        target={"url": args.target, "ca_cert": args.ca_cert, "insecure": args.insecure,
                "profile": args.profile, "ice_addresses": parse_ice_flag(args.ice_address),
                "relay_only": args.relay_only, "turn_url": args.turn_url, "turn_username": args.turn_username,
                "turn_credential": args.turn_credential or os.environ.get(TURN_CREDENTIAL_ENV),
                "auth_token": getattr(args, "auth_token", None) or os.environ.get(AUTH_TOKEN_ENV),
                "resolve": tuple(getattr(args, "resolve", None) or ()) or None,
                "traefik_api": getattr(args, "traefik_api", None),
                "traefik_metrics": getattr(args, "traefik_metrics", None)},
        scenario={"callers": args.callers, "duration_s": args.duration, "utterance_interval_s": args.interval,
                  "response_timeout_s": args.response_timeout, "fixtures": args.fixtures,
                  "reconnect": getattr(args, "reconnect", None), "kind": getattr(args, "scenario", None),
                  "listeners": getattr(args, "listeners", None),
                  "target_languages": _languages(getattr(args, "target_languages", None)),
                  "listen_sample": getattr(args, "listen_sample", None)},
        stack={"config": args.stack_config, "port_offset": args.port_offset},
    )


def _languages(flag: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in flag.split(",") if x.strip()) if flag else None


def with_conditions(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The adverse-condition flags over the config's [impairment] and [noise] (validated by the caller)."""
    from loadtest.conditions import parse_impairment_spec, parse_snr_list
    from loadtest.config import ConfigError

    imp, noise = cfg.impairment, cfg.noise
    try:
        if getattr(args, "impairment", None):
            imp = replace(imp, groups=parse_impairment_spec(args.impairment))
    except ValueError as exc:
        raise ConfigError(f"--impairment: {exc}") from None
    try:
        if getattr(args, "snr_db", None):
            noise = replace(noise, snr_db=parse_snr_list(args.snr_db))
    except ValueError as exc:
        raise ConfigError(f"--snr-db: {exc}") from None
    if getattr(args, "impairment_file", None):
        imp = replace(imp, file=args.impairment_file)
    if getattr(args, "impairment_seed", None) is not None:
        imp = replace(imp, seed=args.impairment_seed)
    if getattr(args, "noise", None):
        noise = replace(noise, kind=args.noise)
    return replace(cfg, impairment=imp, noise=noise)


def embedded_stack_config(cfg: RunConfig) -> StackConfig | None:
    """The reference stack's config when the run starts one (no target URL); a missing or bad file is a
    usage error (exit 4), found before anything starts."""
    if cfg.target.url:
        return None
    from sut.config import StackConfigError, load_stack_config

    try:
        return load_stack_config(cfg.stack.config).with_port_offset(cfg.stack.port_offset)
    except StackConfigError as exc:
        raise ConfigError(f"--stack-config: {exc}") from None


@contextlib.contextmanager
def resolved_target(cfg: RunConfig, stack_cfg: StackConfig | None = None) -> Iterator[Target]:
    """The configured target, or the embedded reference stack started for this run and stopped after.

    The embedded stack is owned by this process: its processes die with it, even by kill -9, and the
    next run reclaims whatever of it survived (sut/stack.py)."""
    if cfg.target.url:
        yield given_target(cfg.target)  # with its --resolve overrides installed
        return
    from sut.stack import ReferenceStack, StackError

    stack_cfg = stack_cfg or embedded_stack_config(cfg)
    assert stack_cfg is not None
    stack = ReferenceStack(stack_cfg, Path(cfg.stack.state_dir), owned=True)
    print(f"starting the reference stack ({stack_cfg.name}) …", file=sys.stderr, flush=True)
    try:
        info = stack.start()
    except StackError as exc:
        stack.stop()
        raise RunFailed(f"reference stack failed to start: {exc}") from None
    if stack.reclaimed:
        print(f"reclaimed an embedded stack whose run had died: stopped {', '.join(stack.reclaimed)}",
              file=sys.stderr, flush=True)
    try:
        yield stack_target(info)  # Traefik's host names resolved to the stack's address
    finally:
        print("stopping the reference stack …", file=sys.stderr, flush=True)
        stack.stop()


def swarm_options(args: argparse.Namespace) -> SwarmOptions:
    from loadtest.locust_run import SwarmOptions

    return SwarmOptions(
        spawn_rate=args.spawn_rate, shape=args.shape, step_users=args.step_users, step_time_s=args.step_time,
        spike_users=args.spike_users, spike_at_s=args.spike_at, spike_time_s=args.spike_time,
        processes=args.processes, master=args.master, expect_workers=args.expect_workers,
        worker=args.worker, master_host=args.master_host)


def metrics_options(args: argparse.Namespace, kind: str = "one-way") -> MetricsOptions | None:
    """--metrics-port and friends; imports prometheus-client only when the flag is given."""
    if args.metrics_port is None:
        return None
    from loadtest.metrics import MetricsOptions

    scenario = args.metrics_label or (Path(args.config).stem if args.config else kind)
    return MetricsOptions(args.metrics_port, args.metrics_host, scenario, args.metrics_linger)


def check_plan(cfg: RunConfig, library: FixtureLibrary) -> None:
    """Every speaking party has speech in its language (a usage error now, not a failed run later)."""
    from loadtest.scenarios import PlanError, fixtures_by_party

    try:
        fixtures_by_party(cfg.scenario.cast(), library, cfg.scenario.fixture_ids)
    except PlanError as exc:
        raise ConfigError(f"'scenario.kind' {cfg.scenario.kind}: {exc}") from None


def warn_about_plan(cfg: RunConfig, library: FixtureLibrary) -> None:
    if cfg.scenario.kind in ("barge-in", "monologue"):
        return  # their timetables are not one utterance per interval
    longest = max(library.fixture(i).duration_s for i in cfg.scenario.fixture_ids or library.ids)
    if longest + 0.5 > cfg.scenario.utterance_interval_s:
        print(f"warning: utterance interval {cfg.scenario.utterance_interval_s:.1f} s leaves less than 0.5 s "
              f"after the longest clip ({longest:.1f} s): utterances will run together", file=sys.stderr)


def probe_target(cfg: RunConfig, target: Target) -> None:
    """One Socket.IO connection to the target, as a caller would open it (the profile's handshake and
    credentials), so a wrong URL, CA, origin or token fails fast with the server's reason."""
    import asyncio

    from loadtest.credentials import credentials_for
    from loadtest.profile_file import load_profile
    from loadtest.rundir import new_run_id
    from loadtest.session import Party, PeerSession
    from loadtest.target import ssl_context

    profile = load_profile(cfg.target.profile)
    s = cfg.scenario
    party = Party(f"probe-{new_run_id()}", "listener", 0, s.source_language, s.target_language)
    session = PeerSession.open(target.url, profile, ssl_context(target), s.connect_timeout_s, party,
                               credentials_for(profile, cfg.target.auth_token))

    async def probe() -> None:
        try:
            await session.connect(s.connect_timeout_s)
        finally:
            await session.close()

    asyncio.run(probe())


def _turn_override(cfg: RunConfig) -> dict[str, Any]:
    """A relay-only run's TURN server is audited too (allocation and relayed media) before it is relied on."""
    from loadtest.preflight.config import TurnServer

    t = cfg.target
    return {"turn": (TurnServer(t.turn_url, t.turn_username, t.turn_credential),)} if t.turn_url else {}


def audit(cfg: RunConfig, target: Target, run_dir: Path) -> None:
    """The connectivity audit before the swarm (preflight.json/md in the run directory)."""
    from loadtest.preflight.command import preflight_before_run

    report = preflight_before_run(
        target.url, target.ca_cert, target.insecure, cfg.target.profile,
        state_dir=None if cfg.target.url else Path(cfg.stack.state_dir), out_dir=run_dir,
        ice_addresses=cfg.target.ice_addresses, auth_token=cfg.target.auth_token, **_turn_override(cfg),
        **target.preflight_fields())
    if report.exit_code() != 0:
        failed = "; ".join(f"{c.key}: {c.evidence}" for c in report.failed)
        raise RunFailed(f"preflight failed (use --skip-preflight to run anyway): {failed}")


def cmd_run(args: argparse.Namespace) -> int:
    from loadtest.credentials import credentials_for
    from loadtest.fixtures import FixtureLibrary
    from loadtest.profile_file import load_profile

    cfg = build_config(args)
    profile = load_profile(cfg.target.profile)
    # A missing secret or token file: a usage error now. Every secret is masked in what the run writes.
    register(cfg.target.auth_token, cfg.target.turn_credential,
             *credentials_for(profile, cfg.target.auth_token).secrets())
    register_url(cfg.target.url)
    register_url(cfg.target.turn_url)
    install_log_scrubbing()
    stack_cfg = embedded_stack_config(cfg)
    if profile.mode == "sfu" and not cfg.thresholds:
        from loadtest.report.thresholds import SFU_BUDGET

        cfg = replace(cfg, thresholds=SFU_BUDGET)  # a plain SFU has no pipeline to hold to its budget
    library = FixtureLibrary(Path(cfg.scenario.fixtures))
    library.require(cfg.scenario.fixture_ids)
    check_plan(cfg, library)
    warn_about_plan(cfg, library)
    run_dir = prepare_run_dir(Path(args.out))
    swarm = swarm_options(args)
    metrics = metrics_options(args, cfg.scenario.kind)
    stop = StopRequest()
    with stop.installed():
        try:
            with resolved_target(cfg, stack_cfg) as target:
                s = cfg.scenario
                print(f"target {redact_url(target.url)}: {s.callers} {s.kind} call(s) for "
                      f"{s.duration_s:.0f} s "
                      f"({args.engine})", file=sys.stderr, flush=True)
                if target.insecure:
                    print("warning: --insecure: the target's TLS certificate is NOT verified (stamped on "
                          "run.json, preflight and the report)", file=sys.stderr, flush=True)
                probe_target(cfg, target)
                if not args.skip_preflight and not swarm.worker:
                    audit(cfg, target, run_dir)
                # Traefik's own counters before and after (when its metrics endpoint is known).
                watched = "" if swarm.worker else target.proxy_metrics_url
                with stop.engine_running(), watch_proxy(watched, run_dir, target.ca_cert):
                    if args.engine == "direct":
                        from loadtest.runner import execute_run

                        execute_run(cfg, target, run_dir, library, metrics, stop=stop)
                    else:
                        from loadtest.locust_run import execute_swarm

                        execute_swarm(cfg, target, run_dir, swarm, metrics, stop=stop)
        except RunError as exc:
            write_failure(run_dir, str(exc))
            if args.junit:  # CI reads the failed run as an <error> case
                from loadtest.report.junit import write_junit

                write_junit(Path(args.junit), error=str(exc), name=str(run_dir))
            raise
        if stop.requested:
            update_run_json(run_dir, {"stopped_by": stop.signal_name})
        if swarm.worker or not args.report:
            return 0
        from loadtest.report.build import report_run

        return report_run(run_dir, cfg, partial=stop.requested,
                          junit=Path(args.junit) if args.junit else None)
