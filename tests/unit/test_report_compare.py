"""Compare: an injected +10 % p95 shift is flagged; two samples of one distribution stay quiet.

The call is made on the p95: a shift of the tail alone is a regression, a shift of the median alone
(which a median or rank test would call) is not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from loadtest.report.compare import ALPHA, MIN_COMPARE_SAMPLES, compare_stage, compare_values, stage_call
from loadtest.report.model import Comparison, StageComparison

pytestmark = pytest.mark.unit

N = 2000
RESAMPLES = 1000  # modest: the order-statistic bootstrap is exact in distribution, fewer replicates suffice


def _e2e(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    return rng.lognormal(np.log(900.0), 0.35, N) * scale


def test_flags_a_ten_percent_p95_shift() -> None:
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        st = compare_stage(
            "e2e", _e2e(rng), _e2e(rng, 1.10), np.random.default_rng(seed), resamples=RESAMPLES
        )
        p95 = next(q for q in st.quantiles if q.q == "p95")
        assert p95.delta_pct == pytest.approx(10.0, abs=8.0)
        flagged += st.regression
    assert flagged >= 19


# Population quantiles of _e2e: median 900 ms, sigma 0.35 (z of p80 = 0.8416, of p90 = 1.2816).
P50, P80, P90 = 900.0, 900.0 * np.exp(0.35 * 0.8416), 900.0 * np.exp(0.35 * 1.2816)


def _tail_only(x: np.ndarray) -> np.ndarray:
    """Above the population p80, twice as far from it: p50 untouched, p95 about +25 %."""
    return np.where(x > P80, P80 + (x - P80) * 2.0, x)


def _median_only(x: np.ndarray) -> np.ndarray:
    """×1.2 up to the population p50, easing back to ×1 at its p90 (monotone): p50 +20 %, p95 untouched."""
    w = np.clip((x - P50) / (P90 - P50), 0.0, 1.0)
    return x * (1.2 * (1.0 - w) + w)


def _trials(shift: Callable[[np.ndarray], np.ndarray]) -> list[StageComparison]:
    out = []
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        base, cand = _e2e(rng), shift(_e2e(rng))
        out.append(compare_stage("e2e", base, cand, np.random.default_rng(seed), resamples=RESAMPLES))
    return out


def _delta_pct(st: StageComparison, q: str) -> float:
    return next(d.delta_pct for d in st.quantiles if d.q == q)


def test_flags_a_tail_only_shift() -> None:
    trials = _trials(_tail_only)
    for st in trials:
        assert abs(_delta_pct(st, "p50")) < 5.0  # the median did not move: a median rule stays quiet
        assert _delta_pct(st, "p95") > 10.0
    assert sum(st.regression for st in trials) >= 19


def test_quiet_on_a_median_only_shift() -> None:
    trials = _trials(_median_only)
    for st in trials:
        assert _delta_pct(st, "p50") > 15.0  # a median rule would call every one of these
        assert st.mannwhitney_p < 1e-6  # so would the rank test: it is reported, it does not decide
        assert abs(_delta_pct(st, "p95")) < 6.0
    assert sum(st.regression for st in trials) <= 1


def test_quiet_on_one_distribution_in_95_of_100_trials() -> None:
    false_alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        st = compare_stage("e2e", _e2e(rng), _e2e(rng), np.random.default_rng(seed), resamples=RESAMPLES)
        false_alarms += st.regression
    assert false_alarms <= 5


def test_tolerances_gate_a_significant_but_small_shift() -> None:
    rng = np.random.default_rng(3)
    base = rng.lognormal(np.log(100.0), 0.2, 50_000)
    cand = base * 1.08  # +8 %, hugely significant at this n, but only ~10 ms at p95
    st = compare_stage("translation", base, cand, np.random.default_rng(0), resamples=RESAMPLES)
    assert st.significant and not st.regression
    st = compare_stage(
        "translation", base, cand, np.random.default_rng(0), tolerance_ms=5, resamples=RESAMPLES
    )
    assert st.regression


def test_improvement_and_missing_stage() -> None:
    rng = np.random.default_rng(4)
    base = {"e2e": _e2e(rng, 1.3), "stt": rng.normal(300, 30, N)}
    cand = {"e2e": _e2e(rng), "stt": np.array([])}
    out = {s.stage: s for s in compare_values(base, cand, resamples=RESAMPLES)}
    assert out["e2e"].improvement and not out["e2e"].regression
    assert out["e2e"].mannwhitney_p > 0.5  # one-sided "candidate slower" test
    assert not out["stt"].regression and np.isnan(out["stt"].mannwhitney_p)
    assert out["connect"].candidate_count == 0


def test_a_tiny_sample_is_inconclusive_not_a_pass() -> None:
    # What two 1-caller nightlies look like: 2 utterances and 1 connect each, every candidate value slower.
    # An exact permutation test cannot reach significance here (6 and 2 partitions), and "no significant
    # change" from 2 samples is no evidence of no regression: inconclusive, never pass.
    base = {"e2e": np.array([900.0, 950.0]), "connect": np.array([100.0])}
    cand = {"e2e": np.array([1100.0, 1200.0]), "connect": np.array([160.0])}
    out = {s.stage: s for s in compare_values(base, cand, resamples=RESAMPLES)}
    for stage in ("e2e", "connect"):
        st = out[stage]
        assert not st.enough_samples and not st.regression and not st.significant
        assert st.inconclusive and st.method == "permutation"
        assert stage_call(st).startswith("inconclusive")
    assert out["e2e"].p_value == pytest.approx(1 / 6)  # exact: the slowest pair is 1 of C(4, 2) partitions
    assert out["connect"].p_value == pytest.approx(1 / 2)
    assert out["e2e"].quantiles[1].delta_ms == pytest.approx(250.0 - 2.5)  # the figures are still reported
    assert not out["stt"].inconclusive  # no sample on either side: nothing to judge, not inconclusive
    cmp = Comparison("a", "b", 5.0, 20.0, tuple(out.values()), None, None)
    assert cmp.verdict == "inconclusive" and cmp.inconclusive == ["connect", "e2e"]


def _small(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    return rng.lognormal(np.log(1100.0), 0.2, n) * scale


def test_a_doubled_p95_at_16_vs_31_samples_is_flagged() -> None:
    # The run that exposed the old rule: 16 vs 31 utterances, e2e p95 nearly doubled, exit 0 with
    # "too few samples". The permutation test on the p95 difference calls it at this size.
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(500 + seed)
        st = compare_stage("e2e", _small(rng, 16), _small(rng, 31, 1.9), np.random.default_rng(seed))
        assert st.method == "permutation" and not st.enough_samples
        flagged += st.regression
        if st.regression:
            assert st.p_value < ALPHA and not st.inconclusive and stage_call(st) == "REGRESSION"
    assert flagged >= 19


def test_equal_distributions_at_16_vs_31_are_not_flagged() -> None:
    alarms, inconclusive = 0, 0
    for seed in range(40):
        rng = np.random.default_rng(900 + seed)
        st = compare_stage("e2e", _small(rng, 16), _small(rng, 31), np.random.default_rng(seed))
        alarms += st.regression
        inconclusive += st.inconclusive
    assert alarms <= 3  # one-sided level 2.5 %: about 1 in 40
    assert inconclusive >= 37  # and the rest is not a pass: 16 samples cannot rule a regression out


def test_twenty_samples_a_side_are_judged() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(900.0, 20.0, MIN_COMPARE_SAMPLES)
    st = compare_stage("e2e", base, base + 400.0, np.random.default_rng(0), resamples=RESAMPLES)
    assert st.enough_samples and st.regression and stage_call(st) == "REGRESSION"
    same = compare_stage("e2e", base, rng.normal(900.0, 20.0, 25), np.random.default_rng(0))
    assert same.enough_samples and not same.regression and not same.inconclusive  # a judged pass
