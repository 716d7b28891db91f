"""The smallest records of a report: a distribution's figures and an outcome count (no imports of ours).

They live apart from model.py so that the records built on them (scenarios_model.py) and RunSummary,
which holds those, import in one direction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A confidence interval; NaN bounds when there was nothing to resample."""

    low: float
    high: float


@dataclass(frozen=True)
class StageStats:
    """Exact distribution figures of one latency column (ms), over the rows where it was measured."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    p50_ci: Interval
    p95_ci: Interval
    p99_ci: Interval

    def stat(self, name: str) -> float:
        """Look a statistic up by its threshold name (`p95`, `mean`, `count`, ...)."""
        if name not in STAT_NAMES:
            raise KeyError(name)
        return float(getattr(self, name))


STAT_NAMES: tuple[str, ...] = ("count", "mean", "min", "p50", "p90", "p95", "p99", "max")


@dataclass(frozen=True)
class UtteranceCounts:
    sent: int
    ok: int
    timeout: int
    error: int


@dataclass(frozen=True)
class Rates:
    """Outcome rates over all sent utterances (NaN when nothing was sent)."""

    error_rate: float
    timeout_rate: float
    e2e_under_target: float
    e2e_under_target_count: int
