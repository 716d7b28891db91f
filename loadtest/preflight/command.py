"""`loadtest preflight`: the connectivity audit as a command, and the hook `loadtest run` calls first."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.ice import parse_ice_flag
from loadtest.preflight.config import (
    PreflightConfig,
    PreflightConfigError,
    config_for_target,
    config_from_stack,
    load_config,
    validate,
)

if TYPE_CHECKING:
    from loadtest.preflight.model import PreflightReport

EXIT_CONFIG = 2  # the audit could not start (bad config, no stack to audit); 0/1 are the audit's verdict
DEFAULT_STATE_DIR = ".stack"


def add_preflight_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preflight", help="audit the deployment's connectivity (routes, TLS, gateway, media, TURN, backends, "
                          "Redis, metrics, one utterance) before a load test",
        description="Exit 0: nothing failed (warnings allowed unless --strict); 1: a check failed; "
                    "2: the audit could not start. Without --target/--config it audits the reference stack "
                    "running in --state-dir.")
    p.add_argument("--target", help="gateway URL through its proxy, e.g. https://gw.example:443")
    p.add_argument("--config", help="preflight config TOML (docs/preflight.md)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                   help="the running reference stack to audit when no --target/--config "
                        "(default %(default)s)")
    p.add_argument("--ca-cert", help="PEM bundle that signs the target's certificate")
    p.add_argument("--resolve", action="append", metavar="HOST:IP",
                   help="connect to IP whenever a URL names HOST, as curl's --resolve (repeatable)")
    p.add_argument("--traefik-api", help="the target's Traefik API, e.g. http://127.0.0.1:8080: audit its "
                                         "routers, services and servers as Traefik sees them")
    p.add_argument("--insecure", action="store_true", default=None, help="do not verify certificates")
    p.add_argument("--profile", help="signaling profile name or TOML path (default: reference)")
    p.add_argument("--ice-address", help="local ICE host addresses, comma-separated, or \"auto\" (default: "
                                         "loopback for a loopback target, else every interface)")
    p.add_argument("--json", dest="json_path", help="write the machine-readable results here")
    p.add_argument("--markdown", dest="markdown_path", help="write the audit as Markdown (for tickets) here")
    p.add_argument("--strict", action="store_true", help="warnings fail the audit too (exit 1)")
    p.add_argument("--no-media", action="store_true", help="skip the WebRTC and relayed-media checks")
    p.add_argument("--no-smoke", action="store_true", help="skip the one-utterance pipeline smoke")
    p.set_defaults(func=cmd_preflight)


def resolve_config(args: argparse.Namespace) -> PreflightConfig:
    overrides: dict[str, Any] = {}
    if args.ca_cert:
        overrides["ca_cert"] = args.ca_cert
    if getattr(args, "resolve", None):
        from loadtest.resolve import ResolveError, parse

        try:
            overrides["resolve"] = parse(args.resolve)
        except ResolveError as exc:
            raise PreflightConfigError(f"--resolve: {exc}") from None
    if getattr(args, "traefik_api", None):
        overrides["traefik_api"] = args.traefik_api
    if args.insecure:
        overrides["insecure"] = True
    if args.profile:
        overrides["profile"] = args.profile
    if args.ice_address is not None:
        overrides["ice_addresses"] = parse_ice_flag(args.ice_address)
    if args.no_media:
        overrides["media"] = False
    if args.no_smoke:
        overrides["smoke"] = False
    if args.config:
        config = load_config(args.config)
        if args.target:
            overrides["target_url"] = args.target
        return validate(replace(config, **overrides))
    if args.target:
        return config_for_target(args.target, **overrides)
    return config_from_stack(Path(args.state_dir), **overrides)


def cmd_preflight(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
    except PreflightConfigError as exc:
        print(f"loadtest preflight: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from loadtest.preflight.audit import run_preflight_sync
    from loadtest.preflight.report import make_console, print_report, write_outputs
    from loadtest.profile import ProfileError

    try:
        report = shown(run_preflight_sync(config), config.target_url, config.insecure)
    except ProfileError as exc:  # the profile or its credentials: the audit cannot start
        print(f"loadtest preflight: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print_report(report, make_console(), strict=args.strict)
    write_outputs(report, args.json_path, args.markdown_path, strict=args.strict)
    return report.exit_code(args.strict)


INSECURE_NOTE = "INSECURE TLS: certificate verification was disabled (--insecure)"


def shown(report: PreflightReport, target_url: str, insecure: bool) -> PreflightReport:
    """The report as printed and written: the target URL's secrets (userinfo, query values) and the run's
    registered secrets masked everywhere; an insecure audit says so in its notes."""
    from loadtest.redaction import register_url, scrub_tree

    register_url(target_url)
    clean: PreflightReport = scrub_tree(report)
    if insecure and INSECURE_NOTE not in clean.notes:
        clean.notes.append(INSECURE_NOTE)
    return clean


def preflight_before_run(target_url: str, ca_cert: str = "", insecure: bool = False,
                         profile: str = "reference", *, state_dir: str | Path | None = None,
                         out_dir: str | Path | None = None, strict: bool = False,
                         **overrides: Any) -> PreflightReport:
    """What `loadtest run` calls before its callers start: audit the target (the embedded stack's full
    audit when `state_dir` is its state dir), print the table to stderr, write preflight.json and
    preflight.md into `out_dir`. The caller decides: ``report.exit_code(strict) != 0`` → do not run.
    `overrides` are PreflightConfig fields (e.g. ``ice_addresses=("10.0.0.5",)``, ``smoke=False``)."""
    from loadtest.preflight.audit import run_preflight_sync
    from loadtest.preflight.report import make_console, print_report, write_outputs

    base = {"ca_cert": ca_cert, "insecure": insecure, "profile": profile, **overrides}
    if state_dir is not None:
        config = config_from_stack(Path(state_dir), **base)
    else:
        config = config_for_target(target_url, **base)
    report = shown(run_preflight_sync(config), target_url, insecure)
    print_report(report, make_console(stderr=True), strict=strict)
    if out_dir is not None:
        out = Path(out_dir)
        write_outputs(report, out / "preflight.json", out / "preflight.md", strict=strict)
    return report
