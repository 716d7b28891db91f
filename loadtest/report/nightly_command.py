"""`loadtest nightly`'s handler: pin/unpin, the run through the CLI's factory, the verdict, the push."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from loadtest.errors import EXIT_USAGE
from loadtest.report.model import EXIT_OK, EXIT_RUN_FAILED, ReportResult


class RunArgsError(ValueError):
    """The pass-through run options do not parse: a usage error (exit 4), found before anything runs."""


def _pin(args: argparse.Namespace) -> int:
    from loadtest.report.nightly import NightlyError, pin

    if args.run_args:
        print("error: --pin/--unpin run nothing: leave the run options off", file=sys.stderr)
        return EXIT_USAGE
    try:
        pinned = pin(args.history, None if args.unpin else args.pin)
    except NightlyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"baseline pinned: {pinned}" if pinned else f"baseline unpinned in {args.history}")
    return EXIT_OK


def run_nightly(
    args: argparse.Namespace,
    thresholds: list[str] | None,
    target: float,
    print_result: Callable[[ReportResult], None],
) -> int:
    """The nightly verb after its budget was resolved; returns the documented exit code."""
    from loadtest.report.nightly import NightlyError, choose_baseline, load_index, nightly

    if args.pin or args.unpin:
        return _pin(args)
    run_args = list(args.run_args or [])
    if args.config and "--config" not in run_args:
        run_args = ["--config", str(args.config), *run_args]  # one config drives both the run and its budget
    factory = args.run_factory
    if factory is None:
        print("error: nightly has no run function (register it with add_report_commands(sub, run_factory))",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    try:
        if args.baseline is not None:  # a baseline naming nothing is a usage error before the run
            choose_baseline(Path(args.history), load_index(Path(args.history)), args.baseline)
        run_fn = factory(run_args)
    except (RunArgsError, NightlyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    res = nightly(
        args.history, run_fn, thresholds, target, args.tolerance_pct, args.tolerance_ms,
        baseline=args.baseline, strict=args.strict, junit=args.junit,
    )
    from loadtest.report.build import print_stage_table

    print_stage_table(res.report.summary)
    print_result(res.report)
    if res.baseline is not None:
        print(f"baseline: {res.baseline.id} ({res.baseline.rule})")
    else:
        print("baseline: none")
    for note in res.notes:
        print(f"note: {note}")
    if args.pushgateway:
        from loadtest.report.push import PushError, push_nightly

        try:
            push_nightly(args.pushgateway, res.entry, res.report.summary, Path(args.history).name)
            print(f"pushed to {args.pushgateway}")
        except PushError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    print(f"nightly exit {res.exit_code}\nhistory: {args.history / 'index.html'}")
    return res.exit_code
