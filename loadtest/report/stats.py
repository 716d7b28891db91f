"""Exact quantiles and a cheap, exact bootstrap of quantiles (pure numpy).

Percentiles use numpy's default `method="linear"` (Hyndman & Fan type 7): for n sorted values the
q-quantile sits at 0-based rank h = (n - 1) q, interpolated between floor(h) and floor(h) + 1.

Bootstrap without materialising resamples: a resample of size n draws n indices floor(U·n) with U
uniform, a non-decreasing map, so the resample's r-th order statistic is x_sorted[floor(U_(r)·n)] where
U_(r) is the r-th order statistic of n uniforms, distributed Beta(r, n - r + 1). The next one follows as
U_(r+1) = U_(r) + (1 - U_(r))·V with V ~ Beta(1, n - r) (the minimum of the n - r uniforms left above it).
So each bootstrap replicate of a type-7 quantile costs two Beta draws instead of an O(n) resample: the
percentile bootstrap is exact in distribution, vectorised, seedable, and independent of n (1M rows cost
the same as 1k).
"""

from __future__ import annotations

import numpy as np

from loadtest.report.model import Interval

QUANTILES: dict[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
CI_QUANTILES: dict[str, float] = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95


def clean_sorted(values: np.ndarray) -> np.ndarray:
    """Finite values as float64, sorted ascending (NaN = stage not reached, never a latency)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    v.sort(kind="quicksort")
    return v


def bootstrap_quantile(
    x_sorted: np.ndarray, q: float, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """`resamples` bootstrap replicates of the type-7 q-quantile of `x_sorted` (see module docstring)."""
    n = x_sorted.size
    if n == 0:
        return np.full(resamples, np.nan)
    if n == 1:
        return np.full(resamples, x_sorted[0])
    h = (n - 1) * q
    k = int(np.floor(h))
    frac = h - k
    r = k + 1  # 1-based rank of the lower order statistic
    u_lo = rng.beta(r, n - r + 1, size=resamples)
    lo = x_sorted[np.minimum((u_lo * n).astype(np.int64), n - 1)]
    if frac <= 0.0 or r >= n:
        return lo
    u_hi = u_lo + (1.0 - u_lo) * rng.beta(1.0, n - r, size=resamples)
    hi = x_sorted[np.minimum((u_hi * n).astype(np.int64), n - 1)]
    return lo + frac * (hi - lo)


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high))


def grouped_quantiles(
    codes: np.ndarray, values: np.ndarray, n_groups: int, qs: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact type-7 quantiles of `values` per group code in [0, n_groups): one lexsort for all groups.

    Returns (counts[n_groups], quantiles[n_groups, len(qs)]); NaN rows for empty groups. Used for
    time bins and caller levels where a pandas groupby().quantile() per group would be slower at 1M rows.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(codes, dtype=np.int64)
    keep = np.isfinite(v) & (c >= 0)
    v, c = v[keep], c[keep]
    order = np.lexsort((v, c))
    v, c = v[order], c[order]
    counts = np.bincount(c, minlength=n_groups)[:n_groups]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full((n_groups, len(qs)), np.nan)
    has = counts > 0
    if not has.any():
        return counts, out
    n = counts[has].astype(np.float64)
    base = starts[has]
    for j, q in enumerate(qs):
        h = (n - 1.0) * q
        lo = np.floor(h).astype(np.int64)
        frac = h - lo
        hi = np.minimum(lo + 1, counts[has] - 1)
        a = v[base + lo]
        b = v[base + hi]
        out[has, j] = a + frac * (b - a)
    return counts, out
