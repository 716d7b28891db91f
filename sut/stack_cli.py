"""`stack up | down | status`: the command-line face of sut/stack.py.

Registered into `loadtest` by loadtest/cli.py (``add_stack_commands``); also runs alone as
``python -m sut.stack_cli up|down|status`` (what the Makefile uses). Handlers return an exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from sut.config import StackConfigError, load_stack_config
from sut.proxy import ProxyError
from sut.stack import ReferenceStack, StackError, StackInfo, stack_status, stop_stack

EXIT_OK = 0
EXIT_FAILED = 1
DEFAULT_STATE_DIR = ".stack"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
                        help=f"where certificates, configs, logs and pids live (default {DEFAULT_STATE_DIR})")


def add_stack_commands(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser("stack", help="start, stop or inspect the reference stack")
    verbs = stack.add_subparsers(dest="stack_command", required=True)

    up = verbs.add_parser("up", help="start services, gateway and TLS proxy; wait until healthy")
    up.add_argument("--config", default="default", help="stack config: a name in sut/configs or a TOML path")
    up.add_argument("--port-offset", type=int, default=0, help="shift every port (run beside another stack)")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for health (default 90)")
    up.add_argument("--foreground", action="store_true",
                    help="stay attached; Ctrl-C (or SIGTERM) stops the stack")
    _common(up)
    up.set_defaults(func=cmd_up)

    down = verbs.add_parser("down", help="stop the stack recorded in the state dir")
    _common(down)
    down.set_defaults(func=cmd_down)

    status = verbs.add_parser("status", help="show each process and its health; exit 1 unless all are up")
    _common(status)
    status.set_defaults(func=cmd_status)


def _print_info(info: StackInfo) -> None:
    print(f"reference stack '{info.config.name}' is up")
    print(f"  target:  {info.target_url}")
    if info.resolve:  # Traefik routes by host name: the tester maps the names to the stack's address
        print(f"  resolve: {' '.join(info.resolve_args)}")
    if info.traefik_api:
        print(f"  traefik: {info.traefik_api}/dashboard/ (API {info.traefik_api}/api, metrics "
              f"{info.traefik_api}/metrics)")
    if len(info.gateway_urls) > 1:
        print(f"  gateway replicas (plain HTTP): {', '.join(info.gateway_urls)}")
    print(f"  CA:      {info.ca_cert}")
    print(f"  logs:    {info.state_dir}/*.log")
    if info.ground_truth_path is not None:
        print(f"  ground truth: {info.ground_truth_path}")


def cmd_up(args: argparse.Namespace) -> int:
    try:
        config = load_stack_config(args.config).with_port_offset(args.port_offset)
        stack = ReferenceStack(config, args.state_dir)
        info = stack.start(timeout_s=args.timeout)
    except (StackConfigError, StackError, ProxyError) as exc:
        print(f"stack up: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_info(info)
    if not args.foreground:
        print(f"  stop with: loadtest stack down --state-dir {args.state_dir}")
        return EXIT_OK
    return _stay_attached(stack)


def _stay_attached(stack: ReferenceStack) -> int:
    """Wait for Ctrl-C/SIGTERM, watching that every process lives; stop the stack on the way out."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    code = EXIT_OK
    try:
        while True:
            if signal.sigtimedwait(signals, 1.0) is not None:
                break
            dead = stack.exited()
            if dead:
                print(f"stack: {', '.join(dead)} exited; stopping (see {stack.state_dir}/*.log)",
                      file=sys.stderr)
                code = EXIT_FAILED
                break
    finally:
        stack.stop()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    print("reference stack stopped")
    return code


def cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = stop_stack(args.state_dir)
    except StackError as exc:
        print(f"stack down: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"stopped: {', '.join(stopped)}" if stopped else f"no stack running from {args.state_dir}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = stack_status(args.state_dir)
    except StackError as exc:
        print(f"stack status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not status.processes:
        print(f"no stack recorded in {args.state_dir}")
        return EXIT_FAILED
    print(f"{'process':<12} {'pid':>8}  {'alive':<6} {'health':<8} log")
    for p in status.processes:
        health = {None: "-", True: "ok", False: "FAIL"}[p.healthy]
        print(f"{p.name:<12} {p.pid:>8}  {'yes' if p.alive else 'NO':<6} {health:<8} {p.log}")
    print(f"target: {status.target_url}   CA: {status.ca_cert}")
    return EXIT_OK if status.running else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sut.stack_cli", description="the reference stack")
    sub = parser.add_subparsers(dest="command", required=True)
    add_stack_commands(sub)
    # Accept both `python -m sut.stack_cli up` and `... stack up`.
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] != "stack":
        args_in.insert(0, "stack")
    args = parser.parse_args(args_in)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
