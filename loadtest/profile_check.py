"""``loadtest profile check``: walk a signaling profile against a live gateway, step by step.

Exit 0 when the walk completes, 1 when a step failed (the output names the profile key and a hint),
4 for usage errors (a bad profile file: the message names the key). Registering the verb imports nothing
heavy: aiortc and pymediasoup load inside the handler.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlparse

from loadtest.errors import EXIT_OK, EXIT_THRESHOLD_FAILED, UsageError
from loadtest.ice import AUTO, parse_ice_flag, validate_ice_addresses

EXIT_STEP_FAILED = EXIT_THRESHOLD_FAILED  # 1: the walk stopped at a failed step
ROLE_CHOICES = ("both", "speaker", "listener")


def add_profile_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="signaling profiles: walk one against a live gateway")
    verbs = p.add_subparsers(dest="profile_command", required=True)
    check = verbs.add_parser(
        "check", help="walk a profile step by step against a gateway, naming the key behind a failure",
        description="Prints one line per step (handshake, each join/role request and its answer, "
                    "transports, ICE+DTLS, produce, announcements, consume, resume, media or result "
                    "events). Exit 0: the walk completed; 1: a step failed; 4: usage error.")
    check.add_argument("--target", required=True, help="gateway URL, e.g. https://gw.example:443")
    check.add_argument("--profile", required=True, help="signaling profile name or TOML path")
    check.add_argument("--ca-cert", help="PEM bundle that signs the target's certificate")
    check.add_argument("--insecure", action="store_true", help="do not verify the target's certificate")
    check.add_argument("--auth-token", help="a static token for every caller (overrides the profile's "
                                            "[credentials]; better: $SPEECHLOAD_AUTH_TOKEN)")
    check.add_argument("--role", choices=ROLE_CHOICES, default="both",
                       help="walk the speaker's steps, the listener's, or both and consume (default)")
    check.add_argument("--timeout", type=float, default=10.0,
                       help="seconds each step may wait (default %(default)s)")
    check.add_argument("--ice-address", help="local ICE host addresses, comma-separated, or \"auto\" "
                                             "(default: loopback for a loopback target, else every "
                                             "interface)")
    check.add_argument("--resolve", action="append", metavar="HOST:IP",
                       help="connect to IP whenever a URL names HOST, as curl's --resolve (repeatable)")
    check.set_defaults(func=cmd_profile_check)


def _check_usage(args: argparse.Namespace) -> tuple[str, ...]:
    parsed = urlparse(args.target)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--target must be an http(s) URL, got {args.target!r}")
    if args.ca_cert and not Path(args.ca_cert).is_file():
        raise UsageError(f"--ca-cert: file not found: {args.ca_cert}")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    ice = parse_ice_flag(args.ice_address) or (AUTO,)
    problem = validate_ice_addresses(ice)
    if problem:
        raise UsageError(f"--ice-address: {problem}")
    if getattr(args, "resolve", None):
        from loadtest.resolve import ResolveError, install, parse

        try:
            install(parse(args.resolve))  # before the ICE choice: a loopback address decides it
        except ResolveError as exc:
            raise UsageError(f"--resolve: {exc}") from None
    return ice


def cmd_profile_check(args: argparse.Namespace) -> int:
    import asyncio

    from loadtest.credentials import AUTH_TOKEN_ENV, credentials_for
    from loadtest.ice import choose_ice
    from loadtest.profile_file import load_profile, resolve_profile_path
    from loadtest.profile_steps import Printer
    from loadtest.profile_walk import ROLES_BOTH, Walk, WalkOptions
    from loadtest.profile_walk_media import after_consume
    from loadtest.target import Target, ssl_context

    ice = _check_usage(args)
    profile = load_profile(args.profile)  # ProfileError (a UsageError) names the key: exit 4
    credentials = credentials_for(profile, args.auth_token or os.environ.get(AUTH_TOKEN_ENV, ""))
    target = Target(args.target, args.ca_cert or "", bool(args.insecure))
    roles = ROLES_BOTH if args.role == "both" else (args.role,)
    printer = Printer()
    for secret in credentials.secrets():
        printer.add_secret(secret)
    choice = choose_ice(ice, args.target)
    choice.apply()
    printer.note(f"profile check: {resolve_profile_path(args.profile)} (version {profile.version}, mode "
                 f"{profile.mode}) → {args.target} · roles {'+'.join(roles)} · {args.timeout:g} s per step · "
                 f"{choice.describe()}")
    options = WalkOptions(url=args.target, profile=profile, ssl_context=ssl_context(target),
                          credentials=credentials, roles=roles, timeout_s=args.timeout)
    passed = asyncio.run(Walk(options, printer).run(after_consume))
    return EXIT_OK if passed else EXIT_STEP_FAILED
