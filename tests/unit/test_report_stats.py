"""Exact percentiles and the order-statistic bootstrap (loadtest.report.stats / aggregate.stage_stats)."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.report.aggregate import stage_stats
from loadtest.report.stats import bootstrap_quantile, clean_sorted, grouped_quantiles, percentile_interval

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).lognormal(6.0, 0.4, 10_001),
        np.random.default_rng(2).exponential(300.0, 7),
        np.random.default_rng(3).normal(500.0, 50.0, 1234),
        np.arange(1.0, 101.0),  # p95 of 1..100 sits between ranks: 95.05
    ],
)
def test_percentiles_equal_numpy_linear(values: np.ndarray) -> None:
    st = stage_stats(values, np.random.default_rng(0), resamples=200)
    expected = np.percentile(values, [50, 90, 95, 99], method="linear")
    assert [st.p50, st.p90, st.p95, st.p99] == list(expected)
    assert st.count == values.size
    assert st.mean == pytest.approx(values.mean(), rel=1e-12)
    assert st.max == values.max() and st.min == values.min()


def test_nan_is_not_a_latency() -> None:
    values = np.array([100.0, np.nan, 200.0, np.nan, 300.0])
    st = stage_stats(values, np.random.default_rng(0), resamples=50)
    assert st.count == 3
    assert st.p50 == 200.0


def test_empty_stage_is_nan_with_zero_count() -> None:
    st = stage_stats(np.array([np.nan]), np.random.default_rng(0), resamples=50)
    assert st.count == 0 and np.isnan(st.p95) and np.isnan(st.p95_ci.low)


def test_grouped_quantiles_match_numpy_per_group() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 6, 5000)
    codes[codes == 4] = 5  # group 4 left empty on purpose
    values = rng.lognormal(6.0, 0.5, 5000)
    values[::17] = np.nan
    qs = [0.5, 0.95, 0.99]
    counts, out = grouped_quantiles(codes, values, 6, qs)
    for g in range(6):
        v = values[(codes == g) & np.isfinite(values)]
        assert counts[g] == v.size
        if v.size:
            np.testing.assert_allclose(out[g], np.quantile(v, qs), rtol=1e-12)
        else:
            assert np.isnan(out[g]).all()


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99, 0.37])
def test_order_statistic_bootstrap_matches_brute_force(q: float) -> None:
    x = clean_sorted(np.random.default_rng(7).lognormal(6.0, 0.5, 301))
    fast = bootstrap_quantile(x, q, np.random.default_rng(1), 40_000)
    r = np.random.default_rng(2)
    brute = np.quantile(x[r.integers(0, x.size, (4000, x.size))], q, axis=1)
    # Same distribution: centre, spread and the 95 % interval agree within Monte Carlo error.
    assert fast.mean() == pytest.approx(brute.mean(), rel=0.01)
    assert fast.std() == pytest.approx(brute.std(), rel=0.08)
    lo_f, hi_f = np.quantile(fast, [0.025, 0.975])
    lo_b, hi_b = np.quantile(brute, [0.025, 0.975])
    assert lo_f == pytest.approx(lo_b, rel=0.03) and hi_f == pytest.approx(hi_b, rel=0.03)


def test_bootstrap_is_seeded_and_bounded() -> None:
    x = clean_sorted(np.random.default_rng(0).normal(100, 10, 1000))
    a = bootstrap_quantile(x, 0.95, np.random.default_rng(42), 500)
    b = bootstrap_quantile(x, 0.95, np.random.default_rng(42), 500)
    assert a.shape == (500,)
    np.testing.assert_array_equal(a, b)
    ci = percentile_interval(a)
    assert x.min() <= ci.low <= np.quantile(x, 0.95) <= ci.high <= x.max()


def test_bootstrap_edge_sizes() -> None:
    rng = np.random.default_rng(0)
    assert np.isnan(bootstrap_quantile(np.empty(0), 0.5, rng, 10)).all()
    assert (bootstrap_quantile(np.array([5.0]), 0.95, rng, 10) == 5.0).all()
    two = bootstrap_quantile(np.array([1.0, 3.0]), 0.5, rng, 2000)
    assert set(np.unique(two)) <= {1.0, 2.0, 3.0}
