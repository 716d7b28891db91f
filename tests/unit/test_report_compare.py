"""Compare: an injected +10 % p95 shift is flagged; two samples of one distribution stay quiet."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.report.compare import MIN_COMPARE_SAMPLES, compare_stage, compare_values, stage_call

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


def test_too_few_samples_never_make_a_regression() -> None:
    # What two 1-caller nightlies look like: 2 utterances and 1 connect each, every candidate value slower.
    # The bootstrap CI of a 2-value p95 lies above 0 whenever all candidates beat all baselines (1 in 6
    # by chance); with one value per side it is a single point. Neither is evidence.
    base = {"e2e": np.array([900.0, 950.0]), "connect": np.array([100.0])}
    cand = {"e2e": np.array([1100.0, 1200.0]), "connect": np.array([160.0])}
    out = {s.stage: s for s in compare_values(base, cand, resamples=RESAMPLES)}
    for stage in ("e2e", "connect"):
        assert not out[stage].enough_samples and not out[stage].regression and not out[stage].significant
        assert stage_call(out[stage]).startswith("too few samples")
    assert out["e2e"].quantiles[1].delta_ms == pytest.approx(250.0 - 2.5)  # the figures are still reported


def test_twenty_samples_a_side_are_judged() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(900.0, 20.0, MIN_COMPARE_SAMPLES)
    st = compare_stage("e2e", base, base + 400.0, np.random.default_rng(0), resamples=RESAMPLES)
    assert st.enough_samples and st.regression and stage_call(st) == "REGRESSION"
