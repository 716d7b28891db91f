"""Baseline vs candidate: per-stage quantile deltas, bootstrap CIs, a rank test, and the regression call.

The decisive test is the bootstrap CI of the p95 difference (candidate - baseline): a p95 regression is a
tail effect a rank test can miss. Mann-Whitney U (one-sided, candidate slower) is reported beside it as a
whole-distribution check. A regression needs all three: the 95 % CI of the p95 difference entirely above
zero, the p95 worse by more than tolerance_pct, and worse by more than tolerance_ms -- and at least
MIN_COMPARE_SAMPLES on each side: below that a p95 is the sample maximum and its bootstrap CI is too
narrow (with one value per side it is a single point), so a short run would "regress" by chance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

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
MIN_COMPARE_SAMPLES = 20  # per side and stage, to call a regression (or an improvement) at all


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
    enough = min(b.size, c.size) >= MIN_COMPARE_SAMPLES
    significant = enough and bool(p95.delta_ci.low > 0)
    beyond = _beyond(p95.delta_pct, tolerance_pct) and p95.delta_ms > tolerance_ms
    better = (
        enough
        and bool(p95.delta_ci.high < 0)
        and _beyond(-p95.delta_pct, tolerance_pct)
        and -p95.delta_ms > tolerance_ms
    )
    return StageComparison(
        stage=stage,
        baseline_count=int(b.size),
        candidate_count=int(c.size),
        quantiles=tuple(deltas),
        mannwhitney_p=mw_p,
        significant=significant,
        regression=significant and beyond,
        improvement=better,
        enough_samples=enough,
    )


def stage_call(st: StageComparison, none: str = "") -> str:
    """The one-word outcome shown in tables and chart titles."""
    if st.regression:
        return "REGRESSION"
    if st.improvement:
        return "improved"
    if not st.enough_samples and st.baseline_count and st.candidate_count:
        return f"too few samples (< {MIN_COMPARE_SAMPLES})"
    return none


def few_samples_warning(cmp: Comparison) -> str | None:
    """A warning naming the stages a comparison could not judge for lack of samples."""
    few = [
        f"{st.stage} ({st.baseline_count} vs {st.candidate_count})"
        for st in cmp.stages
        if not st.enough_samples and st.baseline_count and st.candidate_count
    ]
    if not few:
        return None
    return (
        f"too few samples to call a regression (< {MIN_COMPARE_SAMPLES} per side): {', '.join(few)}; "
        "run longer or with more callers for the nightly comparison to mean anything"
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
