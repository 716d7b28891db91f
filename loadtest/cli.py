"""``loadtest`` command line: thin verbs, each calling one module."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from loadtest.config import ConfigError, RunConfig, load_run_config
from loadtest.fixtures import FixtureError, FixtureLibrary
from loadtest.locust_run import SwarmOptions, execute_swarm
from loadtest.profile import ProfileError, load_profile
from loadtest.runner import (
    EXIT_RUN_FAILED,
    RunFailed,
    Target,
    execute_run,
    prepare_run_dir,
    probe_target,
    warn_about_plan,
    write_failure,
)
from loadtest.signaling import SignalingError

# Exit codes (docs/reports.md): 3 the run itself failed, 4 bad usage or configuration.
RUN_ERRORS = (RunFailed, SignalingError)
USAGE_ERRORS = (ConfigError, ProfileError, FixtureError)
EXIT_USAGE = 4


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a typo; CI must not read that as a regression (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run callers against a target (default: the embedded reference stack)")
    p.add_argument("--config", help="run config TOML (flags below override it)")
    p.add_argument("--target", help="gateway URL through its proxy, e.g. https://host:443 "
                                    "(default: start the reference stack)")
    p.add_argument("--ca-cert", help="PEM bundle that signs the target's certificate")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="do not verify the target's certificate (recorded in the report)")
    p.add_argument("--profile", help="signaling profile name or TOML path (default: reference)")
    p.add_argument("--callers", type=int, help="concurrent conversations (speaker + listener each)")
    p.add_argument("--duration", type=float, help="seconds each caller speaks")
    p.add_argument("--interval", type=float, help="planned seconds between utterance starts")
    p.add_argument("--response-timeout", type=float, help="seconds an utterance may wait for its result")
    p.add_argument("--fixtures", help="fixture manifest (default: fixtures/audio/manifest.json)")
    p.add_argument("--stack-config", help="reference stack config name or TOML (without --target)")
    p.add_argument("--port-offset", type=int, help="shift the reference stack's ports")
    p.add_argument("--out", default="reports/latest", help="run directory to write (default: %(default)s)")
    p.add_argument("--engine", choices=["locust", "direct"], default="locust",
                   help="locust users (default) or one in-process asyncio loop without locust")
    p.add_argument("--skip-preflight", action="store_true", help="do not audit the target before the run")
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
    return cfg.with_overrides(
        target={"url": args.target, "ca_cert": args.ca_cert, "insecure": args.insecure,
                "profile": args.profile},
        scenario={"callers": args.callers, "duration_s": args.duration, "utterance_interval_s": args.interval,
                  "response_timeout_s": args.response_timeout, "fixtures": args.fixtures},
        stack={"config": args.stack_config, "port_offset": args.port_offset},
    )


@contextlib.contextmanager
def resolved_target(cfg: RunConfig) -> Iterator[Target]:
    """The configured target, or the embedded reference stack started for this run and stopped after."""
    if cfg.target.url:
        yield Target(cfg.target.url, cfg.target.ca_cert, cfg.target.insecure)
        return
    from sut.config import StackConfigError, load_stack_config
    from sut.stack import ReferenceStack, StackError

    try:
        stack_cfg = load_stack_config(cfg.stack.config).with_port_offset(cfg.stack.port_offset)
    except StackConfigError as exc:
        raise RunFailed(str(exc)) from None
    stack = ReferenceStack(stack_cfg, Path(cfg.stack.state_dir))
    print(f"starting the reference stack ({stack_cfg.name}) …", file=sys.stderr, flush=True)
    try:
        info = stack.start()
    except StackError as exc:
        stack.stop()
        raise RunFailed(f"reference stack failed to start: {exc}") from None
    try:
        yield Target(info.target_url, str(info.ca_cert), False)
    finally:
        print("stopping the reference stack …", file=sys.stderr, flush=True)
        stack.stop()


def swarm_options(args: argparse.Namespace) -> SwarmOptions:
    return SwarmOptions(
        spawn_rate=args.spawn_rate, shape=args.shape, step_users=args.step_users, step_time_s=args.step_time,
        spike_users=args.spike_users, spike_at_s=args.spike_at, spike_time_s=args.spike_time,
        processes=args.processes, master=args.master, expect_workers=args.expect_workers,
        worker=args.worker, master_host=args.master_host)


def audit(cfg: RunConfig, target: Target, run_dir: Path) -> None:
    """The connectivity audit before the swarm (preflight.json/md in the run directory)."""
    from loadtest.preflight import preflight_before_run

    report = preflight_before_run(
        target.url, target.ca_cert, target.insecure, cfg.target.profile,
        state_dir=None if cfg.target.url else Path(cfg.stack.state_dir), out_dir=run_dir,
        ice_addresses=cfg.target.ice_addresses, auth_token=cfg.target.auth_token)
    if report.exit_code() != 0:
        failed = "; ".join(f"{c.key}: {c.evidence}" for c in report.failed)
        raise RunFailed(f"preflight failed (use --skip-preflight to run anyway): {failed}")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    load_profile(cfg.target.profile)
    library = FixtureLibrary(Path(cfg.scenario.fixtures))
    library.require(cfg.scenario.fixture_ids)
    warn_about_plan(cfg, library)
    run_dir = prepare_run_dir(Path(args.out))
    swarm = swarm_options(args)
    try:
        with resolved_target(cfg) as target:
            s = cfg.scenario
            print(f"target {target.url}: {s.callers} caller(s) for {s.duration_s:.0f} s ({args.engine})",
                  file=sys.stderr, flush=True)
            try:
                probe_target(cfg, target)
            except SignalingError as exc:
                raise RunFailed(str(exc)) from None
            if not args.skip_preflight and not swarm.worker:
                audit(cfg, target, run_dir)
            if args.engine == "direct":
                execute_run(cfg, target, run_dir, library)
            else:
                execute_swarm(cfg, target, run_dir, swarm)
    except RunFailed as exc:
        write_failure(run_dir, str(exc))
        raise
    if swarm.worker:
        return 0
    from loadtest.report.build import report_run

    return report_run(run_dir, cfg)


def _stack_parser(sub: argparse._SubParsersAction) -> None:
    from sut.stack import add_stack_commands

    add_stack_commands(sub)


def _report_parsers(sub: argparse._SubParsersAction) -> None:
    from loadtest.report.commands import add_report_commands

    add_report_commands(sub)


def make_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="loadtest", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    _run_parser(sub)
    _stack_parser(sub)
    _report_parsers(sub)
    from loadtest.preflight import add_preflight_command

    add_preflight_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except USAGE_ERRORS as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RUN_ERRORS as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
