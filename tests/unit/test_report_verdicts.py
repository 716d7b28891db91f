"""Budget and regression verdicts apart: nightly baselines for a system over its budget, pins, the
inconclusive verdict of small samples (compare CLI, --strict), and --junit files."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.errors import EXIT_USAGE
from loadtest.report.commands import add_report_commands
from loadtest.report.nightly import MIN_BASELINE_SAMPLES, load_index, nightly
from loadtest.report.push import nightly_registry
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run
from tests.junit_check import junit_outcomes

pytestmark = pytest.mark.unit

OVER_BUDGET = ["e2e.p95 < 300", "error_rate < 0.5"]  # the first always fails here, the second passes


def synthetic(rows: int = 600, tts_median: float = 400.0, seed: int = 0) -> Callable[[Path], int]:
    def run(run_dir: Path) -> int:
        spec = SyntheticSpec(rows=rows, steps=(10,), seed=seed, tts_median=tts_median)
        write_run(run_dir, make_samples(spec))
        return 1  # what `loadtest run` returns for a missed budget

    return run


def clock(start: datetime) -> Callable[[], datetime]:
    state = {"t": start}

    def now() -> datetime:
        state["t"] += timedelta(seconds=1)
        return state["t"]

    return now


def night(hist: Path, day: int, run: Callable[[Path], int], **kw: object):
    t = datetime(2025, 3, 1, 2, 0, tzinfo=UTC) + timedelta(days=day)
    return nightly(hist, run, OVER_BUDGET, now=clock(t), charts=False, **kw)  # type: ignore[arg-type]


def test_a_system_over_its_budget_still_gets_regression_detection(tmp_path: Path) -> None:
    hist = tmp_path / "h"
    first = night(hist, 0, synthetic(seed=1))
    assert first.exit_code == 1 and first.baseline is None and first.entry.budget_verdict == "fail"
    second = night(hist, 1, synthetic(seed=2))
    assert second.baseline is not None and second.baseline.id == first.entry.id  # not "last good": none is
    assert second.baseline.rule == "last-completed"
    assert second.exit_code == 1 and second.entry.regression_verdict == "pass"
    slow = night(hist, 2, synthetic(seed=3, tts_median=600))
    assert slow.exit_code == 2, "a regression wins over a budget miss"
    assert slow.entry.budget_verdict == "fail" and slow.entry.regression_verdict == "regression"
    assert "tts" in slow.entry.regressions and slow.entry.baseline == second.entry.id
    # A regressed night does not become the baseline by itself: the next night is compared with night 2.
    fourth = night(hist, 3, synthetic(seed=4))
    assert fourth.baseline.id == second.entry.id and fourth.exit_code == 1
    index = json.loads((hist / "index.json").read_text())["runs"]
    assert [r["budget_verdict"] for r in index] == ["fail"] * 4
    assert [r["regression_verdict"] for r in index] == [None, "pass", "regression", "pass"]
    assert index[2]["counts"]["e2e"] > 500 and index[2]["baseline_rule"] == "last-completed"


def test_a_night_too_small_to_be_a_baseline_says_what_it_needs(tmp_path: Path) -> None:
    hist = tmp_path / "h"
    tiny = night(hist, 0, synthetic(rows=MIN_BASELINE_SAMPLES - 4))
    assert any(f"needs >= {MIN_BASELINE_SAMPLES}" in n for n in tiny.notes)
    nxt = night(hist, 1, synthetic(rows=40))
    assert nxt.baseline is None and any("no baseline" in n for n in nxt.notes)
    assert nxt.entry.regression_verdict is None


def test_pinned_and_given_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hist = tmp_path / "h"
    first = night(hist, 0, synthetic(seed=1))
    night(hist, 1, synthetic(seed=2))

    def factory(argv: list[str]) -> Callable[[Path], int]:
        return synthetic(seed=5)

    assert _main(["nightly", "--history", str(hist), "--pin", first.entry.id]) == 0
    assert _main(["nightly", "--history", str(hist), "--pin", "nope"]) == EXIT_USAGE
    assert _main(["nightly", "--history", str(hist), "-t", OVER_BUDGET[0]], factory) == 1
    entries = load_index(hist)
    assert entries[-1].baseline == first.entry.id and entries[-1].baseline_rule == "pinned"
    out = capsys.readouterr().out
    assert f"baseline: {first.entry.id} (pinned)" in out and out.count("verdict:") == 1
    # --baseline for one night beats the pin; a name that is neither run id nor directory: 4, nothing ran.
    given = entries[1].id
    assert _main(["nightly", "--history", str(hist), "--baseline", given, "-t", OVER_BUDGET[0]], factory) == 1
    assert load_index(hist)[-1].baseline == given and load_index(hist)[-1].baseline_rule == "given"
    before = len(load_index(hist))
    assert _main(["nightly", "--history", str(hist), "--baseline", "missing"], factory) == EXIT_USAGE
    assert len(load_index(hist)) == before
    assert _main(["nightly", "--history", str(hist), "--unpin"]) == 0
    assert _main(["nightly", "--history", str(hist), "-t", OVER_BUDGET[0]], factory) == 1
    assert load_index(hist)[-1].baseline_rule == "last-completed"


def _frame_with_e2e(values: np.ndarray, seed: int) -> pd.DataFrame:
    frame = make_samples(SyntheticSpec(rows=len(values), steps=(1,), seed=seed, timeout_rate=0, error_rate=0))
    scale = values / frame["e2e_ms"].to_numpy()
    for col in ("stt_ms", "translation_ms", "tts_ms", "e2e_ms"):
        frame[col] = frame[col] * scale
    return frame


def _parser(run_factory=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest")
    add_report_commands(parser.add_subparsers(dest="command", required=True), run_factory=run_factory)
    return parser


def _main(argv: list[str], run_factory=None) -> int:
    try:
        args = _parser(run_factory).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code)
    return args.func(args)


def test_compare_16_vs_31_with_a_doubled_p95(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(11)
    base, cand, same = tmp_path / "base", tmp_path / "cand", tmp_path / "same"
    write_run(base, _frame_with_e2e(rng.lognormal(np.log(1100), 0.2, 16), 1))
    write_run(cand, _frame_with_e2e(rng.lognormal(np.log(1100), 0.2, 31) * 1.9, 2))
    write_run(same, _frame_with_e2e(rng.lognormal(np.log(1100), 0.2, 31), 3))
    junit = tmp_path / "cmp.xml"
    assert _main(["compare", str(base), str(cand), "--junit", str(junit)]) == 2
    out = capsys.readouterr().out
    assert "e2e" in out and "REGRESSION" in out and out.count("vs baseline") == 1
    doc = json.loads((cand / "compare.json").read_text())
    assert doc["verdict"] == "regression" and doc["stages"]["e2e"]["method"] == "permutation"
    assert doc["stages"]["e2e"]["p_value"] < 0.025
    outcomes = junit_outcomes(junit)
    assert outcomes["regression/e2e p95 vs baseline"] == "failure"
    # The same distribution at this size: no regression found, but 16 samples cannot rule one out.
    assert _main(["compare", str(base), str(same), "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "vs baseline" in out and ": inconclusive" in out and "needs" not in out.split("\n")[0]
    assert json.loads((same / "compare.json").read_text())["verdict"] == "inconclusive"
    assert junit_outcomes(junit)["regression/e2e p95 vs baseline"] == "skipped"
    assert _main(["compare", str(base), str(same), "--strict"]) == 2


def test_junit_fails_exactly_the_failed_thresholds(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, make_samples(SyntheticSpec(rows=800, steps=(10,), seed=1)))
    junit = tmp_path / "report.xml"
    rules = ["e2e.p95 < 300", "stt.p95 < 5000", "error_rate < 0.5", "jitter.p95 < 0.001", "wer.p95 < 1e9"]
    flags = [arg for rule in rules for arg in ("-t", rule)]
    assert _main(["report", str(run), "--no-charts", "--junit", str(junit), *flags]) == 1
    summary = json.loads((run / "summary.json").read_text())
    failed = {t["expression"] for t in summary["thresholds"] if t["verdict"] != "pass"}
    outcomes = junit_outcomes(junit)
    assert {k.split("/", 1)[1] for k, v in outcomes.items() if v == "failure"} == failed
    assert {k.split("/", 1)[1] for k in outcomes} == set(rules)
    text = junit.read_text()
    observed = next(t["observed"] for t in summary["thresholds"] if t["expression"] == "e2e.p95 < 300")
    assert f"observed {observed:.6g}" in text


def test_pushgateway_registry_holds_the_nightly_summary(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    res = night(tmp_path / "h", 0, synthetic(seed=1))
    text = generate_latest(nightly_registry(res.entry, res.report.summary)).decode()
    p95 = res.report.summary.stages["e2e"].p95 / 1000
    assert f'speechload_nightly_stage_seconds{{quantile="0.95",stage="e2e"}} {p95}' in text
    assert 'speechload_nightly_verdict{kind="budget",verdict="fail"} 1.0' in text
    assert "speechload_nightly_pass_rate" in text and "speechload_nightly_exit_code 1.0" in text
