"""Nightly history (baseline = last good run) and the CLI verbs' exit codes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loadtest.cli import check_run_args, nightly_run_factory
from loadtest.errors import EXIT_USAGE
from loadtest.report.commands import RunArgsError, add_report_commands, split_run_args
from loadtest.report.nightly import load_index, nightly
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run

pytestmark = pytest.mark.unit

BUDGET = ["e2e.p95 < 5000"]


def fake_run(tts_median: float = 400.0, seed: int = 0) -> Callable[[Path], int]:
    def run(run_dir: Path) -> int:
        write_run(
            run_dir, make_samples(SyntheticSpec(rows=2500, steps=(10,), seed=seed, tts_median=tts_median))
        )
        return 0

    return run


def clock(start: datetime) -> Callable[[], datetime]:
    state = {"t": start}

    def now() -> datetime:
        state["t"] += timedelta(seconds=1)
        return state["t"]

    return now


def test_nightly_history_and_baselines(tmp_path: Path) -> None:
    hist = tmp_path / "history"
    t0 = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)

    first = nightly(hist, fake_run(seed=1), BUDGET, now=clock(t0), charts=False)
    assert first.exit_code == 0 and first.baseline_dir is None
    assert first.run_dir.name == "20250101T020001Z"

    second = nightly(hist, fake_run(seed=2), BUDGET, now=clock(t0 + timedelta(days=1)), charts=False)
    assert second.exit_code == 0 and second.baseline_dir == first.run_dir

    slow = nightly(
        hist, fake_run(tts_median=520, seed=3), BUDGET, now=clock(t0 + timedelta(days=2)), charts=False
    )
    assert slow.exit_code == 2 and slow.baseline_dir == second.run_dir
    assert "tts" in slow.entry.regressions

    # The regressed run is not good: the next night still compares with the second run.
    crashed = nightly(hist, _raises, BUDGET, now=clock(t0 + timedelta(days=3)), charts=False)
    assert crashed.exit_code == 3 and crashed.baseline_dir == second.run_dir
    marker = json.loads((crashed.run_dir / "run-failed.json").read_text())
    assert "gateway exploded" in marker["error"]

    fourth = nightly(hist, fake_run(seed=4), BUDGET, now=clock(t0 + timedelta(days=4)))
    assert fourth.baseline_dir == second.run_dir and fourth.exit_code == 0

    entries = load_index(hist)
    assert [e.exit_code for e in entries] == [0, 0, 2, 3, 0]
    assert [e.baseline for e in entries] == [None, first.run_dir.name] + [second.run_dir.name] * 3
    assert entries[0].p95["e2e"] and entries[3].sent == 0
    assert json.loads((hist / "index.json").read_text())["schema_version"] == 1
    for name in ("trend.png", "trend.svg", "index.html"):
        assert (hist / name).stat().st_size > 1000
    assert (fourth.run_dir / "compare.json").is_file()


def _raises(run_dir: Path) -> int:
    raise RuntimeError("gateway exploded")


def test_nonstandard_run_exit_code_is_a_failed_run(tmp_path: Path) -> None:
    def run(run_dir: Path) -> int:
        fake_run()(run_dir)
        return 137  # killed

    res = nightly(tmp_path, run, BUDGET, charts=False)
    assert res.exit_code == 3 and res.run_exit_code == 137
    assert load_index(tmp_path)[0].good is False


def _parser(run_factory=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest")
    add_report_commands(parser.add_subparsers(dest="command", required=True), run_factory=run_factory)
    return parser


def _main(argv: list[str], run_factory=None) -> int:
    parser = _parser(run_factory)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code)
    return args.func(args)


def test_cli_report_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = tmp_path / "a", tmp_path / "b"
    write_run(base, make_samples(SyntheticSpec(rows=2000, steps=(10,), seed=1)))
    write_run(cand, make_samples(SyntheticSpec(rows=2000, steps=(10,), seed=2, stt_median=380)))
    config = tmp_path / "run.toml"
    config.write_text(
        '[target]\nurl = "https://gw.test"\ninsecure = true\n[thresholds]\nrules = ["e2e.p95 < 5000"]\n'
    )
    assert _main(["report", str(base), "--config", str(config), "--no-charts"]) == 0
    summary = json.loads((base / "summary.json").read_text())
    assert [t["expression"] for t in summary["thresholds"]] == ["e2e.p95 < 5000"]
    assert summary["metadata"]["insecure_tls"] is True and summary["metadata"]["target"] == "https://gw.test"
    assert _main(["report", str(base), "-t", "e2e.p95 < 10", "--no-charts"]) == 1
    assert _main(["report", str(base), "-t", "e2e.p95 <", "--no-charts"]) == EXIT_USAGE
    assert "e2e.p95 <" in capsys.readouterr().err
    assert _main(["report", str(tmp_path / "missing")]) == EXIT_USAGE
    assert _main(["report"]) == EXIT_USAGE  # argparse's own error, not 2 (= regression)
    assert _main(["report", str(base), "--bogus"]) == EXIT_USAGE  # not the top-level parser's exit 2
    assert _main(["compare", str(base), str(cand), "--bogus"]) == EXIT_USAGE
    assert _main(["compare", str(base), str(cand), "--out", str(tmp_path / "cmp")]) == 2
    assert (tmp_path / "cmp" / "compare.html").is_file()
    assert _main(["compare", str(base), str(base), "--out", str(tmp_path / "same")]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(["compare", str(base), str(empty)]) == 3


@pytest.mark.parametrize(
    "tail",
    [
        ["--", "--callers", "3", "--port-offset", "520"],
        ["--callers", "3", "--port-offset", "520"],  # no `--`: the first option nightly does not know
    ],
)
def test_cli_nightly_passes_run_args(tmp_path: Path, tail: list[str]) -> None:
    seen: list[list[str]] = []

    def factory(argv: list[str]) -> Callable[[Path], int]:
        seen.append(argv)
        return fake_run()

    hist = tmp_path / "h"
    rc = _main(
        ["nightly", "--history", str(hist), "-t", "e2e.p95 < 5000", "--tolerance-pct", "3", *tail], factory
    )
    assert rc == 0 and seen == [["--callers", "3", "--port-offset", "520"]]
    assert len(load_index(hist)) == 1


def test_cli_nightly_hands_its_config_to_the_run(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    config = tmp_path / "run.toml"
    config.write_text('[thresholds]\nrules = ["e2e.p95 < 5000"]\n')

    def factory(argv: list[str]) -> Callable[[Path], int]:
        seen.append(argv)
        return fake_run()

    assert (
        _main(
            ["nightly", "--history", str(tmp_path / "h"), "--config", str(config), "--callers", "2"], factory
        )
        == 0
    )
    assert seen == [["--config", str(config), "--callers", "2"]]


def test_split_run_args_stops_at_the_first_foreign_option() -> None:
    subparsers = argparse.ArgumentParser(prog="loadtest").add_subparsers()
    add_report_commands(subparsers)
    nightly_parser = subparsers.choices["nightly"]
    own, run = split_run_args(nightly_parser, ["--history=h", "-t", "x < 1", "--duration", "20", "-t", "y"])
    assert own == ["--history=h", "-t", "x < 1"] and run == ["--duration", "20", "-t", "y"]
    assert split_run_args(nightly_parser, ["--history", "h", "--", "--config", "c"]) == (
        ["--history", "h"],
        ["--config", "c"],
    )


@pytest.mark.parametrize("run_args", [["--bogus"], ["--callers", "two"], ["--out", "elsewhere"]])
def test_bad_run_options_are_usage_errors_before_anything_runs(tmp_path: Path, run_args: list[str]) -> None:
    with pytest.raises(RunArgsError):
        check_run_args(run_args)
    hist = tmp_path / "h"
    assert _main(["nightly", "--history", str(hist), *run_args], nightly_run_factory) == EXIT_USAGE
    assert load_index(hist) == []  # nothing ran, nothing recorded
    check_run_args(["--callers", "2", "--duration", "20", "--port-offset", "520"])  # the good ones pass


def test_a_run_that_exits_is_a_failed_run(tmp_path: Path) -> None:
    def run(run_dir: Path) -> int:
        raise SystemExit(2)  # e.g. argparse inside the run: must not surface as 2 (= regression)

    res = nightly(tmp_path, run, BUDGET, charts=False)
    assert res.exit_code == 3 and (res.run_dir / "run-failed.json").is_file()


def test_cli_nightly_without_a_run_function_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(["nightly", "--history", str(tmp_path)], None) == 3
    assert "no run function" in capsys.readouterr().err
    assert load_index(tmp_path) == []
