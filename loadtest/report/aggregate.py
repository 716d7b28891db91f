"""Per-stage figures from raw samples: exact percentiles, bootstrap CIs, outcome rates, caller levels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from loadtest.report.frame import LoadedSamples
from loadtest.report.model import (
    EXTRA_METRICS,
    OPTIONAL_METRICS,
    STAGES,
    Interval,
    LevelSummary,
    NamedCount,
    Rates,
    RunMetadata,
    RunSummary,
    StageStats,
    UtteranceCounts,
)
from loadtest.report.placement import placement_groups, placement_line
from loadtest.report.stats import (
    CI_QUANTILES,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    QUANTILES,
    bootstrap_quantile,
    clean_sorted,
    percentile_interval,
)

STATUSES = ("ok", "timeout", "error")
MAX_LEVELS = 24  # more distinct caller counts than this (a ramp, not steps) get rounded into ~20 levels
MIN_LEVEL_SAMPLES = 20  # a caller level needs this many utterances to be a level (a step), not a transient
LEVEL_MIN_SHARE = 0.01  # ... and at least this share of the run's utterances
LATENESS_WARN_MS = 50.0
NAN = float("nan")


def stage_stats(
    values: np.ndarray, rng: np.random.Generator, resamples: int = DEFAULT_RESAMPLES
) -> StageStats:
    """Exact figures of one column (np.quantile, method="linear") with percentile-bootstrap CIs."""
    x = clean_sorted(values)
    if x.size == 0:
        empty = Interval(NAN, NAN)
        return StageStats(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, empty, empty, empty)
    qs = np.quantile(x, list(QUANTILES.values()), method="linear")
    q = dict(zip(QUANTILES, (float(v) for v in qs), strict=True))
    cis = {
        name: percentile_interval(bootstrap_quantile(x, p, rng, resamples))
        for name, p in CI_QUANTILES.items()
    }
    return StageStats(
        count=int(x.size),
        mean=float(x.mean()),
        min=float(x[0]),
        p50=q["p50"],
        p90=q["p90"],
        p95=q["p95"],
        p99=q["p99"],
        max=float(x[-1]),
        p50_ci=cis["p50"],
        p95_ci=cis["p95"],
        p99_ci=cis["p99"],
    )


def normalised_status(frame: pd.DataFrame, warnings: list[str]) -> np.ndarray:
    """Status per row as one of ok/timeout/error (object array)."""
    if frame["status"].isna().all() and len(frame):
        # No status column: infer from e2e, so a hand-made sample file still reports something sensible.
        warnings.append("no status column: rows with an e2e latency count as ok, the rest as timeout")
        return np.where(frame["e2e_ms"].notna().to_numpy(), "ok", "timeout").astype(object)
    status = frame["status"].astype("string").str.strip().str.lower().fillna("error").to_numpy(dtype=object)
    unknown = ~np.isin(status, STATUSES)
    if unknown.any():
        names = sorted({str(s) for s in status[unknown]})[:5]
        warnings.append(f"{int(unknown.sum())} row(s) with unknown status {names} counted as error")
        status = np.where(unknown, "error", status)
    return status


def outcome(status: np.ndarray, e2e: np.ndarray, target_ms: float) -> tuple[UtteranceCounts, Rates]:
    """Counts and rates; every rate's denominator is all sent utterances (timeouts are not under target)."""
    sent = int(status.size)
    ok_mask = status == "ok"
    counts = UtteranceCounts(
        sent=sent,
        ok=int(ok_mask.sum()),
        timeout=int((status == "timeout").sum()),
        error=int((status == "error").sum()),
    )
    with np.errstate(invalid="ignore"):
        under = int((ok_mask & (e2e < target_ms)).sum())
    if sent == 0:
        return counts, Rates(NAN, NAN, NAN, 0)
    return counts, Rates(counts.error / sent, counts.timeout / sent, under / sent, under)


def connect_values(frame: pd.DataFrame) -> np.ndarray:
    """connect_ms once per conversation: it repeats on every utterance and would weight long talks more."""
    sub = frame.loc[frame["connect_ms"].notna(), ["worker", "conversation", "connect_ms"]]
    if sub["conversation"].notna().any():
        sub = sub.drop_duplicates()
    return sub["connect_ms"].to_numpy(dtype=np.float64)


def stage_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row-aligned latency columns (connect still repeated per utterance)."""
    return {s: frame[f"{s}_ms"].to_numpy(dtype=np.float64) for s in STAGES}


def stage_values(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The samples each stage's distribution is made of (connect once per conversation)."""
    values = stage_arrays(frame)
    values["connect"] = connect_values(frame)
    return values


def active_callers(frame: pd.DataFrame) -> np.ndarray:
    """Active callers at each row's send time, summed over tester processes.

    `active_users` counts one process's swarm; with --processes or master/worker mode the load is the
    sum. Per 1 s bin each worker contributes its latest value, carried forward only between its first and
    last row (a finished worker no longer counts).
    """
    au = frame["active_users"].to_numpy(dtype=np.float64)
    workers = frame["worker"]
    if not np.isfinite(au).any() or workers.nunique(dropna=True) <= 1 or frame["wall_start"].isna().all():
        return au
    t = frame["wall_start"].to_numpy(dtype=np.float64)
    t0 = np.nanmin(t)
    bins = np.floor(t - t0)
    tmp = pd.DataFrame({"bin": bins, "worker": workers, "au": au}).dropna()
    per = tmp.groupby(["bin", "worker"], observed=True)["au"].max().unstack("worker")
    per = per.reindex(np.arange(per.index.min(), per.index.max() + 1))
    total = per.ffill(limit_area="inside").fillna(0.0).sum(axis=1)
    out = au.copy()
    valid = np.isfinite(bins)
    out[valid] = total.reindex(bins[valid]).to_numpy()
    return out


def caller_levels(callers: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer level per row (NaN unknown) and the rounding step applied (1 = exact levels)."""
    finite = callers[np.isfinite(callers)]
    if finite.size == 0:
        return np.full(callers.shape, np.nan), 1
    rounded = np.round(callers)
    distinct = np.unique(rounded[np.isfinite(rounded)])
    if distinct.size <= MAX_LEVELS:
        return rounded, 1
    step = int(np.ceil((distinct[-1] - distinct[0]) / 20.0)) or 1
    return np.round(callers / step) * step, step


def level_summaries(
    frame: pd.DataFrame,
    status: np.ndarray,
    levels: np.ndarray,
    target_ms: float,
    rng: np.random.Generator,
    resamples: int,
) -> list[LevelSummary]:
    finite = np.isfinite(levels)
    distinct, sizes = np.unique(levels[finite], return_counts=True)
    # Levels held for a while only: the counts seen for a moment while ramping between steps are noise.
    held = distinct[sizes >= max(MIN_LEVEL_SAMPLES, LEVEL_MIN_SHARE * status.size)]
    if held.size <= 1:
        return []
    arrays = stage_arrays(frame)
    out: list[LevelSummary] = []
    for level in held:
        mask = levels == level
        counts, rates = outcome(status[mask], arrays["e2e"][mask], target_ms)
        stages = {}
        for s in STAGES:
            vals = connect_values(frame.loc[mask]) if s == "connect" else arrays[s][mask]
            stages[s] = stage_stats(vals, rng, resamples)
        out.append(LevelSummary(int(level), counts, rates, stages))
    return out


def capacity(levels: list[LevelSummary], target_ms: float, max_failure_rate: float = 0.01) -> int | None:
    """Highest caller level up to which every held level keeps e2e p95 under target, failures ≤ 1 %.

    A level with no e2e sample at all (everything timed out) has a NaN p95 and ends the climb.
    """
    best = None
    for lvl in levels:
        failures = lvl.rates.error_rate + lvl.rates.timeout_rate
        if not (lvl.stages["e2e"].p95 < target_ms and failures <= max_failure_rate):
            break
        best = lvl.callers
    return best


def _named_counts(values: pd.Series, limit: int | None = None) -> list[NamedCount]:
    vc = values.astype("string").fillna("unknown").str.slice(0, 200).value_counts()
    items = [NamedCount(str(k), int(v)) for k, v in vc.items()]
    return items[:limit] if limit else items


@dataclass(frozen=True)
class Aggregated:
    """A run's summary plus the row-level arrays the charts and the comparison reuse."""

    summary: RunSummary
    status: np.ndarray  # ok / timeout / error per row
    callers: np.ndarray  # active callers per row (summed over processes)
    values: dict[str, np.ndarray]  # per-stage samples (connect once per conversation)


def summarise(
    loaded: LoadedSamples,
    target_ms: float,
    metadata: RunMetadata,
    run_failed: str | None,
    partial: bool,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Aggregated:
    """The run's figures; thresholds, comparison and verdict are the caller's to fill in."""
    frame = loaded.frame
    warnings = list(loaded.notes)
    rng = np.random.default_rng(seed)
    status = normalised_status(frame, warnings)
    values = stage_values(frame)
    counts, rates = outcome(status, values["e2e"], target_ms)
    stages = {s: stage_stats(values[s], rng, resamples) for s in STAGES}
    metrics = {}
    for col in (*EXTRA_METRICS, *(c for c in OPTIONAL_METRICS if c in frame.columns)):
        st = stage_stats(frame[col].to_numpy(dtype=np.float64), rng, resamples)
        if st.count:
            metrics[col] = st
    callers = active_callers(frame)
    levels_arr, step = caller_levels(callers)
    levels = level_summaries(frame, status, levels_arr, target_ms, rng, resamples)
    if step > 1:
        warnings.append(f"{MAX_LEVELS}+ distinct caller counts: levels rounded to multiples of {step}")
    lateness = metrics.get("send_lateness_p99_ms")
    if lateness is not None and lateness.p99 > LATENESS_WARN_MS:
        warnings.append(
            f"the tester fell behind its send plan (p99 send lateness {lateness.p99:.0f} ms > "
            f"{LATENESS_WARN_MS:.0f} ms): the tester was overloaded and its latencies include its own delay"
        )
    sfu_only = np.isfinite(frame["sfu_ms"].to_numpy(dtype=np.float64))  # plain-SFU rows have no e2e
    ok_without_e2e = int(((status == "ok") & ~np.isfinite(values["e2e"]) & ~sfu_only).sum())
    if ok_without_e2e:
        warnings.append(f"{ok_without_e2e} ok row(s) have no e2e_ms (not counted under target)")
    stage_col = frame["status_stage"]
    placement = placement_groups(frame)
    trap = placement_line(placement)
    if trap:
        warnings.append(trap)
    summary = RunSummary(
        target_ms=target_ms,
        partial=partial or loaded.partial,
        source=loaded.source,
        counts=counts,
        rates=rates,
        stages=stages,
        metrics=metrics,
        levels=levels,
        capacity_callers=capacity(levels, target_ms) if levels else None,
        timeouts_by_stage=_named_counts(stage_col[status == "timeout"]),
        errors_by_stage=_named_counts(stage_col[status == "error"]),
        top_errors=_named_counts(frame["error"][status == "error"], limit=5),
        thresholds=[],
        metadata=metadata,
        warnings=warnings,
        run_failed=run_failed,
        bootstrap_resamples=resamples,
        bootstrap_seed=seed,
        placement=placement,
        reconnects=reconnect_count(frame),
    )
    return Aggregated(summary, status, callers, values)


def reconnect_count(frame: pd.DataFrame) -> int:
    """Successful reconnects over the run: per caller (worker, user), the most its rows record."""
    if "reconnects" not in frame.columns or "user" not in frame.columns or frame.empty:
        return 0
    per_caller = frame.groupby(["worker", "user"], observed=True, dropna=True)["reconnects"].max()
    return int(per_caller.fillna(0).sum())
