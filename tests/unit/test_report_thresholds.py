"""Threshold grammar and verdicts on both sides of the line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.report.aggregate import summarise
from loadtest.report.frame import LoadedSamples, normalise
from loadtest.report.model import RunMetadata, RunSummary
from loadtest.report.thresholds import (
    ThresholdError,
    default_thresholds,
    evaluate,
    parse_threshold,
    parse_thresholds,
)

pytestmark = pytest.mark.unit


def _summary(e2e: np.ndarray, status: list[str] | None = None) -> RunSummary:
    import pandas as pd

    n = e2e.size
    frame = pd.DataFrame(
        {
            "e2e_ms": e2e,
            "stt_ms": e2e * 0.4,
            "status": status or ["ok"] * n,
        }
    )
    loaded = LoadedSamples(normalise(frame), "test")
    return summarise(loaded, 1500.0, RunMetadata(), None, False, resamples=50).summary


def test_parse_forms() -> None:
    t = parse_threshold("e2e.p95 < 1500")
    assert (t.metric, t.op, t.limit) == ("e2e.p95", "<", 1500.0)
    assert parse_threshold("  stt.p99<=500ms ").metric == "stt.p99"
    assert parse_threshold("error_rate < 1%").limit == pytest.approx(0.01)
    assert parse_threshold("timeout_rate <= 0.02").op == "<="
    assert parse_threshold("e2e_under_target > 0.95").metric == "e2e_under_target"
    assert parse_threshold("e2e.p(95) < 1500").metric == "e2e.p95"
    assert parse_threshold("tts.med < 400").metric == "tts.p50"
    assert parse_threshold("jitter.p95 < 30").metric == "jitter_ms.p95"
    assert parse_threshold("e2e.count >= 100").metric == "e2e.count"
    assert parse_threshold("e2e.mean == 1e3").limit == 1000.0


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("e2e.p95 << 1500", "does not parse"),
        ("e2e.p95 < ", "does not parse"),
        ("e2e.p97 < 1500", "unknown statistic 'p97'"),
        ("asr.p95 < 1500", "unknown series 'asr'"),
        ("latency < 1500", "unknown metric 'latency'"),
        ("error_rate < 10ms", "fraction"),
        ("e2e.p95 < 5%", "'%' applies to rates"),
    ],
)
def test_bad_expressions_are_named(expr: str, fragment: str) -> None:
    with pytest.raises(ThresholdError) as err:
        parse_threshold(expr)
    assert repr(expr) in str(err.value) and fragment in str(err.value)


def test_default_budget_is_production_budget() -> None:
    assert default_thresholds(1500) == [
        "stt.p95 < 500",
        "translation.p95 < 150",
        "tts.p95 < 800",
        "e2e.p95 < 1500",
    ]
    assert default_thresholds(2000.5)[-1] == "e2e.p95 < 2000.5"


def test_verdicts_on_both_sides_of_the_line() -> None:
    # 10, 20, ..., 1000: linear p95 sits at rank 99 * 0.95 = 94.05 -> 950 + 0.05 * 10 = 950.5.
    s = _summary(np.arange(1, 101) * 10.0)
    assert s.stages["e2e"].p95 == pytest.approx(950.5)
    p95 = s.stages["e2e"].p95
    cases = {
        f"e2e.p95 < {p95}": "fail",
        f"e2e.p95 <= {p95}": "pass",
        f"e2e.p95 < {p95 + 0.001}": "pass",
        f"e2e.p95 > {p95}": "fail",
        f"e2e.p95 >= {p95}": "pass",
        f"e2e.p95 > {p95 - 0.001}": "pass",
        f"e2e.p95 == {p95}": "pass",
        "e2e.max < 1000": "fail",
        "e2e.max <= 1000": "pass",
    }
    verdicts = evaluate(s, parse_thresholds(cases))
    assert {v.threshold.expression: v.verdict for v in verdicts} == cases


def test_rate_verdicts_use_all_sent_as_denominator() -> None:
    e2e = np.array([100.0] * 95 + [np.nan] * 5)
    status = ["ok"] * 95 + ["timeout"] * 3 + ["error"] * 2
    s = _summary(e2e, status)
    assert s.rates.timeout_rate == pytest.approx(0.03)
    assert s.rates.error_rate == pytest.approx(0.02)
    assert s.rates.e2e_under_target == pytest.approx(0.95)
    got = {
        v.threshold.expression: v.verdict
        for v in evaluate(
            s,
            parse_thresholds(
                [
                    "timeout_rate <= 0.03",
                    "timeout_rate < 0.03",
                    "error_rate < 2.01%",
                    "error_rate < 2%",
                    "e2e_under_target >= 0.95",
                    "e2e_under_target > 0.95",
                ]
            ),
        )
    }
    assert got == {
        "timeout_rate <= 0.03": "pass",
        "timeout_rate < 0.03": "fail",
        "error_rate < 2.01%": "pass",
        "error_rate < 2%": "fail",
        "e2e_under_target >= 0.95": "pass",
        "e2e_under_target > 0.95": "fail",
    }


def test_no_data_verdict() -> None:
    s = _summary(np.array([np.nan, np.nan]), ["timeout", "timeout"])
    verdicts = evaluate(s, parse_thresholds(["e2e.p95 < 1500", "tts.p95 < 800", "e2e.count > 0"]))
    assert [v.verdict for v in verdicts] == ["no-data", "no-data", "fail"]
    assert math.isnan(verdicts[0].observed)
