"""``loadtest`` command line: thin verbs, each calling one module."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from loadtest.config import ConfigError, RunConfig, load_run_config
from loadtest.fixtures import FixtureError, FixtureLibrary
from loadtest.profile import ProfileError, load_profile
from loadtest.runner import EXIT_RUN_FAILED, RunFailed, Target, execute_run, prepare_run_dir, write_failure
from loadtest.signaling import SignalingError

USER_ERRORS = (ConfigError, ProfileError, FixtureError, RunFailed, SignalingError)


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


def cmd_run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    load_profile(cfg.target.profile)
    library = FixtureLibrary(Path(cfg.scenario.fixtures))
    library.require(cfg.scenario.fixture_ids)
    run_dir = prepare_run_dir(Path(args.out))
    try:
        with resolved_target(cfg) as target:
            s = cfg.scenario
            print(f"target {target.url}: {s.callers} caller(s) for {s.duration_s:.0f} s",
                  file=sys.stderr, flush=True)
            execute_run(cfg, target, run_dir, library)
    except RunFailed as exc:
        write_failure(run_dir, str(exc))
        raise
    from loadtest.report.build import report_run

    return report_run(run_dir, cfg)


def _stack_parser(sub: argparse._SubParsersAction) -> None:
    from sut.stack import add_stack_commands

    add_stack_commands(sub)


def _report_parsers(sub: argparse._SubParsersAction) -> None:
    from loadtest.report.commands import add_report_commands

    add_report_commands(sub)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _stack_parser(sub)
    _report_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
