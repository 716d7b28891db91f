"""Time-binned figures for the charts: the only thing charts see, so they cost the same at 1k or 1M rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loadtest.report.stats import grouped_means, grouped_quantiles

NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_BINS = 150
MIN_PER_BIN = 20  # aim for at least this many samples per bin so a per-bin p99 is not a single value
SCATTER_POINTS = 4000
RTC_COLUMNS = ("jitter_ms", "packets_lost", "rtt_ms")
BIN_QS = [0.50, 0.95, 0.99]


@dataclass(frozen=True)
class TimeSeries:
    """Per time bin (seconds since the first planned send): sends, e2e p50/p95/p99, rates, callers."""

    bin_s: float
    t: np.ndarray  # bin start, s
    sent: np.ndarray
    e2e_count: np.ndarray
    e2e_q: np.ndarray  # [bins, 3]: p50, p95, p99 (ms)
    error_rate: np.ndarray
    timeout_rate: np.ndarray
    callers: np.ndarray  # mean active callers in the bin (NaN when unknown)
    rtc: dict[str, np.ndarray] = field(default_factory=dict)  # column -> [bins, 2]: p50, p95
    scatter_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    scatter_e2e: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def empty(self) -> bool:
        return self.t.size == 0


def choose_bin(duration_s: float, n: int) -> float:
    raw = max(duration_s / MAX_BINS, duration_s * MIN_PER_BIN / max(n, 1), 1.0)
    for b in NICE_BINS_S:
        if b >= raw:
            return float(b)
    return float(NICE_BINS_S[-1])


def empty_series() -> TimeSeries:
    z = np.empty(0)
    return TimeSeries(1.0, z, z, z, np.empty((0, 3)), z, z, z)


def build_timeseries(
    frame: pd.DataFrame, status: np.ndarray, callers: np.ndarray, seed: int = 0
) -> TimeSeries:
    wall = frame["wall_start"].to_numpy(dtype=np.float64)
    finite = np.isfinite(wall)
    if not finite.any():
        return empty_series()
    t_rel = wall - np.nanmin(wall)
    duration = float(np.nanmax(t_rel))
    bin_s = choose_bin(duration, int(finite.sum()))
    n_bins = int(duration // bin_s) + 1
    codes = np.where(finite, np.floor(np.nan_to_num(t_rel, nan=-1.0) / bin_s), -1).astype(np.int64)
    valid = codes >= 0
    sent = np.bincount(codes[valid], minlength=n_bins)[:n_bins].astype(np.float64)
    e2e = frame["e2e_ms"].to_numpy(dtype=np.float64)
    e2e_count, e2e_q = grouped_quantiles(codes, e2e, n_bins, BIN_QS)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.bincount(codes[valid], weights=(status[valid] == "error"), minlength=n_bins)[:n_bins] / sent
        tout = (
            np.bincount(codes[valid], weights=(status[valid] == "timeout"), minlength=n_bins)[:n_bins] / sent
        )
    rtc = {}
    for col in RTC_COLUMNS:
        vals = frame[col].to_numpy(dtype=np.float64)
        if np.isfinite(vals).any():
            rtc[col] = grouped_quantiles(codes, vals, n_bins, [0.50, 0.95])[1]
    # A light random subsample shows the spread behind the percentile lines without drawing 1M points.
    ok_idx = np.flatnonzero(valid & np.isfinite(e2e))
    rng = np.random.default_rng(seed)
    if ok_idx.size > SCATTER_POINTS:
        ok_idx = np.sort(rng.choice(ok_idx, SCATTER_POINTS, replace=False))
    return TimeSeries(
        bin_s=bin_s,
        t=np.arange(n_bins) * bin_s,
        sent=sent,
        e2e_count=e2e_count.astype(np.float64),
        e2e_q=e2e_q,
        error_rate=err,
        timeout_rate=tout,
        callers=grouped_means(codes, callers, n_bins),
        rtc=rtc,
        scatter_t=t_rel[ok_idx],
        scatter_e2e=e2e[ok_idx],
    )
