"""Time-binned figures for the charts: the only thing charts see, so they cost the same at 1k or 1M rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loadtest.report.stats import grouped_quantiles

NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MIN_BINS, MAX_BINS = 20, 60  # enough bins to see a trend, few enough that each bin holds data
MIN_PER_BIN = 20  # prefer bins this full (a per-bin p99 of fewer values is just the max) ...
P99_MIN_PER_BIN = 100  # ... and draw the per-bin p99 only when bins typically hold this many (else ~max)
LINE_MIN_PER_BIN = 3  # fewer per bin: per-bin percentiles are single values; charts show points instead
SCATTER_POINTS = 4000
FAIL_POINTS = 200  # mark failed utterances one by one only when they are few enough to tell apart
RTC_POINTS = 500  # raw RTC values are drawn (behind the per-bin lines) for runs up to this many rows
CALLER_STEPS = 2000  # resolution of the active-callers step line
RTC_COLUMNS = ("jitter_ms", "packets_lost", "rtt_ms")
BIN_QS = [0.50, 0.95, 0.99]


def _empty() -> np.ndarray:
    return np.empty(0)


@dataclass(frozen=True)
class TimeSeries:
    """Per time bin (seconds since the first planned send): sends, e2e p50/p95/p99, rates; plus points."""

    bin_s: float
    t: np.ndarray  # bin start, s
    t_mean: np.ndarray  # mean planned send time of the bin's rows (where its figures are drawn), s
    sent: np.ndarray
    e2e_count: np.ndarray
    e2e_q: np.ndarray  # [bins, 3]: p50, p95, p99 (ms)
    error_rate: np.ndarray
    timeout_rate: np.ndarray
    duration_s: float = 0.0  # first to last planned send
    rtc: dict[str, np.ndarray] = field(default_factory=dict)  # column -> [bins, 2]: p50, p95
    rtc_count: dict[str, np.ndarray] = field(default_factory=dict)  # column -> values per bin
    rtc_points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # small runs only
    scatter_t: np.ndarray = field(default_factory=_empty)
    scatter_e2e: np.ndarray = field(default_factory=_empty)
    scatter_total: int = 0  # e2e samples the scatter was drawn from
    fail_t: np.ndarray = field(default_factory=_empty)  # failed utterances (only when <= FAIL_POINTS)
    fail_status: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    callers_t: np.ndarray = field(default_factory=_empty)  # step line: value holds from t until next t
    callers_v: np.ndarray = field(default_factory=_empty)

    @property
    def empty(self) -> bool:
        return self.t.size == 0

    @property
    def end_s(self) -> float:
        """Right edge of the time axis: the last bin's end."""
        return float(self.t[-1] + self.bin_s) if self.t.size else 1.0

    @property
    def per_bin(self) -> float:
        """Typical e2e samples in a bin that has any (median): decides lines vs points."""
        filled = self.e2e_count[self.e2e_count > 0]
        return float(np.median(filled)) if filled.size else 0.0


def choose_bin(duration_s: float, n: int) -> float:
    """A round bin width giving MIN_BINS..MAX_BINS bins, the widest of those when samples are scarce.

    Within that range, the narrowest width whose bins average MIN_PER_BIN samples wins; a short run
    (< MIN_BINS s) gets 1 s bins. Never one bin for the whole run: a 30 s run is 1 s bins, not 60 s.
    """
    lo, hi = max(duration_s / MAX_BINS, 1.0), max(duration_s / MIN_BINS, 1.0)
    in_range = [b for b in NICE_BINS_S if lo <= b <= hi]
    if not in_range:
        return float(next((b for b in NICE_BINS_S if b >= lo), NICE_BINS_S[-1]))
    wanted = duration_s * MIN_PER_BIN / max(n, 1)
    return float(next((b for b in in_range if b >= wanted), in_range[-1]))


def empty_series() -> TimeSeries:
    z = np.empty(0)
    return TimeSeries(1.0, z, z, z, z, np.empty((0, 3)), z, z)


def caller_steps(t_rel: np.ndarray, callers: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Change points of the active-callers count over time (at most ~CALLER_STEPS of them).

    The value per row is what the tester knew at that send time; the line keeps, per each of CALLER_STEPS
    equal time cells, the cell's latest value from its first send on, then only the points where it changes.
    """
    ok = np.isfinite(t_rel) & np.isfinite(callers)
    if not ok.any():
        return np.empty(0), np.empty(0)
    order = np.argsort(t_rel[ok], kind="stable")
    t, v = t_rel[ok][order], callers[ok][order]
    cell = np.floor(t / max(duration / CALLER_STEPS, 1e-9)).astype(np.int64)
    edges = np.flatnonzero(np.diff(cell))
    first, last = np.append(0, edges + 1), np.append(edges, t.size - 1)
    t, v = t[first], v[last]
    change = np.append(True, v[1:] != v[:-1])
    return t[change], v[change]


def _failures(t_rel: np.ndarray, status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    failed = np.isfinite(t_rel) & (status != "ok")
    if not failed.any() or failed.sum() > FAIL_POINTS:
        return np.empty(0), np.empty(0, dtype=object)
    return t_rel[failed], status[failed]


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
    t = np.arange(n_bins) * bin_s
    with np.errstate(invalid="ignore", divide="ignore"):
        # Drawn at the mean send time, not the bin centre: with sparse sends the centre is off the points.
        t_mean = np.bincount(codes[valid], weights=t_rel[valid], minlength=n_bins)[:n_bins] / sent
    t_mean = np.where(sent > 0, t_mean, t + bin_s / 2)
    e2e = frame["e2e_ms"].to_numpy(dtype=np.float64)
    e2e_count, e2e_q = grouped_quantiles(codes, e2e, n_bins, BIN_QS)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.bincount(codes[valid], weights=(status[valid] == "error"), minlength=n_bins)[:n_bins] / sent
        tout = (
            np.bincount(codes[valid], weights=(status[valid] == "timeout"), minlength=n_bins)[:n_bins] / sent
        )
    rtc, rtc_count, rtc_points = {}, {}, {}
    for col in RTC_COLUMNS:
        vals = frame[col].to_numpy(dtype=np.float64)
        has = np.isfinite(vals) & valid
        if has.any():
            rtc_count[col], rtc[col] = grouped_quantiles(codes, vals, n_bins, [0.50, 0.95])
            if len(frame) <= RTC_POINTS:
                rtc_points[col] = (t_rel[has], vals[has])
    # A light random subsample shows the spread behind the percentile lines without drawing 1M points.
    ok_idx = np.flatnonzero(valid & np.isfinite(e2e))
    total = int(ok_idx.size)
    rng = np.random.default_rng(seed)
    if ok_idx.size > SCATTER_POINTS:
        ok_idx = np.sort(rng.choice(ok_idx, SCATTER_POINTS, replace=False))
    fail_t, fail_status = _failures(t_rel, status)
    callers_t, callers_v = caller_steps(t_rel, callers, duration)
    return TimeSeries(
        bin_s=bin_s,
        t=t,
        t_mean=t_mean,
        sent=sent,
        e2e_count=e2e_count.astype(np.float64),
        e2e_q=e2e_q,
        error_rate=err,
        timeout_rate=tout,
        duration_s=duration,
        rtc=rtc,
        rtc_count={k: v.astype(np.float64) for k, v in rtc_count.items()},
        rtc_points=rtc_points,
        scatter_t=t_rel[ok_idx],
        scatter_e2e=e2e[ok_idx],
        scatter_total=total,
        fail_t=fail_t,
        fail_status=fail_status,
        callers_t=callers_t,
        callers_v=callers_v,
    )
