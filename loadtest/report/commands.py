"""CLI verbs `report`, `compare`, `nightly`: thin wrappers; each handler returns the documented exit code.

loadtest/cli.py registers them with `add_report_commands(subparsers, run_factory)` and dispatches
`args.func(args)`; `nightly` runs the test through the factory it is given (it never imports the CLI).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from loadtest.errors import EXIT_USAGE
from loadtest.report.model import (
    DEFAULT_TARGET_MS,
    DEFAULT_TOLERANCE_MS,
    DEFAULT_TOLERANCE_PCT,
    ReportResult,
    RunMetadata,
)
from loadtest.report.nightly_command import RunArgsError as RunArgsError
from loadtest.report.nightly_command import run_nightly
from loadtest.report.runconfig import ReportConfigError, read_report_config
from loadtest.report.thresholds import ThresholdError, parse_thresholds

# Given the nightly's pass-through run arguments, return the callable that runs into a directory.
RunFactory = Callable[[list[str]], Callable[[Path], int]]


def _usage_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    return error


def _add(subparsers: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, **kwargs)
    parser.error = _usage_error(parser)  # type: ignore[method-assign]  # argparse exits 2 = "regression"
    parse = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        # An unknown option would travel up to the top-level parser, whose error exits 2: reject it here.
        ns, extras = parse(args, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]
    return parser


def _threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-t",
        "--threshold",
        action="append",
        dest="thresholds",
        metavar="EXPR",
        help="budget such as 'e2e.p95 < 1500' (repeatable; default: the production budget)",
    )
    p.add_argument(
        "--target-ms", type=float, default=None, help=f"e2e target (default {DEFAULT_TARGET_MS:g})"
    )


def _tolerance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tolerance-pct", type=float, default=DEFAULT_TOLERANCE_PCT, help="p95 worse by more than %%"
    )
    p.add_argument("--tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS, help="... and by more than ms")


def _ci_options(p: argparse.ArgumentParser, compares: bool = True) -> None:
    p.add_argument("--junit", type=Path, metavar="FILE",
                   help="also write JUnit XML: a case per threshold (and per compared stage)")
    if compares:
        p.add_argument("--strict", action="store_true",
                       help="an inconclusive comparison (too few samples) exits 2 instead of 0")


def add_report_commands(
    subparsers: argparse._SubParsersAction, run_factory: RunFactory | None = None
) -> None:
    """Register `report`, `compare` and `nightly` on the CLI's subparsers.

    run_factory: how `nightly` runs the test: given the run options, a function of the run directory that
    returns the run's exit code (loadtest.cli.nightly_run_factory). Without one, `nightly` cannot run.
    """
    p = _add(subparsers, "report", help="aggregate a run directory into summary.json + report.html")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--config", type=Path, metavar="RUN_TOML", help="run config: [report] thresholds/target_ms"
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="write the report here (default: RUN_DIR)")
    _threshold_options(p)
    p.add_argument("--baseline", type=Path, metavar="DIR", help="also compare against this run directory")
    _tolerance_options(p)
    p.add_argument("--partial", action="store_true", help="mark the report partial (run was cut short)")
    p.add_argument("--csv", action="store_true", help="also write samples.csv")
    p.add_argument("--no-charts", dest="charts", action="store_false", help="tables only (faster)")
    p.add_argument("--by", action="append", default=[], metavar="COLUMN[,COLUMN...]",
                   help="also give the outcomes and stage figures per group of rows, e.g. direction, "
                        "listener, scenario, speaker_node (repeatable)")
    _ci_options(p)
    p.set_defaults(func=cmd_report)

    p = _add(subparsers, "compare", help="baseline vs candidate run: deltas, significance, regressions")
    p.add_argument("baseline_dir", type=Path, metavar="BASELINE_DIR")
    p.add_argument("candidate_dir", type=Path, metavar="CANDIDATE_DIR")
    p.add_argument("--out", type=Path, metavar="DIR", help="default: CANDIDATE_DIR")
    p.add_argument("--target-ms", type=float, default=DEFAULT_TARGET_MS)
    _tolerance_options(p)
    _ci_options(p)
    p.set_defaults(func=cmd_compare)

    p = _add(
        subparsers,
        "nightly",
        help="run into HISTORY/<timestamp>, report, compare with the baseline night",
        usage="%(prog)s --history DIR [nightly options] [--] [run options ...]",
        epilog="Run options (those of `loadtest run`, except --out) follow the nightly's own options, "
        "optionally after `--`; the first option nightly does not know starts them.",
    )
    p.add_argument("--history", type=Path, required=True, metavar="DIR")
    p.add_argument(
        "--config", type=Path, metavar="RUN_TOML", help="run config: passed to the run, budget read from it"
    )
    _threshold_options(p)
    _tolerance_options(p)
    _ci_options(p)
    p.add_argument("--baseline", metavar="RUN_ID|DIR",
                   help="compare tonight with this run (default: the pinned one, else the last completed "
                        "night with enough samples)")
    p.add_argument("--pin", metavar="RUN_ID", help="pin RUN_ID as the baseline of every later night; no run")
    p.add_argument("--unpin", action="store_true", help="remove the pin; no run")
    p.add_argument("--pushgateway", metavar="URL",
                   help="push the night's summary (p50/p95/p99 per stage, pass rate, verdicts) to this "
                        "Prometheus Pushgateway")
    p.set_defaults(func=cmd_nightly, run_factory=run_factory, run_args=[])
    _pass_through_run_args(p)


def split_run_args(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(nightly's own arguments, the run's): the run's start at `--` or at the first option not nightly's.

    `loadtest nightly --history H --callers 2` and `loadtest nightly --history H -- --callers 2` are the
    same. The split is positional, so an option both could take (--config) belongs to nightly when it
    comes first; nightly passes --config on to the run anyway.
    """
    own_options = parser._option_string_actions  # noqa: SLF001 - argparse's own table of option strings
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return argv[:i], argv[i + 1 :]
        action = own_options.get(token.split("=", 1)[0])
        if action is None:
            return argv[:i], argv[i:]
        takes_value = action.nargs != 0 and "=" not in token
        i += 2 if takes_value else 1
    return argv, []


def _pass_through_run_args(parser: argparse.ArgumentParser) -> None:
    """Make the run options reach `args.run_args` instead of being "unrecognized" (argparse exit 2).

    The top-level parser hands a subcommand everything after its name through parse_known_args; the
    nightly parser parses only its own part and keeps the rest for the run.
    """
    parse = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        own, run = split_run_args(parser, list(sys.argv[1:] if args is None else args))
        ns, extras = parse(own, namespace)
        ns.run_args = run
        return ns, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def _resolve_budget(args: argparse.Namespace) -> tuple[list[str] | None, float, RunMetadata | None]:
    """Thresholds and target: command line > config file > defaults. Raises on bad input."""
    thresholds, target, meta = args.thresholds, args.target_ms, None
    if getattr(args, "config", None):
        cfg = read_report_config(args.config)
        thresholds = thresholds if thresholds is not None else cfg.thresholds
        target = target if target is not None else cfg.target_ms
        meta = cfg.metadata
    target = float(target) if target is not None else DEFAULT_TARGET_MS
    if thresholds is not None:
        parse_thresholds(thresholds)  # fail fast, naming the bad expression
    return thresholds, target, meta


def _print_result(result: ReportResult) -> None:
    """The verdict block, printed once: overall, then the budget and the comparison apart."""
    s = result.summary
    print(f"verdict: {s.verdict} (exit {result.exit_code}){' [PARTIAL]' if s.partial else ''}")
    if s.run_failed:
        print(f"run failed: {s.run_failed}")
    if s.thresholds:
        print(f"  budget: {s.budget_verdict}")
    for v in s.thresholds:
        print(f"    {v.verdict:7s} {v.threshold.expression}  (observed {v.observed:.4g})")
    if s.comparison:
        _print_comparison(s.comparison, "  ")
    for w in s.warnings:
        print(f"  warning: {w}")
    print(f"report: {result.html_path}\nsummary: {result.summary_path}")


def _print_comparison(cmp: Any, indent: str) -> None:
    from loadtest.report.compare import inconclusive_reason, stage_call

    print(f"{indent}vs baseline {cmp.baseline_dir}: {cmp.verdict}")
    for st in cmp.stages:
        if not (st.baseline_count or st.candidate_count):
            continue
        p95 = next(q for q in st.quantiles if q.q == "p95")
        test = f"permutation p={st.p_value:.3g}" if st.method == "permutation" else st.method
        change = f"{p95.baseline:9.1f} -> {p95.candidate:9.1f} ms ({p95.delta_pct:+6.1f} %)"
        counts = f"n {st.baseline_count}/{st.candidate_count}"
        print(f"{indent}  {st.stage:12s} p95 {change}  {counts:>12s}  {test:22s} {stage_call(st)}")
    if reason := inconclusive_reason(cmp):
        print(f"{indent}  {reason}")


def cmd_report(args: argparse.Namespace) -> int:
    from loadtest.report.groups import ByColumnError, parse_by
    from loadtest.report.report import build_report  # heavy (matplotlib): only when the verb runs

    try:
        thresholds, target, meta = _resolve_budget(args)
        by = parse_by(getattr(args, "by", None) or [])
    except (ThresholdError, ReportConfigError, ByColumnError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.run_dir.is_dir():
        print(f"error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = build_report(
            args.run_dir,
            thresholds,
            target,
            partial=args.partial,
            metadata=meta,
            out_dir=args.out,
            baseline_dir=args.baseline,
            tolerance_pct=args.tolerance_pct,
            tolerance_ms=args.tolerance_ms,
            csv=args.csv,
            charts=args.charts,
            strict=args.strict,
            junit=args.junit,
            by=by,
        )
    except ByColumnError as exc:  # raised before anything is written
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from loadtest.report.build import print_stage_table

    print_stage_table(result.summary)
    _print_result(result)
    return result.exit_code


def cmd_compare(args: argparse.Namespace) -> int:
    from loadtest.report.report import build_comparison

    for d in (args.baseline_dir, args.candidate_dir):
        if not d.is_dir():
            print(f"error: run directory {d} does not exist", file=sys.stderr)
            return EXIT_USAGE
    res = build_comparison(
        args.baseline_dir, args.candidate_dir, args.out, args.tolerance_pct, args.tolerance_ms,
        args.target_ms, strict=args.strict, junit=args.junit,
    )
    if res.error:
        print(f"error: {res.error}", file=sys.stderr)
        return res.exit_code
    assert res.comparison is not None
    _print_comparison(res.comparison, "")
    print(f"exit {res.exit_code}\ncomparison: {res.html_path}")
    return res.exit_code


def cmd_nightly(args: argparse.Namespace) -> int:
    try:
        thresholds, target, _ = _resolve_budget(args)
    except (ThresholdError, ReportConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_nightly(args, thresholds, target, _print_result)
