"""``loadtest`` command line: the entry point. Each verb is registered from its command module; nothing
below imports this module.

Registering a verb imports nothing heavy (`loadtest --help` stays fast): aiortc, locust, pandas and
matplotlib load only inside the verb that needs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from loadtest.errors import EXIT_RUN_FAILED, EXIT_USAGE, RunError, UsageError
from loadtest.redaction import scrub


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a typo; CI must not read that as a regression (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    from loadtest.preflight.command import add_preflight_command
    from loadtest.profile_check import add_profile_command
    from loadtest.report.commands import add_report_commands
    from loadtest.run_command import add_run_command
    from sut.stack_cli import add_stack_commands

    parser = ArgumentParser(prog="loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    add_run_command(sub)
    add_stack_commands(sub)
    add_report_commands(sub, run_factory=nightly_run_factory)
    add_preflight_command(sub)
    add_profile_command(sub)
    return parser


def check_run_args(run_args: list[str]) -> None:
    """Parse a nightly's run options with `loadtest run`'s own parser, so a typo fails now, not mid-night."""
    from loadtest.report.commands import RunArgsError

    if any(a == "--out" or a.startswith("--out=") for a in run_args):
        raise RunArgsError("--out is not a run option here: nightly runs into HISTORY/<timestamp>/")
    try:
        make_parser().parse_args(["run", *run_args, "--out", "-"])
    except SystemExit as exc:  # argparse has printed its message
        raise RunArgsError(f"bad run options: {' '.join(run_args)}") from exc


def nightly_run_factory(run_args: list[str]) -> Callable[[Path], int]:
    """`loadtest run <run_args> --out DIR` as a function of DIR, for `loadtest nightly` (which reports the
    directory itself: the run does not, so the verdict is printed once)."""
    check_run_args(run_args)
    return lambda run_dir: main(["run", *run_args, "--no-report", "--out", str(run_dir)])


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"loadtest: error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as exc:
        print(f"loadtest: error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
