"""Baseline vs candidate: per-stage quantile deltas, bootstrap CIs, a significance test, and the call.

The call is made on the p95 (a tail effect a rank test can miss; Mann-Whitney U is reported beside it).
Significance of the p95 difference (candidate - baseline), one-sided at ALPHA:
* a permutation test (scipy.stats.permutation_test, statistic p95(candidate) - p95(baseline); exact when
  the partitions number at most PERMUTATION_RESAMPLES, else that many random permutations, seeded) at
  any sample size up to PERMUTATION_MAX_TOTAL samples, and whenever a side has fewer than
  BOOTSTRAP_MIN_SIDE (a bootstrap CI of a small sample's p95 is far too narrow);
* above that, the 95 % order-statistic bootstrap CI of the difference lying entirely above zero.
A regression is significant AND worse by more than tolerance_pct AND by more than tolerance_ms. With
fewer than MIN_COMPARE_SAMPLES on a side, a stage that is not a significant change is `inconclusive`:
too few samples to rule a regression out is not a pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, permutation_test

from loadtest.report.aggregate import normalised_status, outcome, stage_values
from loadtest.report.io import load_samples, read_run_failed
from loadtest.report.model import (
    DEFAULT_TARGET_MS,
    DEFAULT_TOLERANCE_MS,
    DEFAULT_TOLERANCE_PCT,
    STAGES,
    Comparison,
    Interval,
    QuantileDelta,
    Rates,
    StageComparison,
)
from loadtest.report.stats import (
    CI_QUANTILES,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_quantile,
    clean_sorted,
    percentile_interval,
)

NAN = float("nan")
MIN_COMPARE_SAMPLES = 20  # per side and stage: below it, "no significant change" is inconclusive
ALPHA = 0.025  # one-sided; the same level as a two-sided 95 % CI excluding zero
PERMUTATION_RESAMPLES = 9999
PERMUTATION_MAX_TOTAL = 2000  # samples of both sides; above it (both sides large) the bootstrap CI decides
BOOTSTRAP_MIN_SIDE = 100  # a smaller side is always tested by permutation
_PERMUTATION_CELLS = 20_000_000  # resamples x samples per stage: bounds the test's time (about 1 s)


class CompareError(RuntimeError):
    """One side of a comparison has no usable samples."""


def compare_stage(
    stage: str,
    baseline: np.ndarray,
    candidate: np.ndarray,
    rng: np.random.Generator,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    resamples: int = DEFAULT_RESAMPLES,
) -> StageComparison:
    b, c = clean_sorted(baseline), clean_sorted(candidate)
    deltas = []
    for name, q in CI_QUANTILES.items():
        if b.size == 0 or c.size == 0:
            deltas.append(QuantileDelta(name, NAN, NAN, NAN, NAN, Interval(NAN, NAN)))
            continue
        qb = float(np.quantile(b, q))
        qc = float(np.quantile(c, q))
        # Independent samples: the difference of independent bootstrap replicates is the bootstrap
        # distribution of the difference.
        diff = bootstrap_quantile(c, q, rng, resamples) - bootstrap_quantile(b, q, rng, resamples)
        pct = (qc - qb) / qb * 100.0 if qb > 0 else NAN
        deltas.append(QuantileDelta(name, qb, qc, qc - qb, pct, percentile_interval(diff)))
    p95 = next(d for d in deltas if d.q == "p95")
    mw_p = NAN
    if b.size and c.size:
        mw_p = float(mannwhitneyu(c, b, alternative="greater").pvalue)
    method, p_slower, p_faster = _significance(b, c, p95, rng)
    enough = min(b.size, c.size) >= MIN_COMPARE_SAMPLES
    slower = p_slower < ALPHA
    beyond = _beyond(p95.delta_pct, tolerance_pct) and p95.delta_ms > tolerance_ms
    better = p_faster < ALPHA and _beyond(-p95.delta_pct, tolerance_pct) and -p95.delta_ms > tolerance_ms
    regression = slower and beyond
    return StageComparison(
        stage=stage,
        baseline_count=int(b.size),
        candidate_count=int(c.size),
        quantiles=tuple(deltas),
        mannwhitney_p=mw_p,
        significant=slower,
        regression=regression,
        improvement=better,
        enough_samples=enough,
        inconclusive=not (regression or better or enough) and bool(b.size + c.size),
        method=method,
        p_value=p_slower if method == "permutation" else NAN,
    )


def _p95_difference(c: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.quantile(c, 0.95, axis=axis) - np.quantile(b, 0.95, axis=axis)


def _significance(
    b: np.ndarray, c: np.ndarray, p95: QuantileDelta, rng: np.random.Generator
) -> tuple[str, float, float]:
    """(method, one-sided p of "candidate slower", of "candidate faster"); the bootstrap gives 0 or 1."""
    if b.size == 0 or c.size == 0:
        return "none", 1.0, 1.0
    total = b.size + c.size
    if total > PERMUTATION_MAX_TOTAL and min(b.size, c.size) >= BOOTSTRAP_MIN_SIDE:
        ci = p95.delta_ci
        return "bootstrap", 0.0 if ci.low > 0 else 1.0, 0.0 if ci.high < 0 else 1.0
    if min(b.size, c.size) == 1:
        return ("permutation", *_singleton_test(b, c))
    resamples = int(min(PERMUTATION_RESAMPLES, max(999, _PERMUTATION_CELLS // total)))
    res = permutation_test(
        (c, b),
        _p95_difference,
        permutation_type="independent",
        vectorized=True,
        n_resamples=resamples,
        alternative="greater",
        batch=max(1, 2_000_000 // total),  # about 16 MB of permuted samples at a time
        rng=rng,
    )
    null = np.asarray(res.null_distribution)
    observed = float(res.statistic)
    exact = null.size < resamples  # every partition was enumerated
    tol = abs(observed) * 1e-12  # scipy's own allowance for rounding in the statistic
    adjust = 0 if exact else 1
    p_faster = (float(np.sum(null <= observed + tol)) + adjust) / (null.size + adjust)
    return "permutation", float(res.pvalue), p_faster


def _singleton_test(b: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Exact permutation p-values when a side has one value (scipy needs two): all n partitions."""
    pooled = np.concatenate([c, b])
    n_c = c.size
    stats = []
    for i in range(pooled.size):  # the lone side is value i: n partitions, each once
        rest = np.delete(pooled, i)
        lone = pooled[i : i + 1]
        cand, base = (lone, rest) if n_c == 1 else (rest, lone)
        stats.append(float(_p95_difference(cand, base)))
    null = np.asarray(stats)
    observed = float(_p95_difference(c, b))
    tol = abs(observed) * 1e-12
    return float(np.mean(null >= observed - tol)), float(np.mean(null <= observed + tol))


def stage_call(st: StageComparison, none: str = "") -> str:
    """The one-word outcome shown in tables and chart titles."""
    if st.regression:
        return "REGRESSION"
    if st.improvement:
        return "improved"
    if st.inconclusive:
        return f"inconclusive (n < {MIN_COMPARE_SAMPLES})"
    return none


def inconclusive_reason(cmp: Comparison) -> str | None:
    """Why a comparison is inconclusive: the stages too small to judge and what they need."""
    few = [f"{s.stage} ({s.baseline_count} vs {s.candidate_count})" for s in cmp.stages if s.inconclusive]
    if not few:
        return None
    return (
        f"too few samples to rule out a regression in {', '.join(few)}: each stage needs "
        f">= {MIN_COMPARE_SAMPLES} samples a side (connect: conversations) unless the change is significant"
    )


def _beyond(pct: float, tolerance_pct: float) -> bool:
    return not math.isnan(pct) and pct > tolerance_pct


def compare_values(
    baseline: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[StageComparison, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        compare_stage(
            s,
            baseline.get(s, np.empty(0)),
            candidate.get(s, np.empty(0)),
            rng,
            tolerance_pct,
            tolerance_ms,
            resamples,
        )
        for s in STAGES
    )


def load_side(run_dir: Path, target_ms: float) -> tuple[dict[str, np.ndarray], Rates]:
    """A run directory's stage samples and outcome rates; CompareError when it has none."""
    failed = read_run_failed(run_dir)
    loaded = load_samples(run_dir)
    if failed is not None or len(loaded.frame) == 0:
        why = failed or "no samples (samples.parquet or journal/*.jsonl)"
        raise CompareError(f"{run_dir}: {why}")
    values = stage_values(loaded.frame)
    status = normalised_status(loaded.frame, [])
    _, rates = outcome(status, values["e2e"], target_ms)
    return values, rates


def compare_runs(
    baseline_dir: Path,
    candidate_dir: Path,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    target_ms: float = DEFAULT_TARGET_MS,
    candidate_values: dict[str, np.ndarray] | None = None,
    candidate_rates: Rates | None = None,
) -> tuple[Comparison, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Compare two run directories (the candidate's samples may be passed in when already loaded)."""
    base_values, base_rates = load_side(baseline_dir, target_ms)
    if candidate_values is None:
        candidate_values, candidate_rates = load_side(candidate_dir, target_ms)
    stages = compare_values(base_values, candidate_values, tolerance_pct, tolerance_ms)
    cmp = Comparison(
        baseline_dir=str(baseline_dir),
        candidate_dir=str(candidate_dir),
        tolerance_pct=tolerance_pct,
        tolerance_ms=tolerance_ms,
        stages=stages,
        baseline_rates=base_rates,
        candidate_rates=candidate_rates,
    )
    return cmp, base_values, candidate_values
