"""Budgets as k6-style threshold expressions: `e2e.p95 < 1500`, `error_rate < 0.01`, ...

Grammar (whitespace free between tokens):

    threshold := metric op number [unit]
    metric    := series "." stat | "error_rate" | "timeout_rate" | "e2e_under_target"
    series    := connect | stt | translation | tts | e2e | jitter | rtt | packets_lost | send_lateness_p99
                 | tts_audio | wer | chrf            (a trailing "_ms" is accepted: jitter_ms.p95)
    stat      := count | mean | avg | min | p50 | med | median | p90 | p95 | p99 | max | p(NN)
    op        := "<" | "<=" | ">" | ">=" | "=="
    unit      := "ms" (latency stats only) | "%" (rates only: 1% == 0.01)
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable

from loadtest.report.model import (
    EXTRA_METRICS,
    OPTIONAL_METRICS,
    STAGES,
    STAT_NAMES,
    RunSummary,
    Threshold,
    ThresholdVerdict,
)

RATE_METRICS = ("error_rate", "timeout_rate", "e2e_under_target")
STAT_ALIASES = {"avg": "mean", "med": "p50", "median": "p50"}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
# The production budget (per-stage p95 ceilings); the e2e line follows the run's target.
PRODUCTION_BUDGET = ("stt.p95 < 500", "translation.p95 < 150", "tts.p95 < 800")
# A plain SFU (profile mode "sfu") has no pipeline: the budget's DTLS/SRTP + network part, and no losses.
SFU_BUDGET = ("sfu.p95 < 100", "timeout_rate < 1%", "error_rate < 1%")

_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_()]+)?)\s*"
    r"(?P<op><=|>=|==|<|>)\s*"
    r"(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
    r"(?P<unit>ms|%)?\s*$"
)


class ThresholdError(ValueError):
    """A threshold expression that does not parse; the message quotes it."""


def default_thresholds(target_ms: float) -> list[str]:
    return [*PRODUCTION_BUDGET, f"e2e.p95 < {_fmt_number(target_ms)}"]


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _series_names() -> dict[str, str]:
    """Accepted series name -> key in RunSummary.stages / RunSummary.metrics."""
    names = {s: s for s in STAGES}
    for col in (*EXTRA_METRICS, *OPTIONAL_METRICS):
        names[col] = col
        names[col.removesuffix("_ms")] = col
    return names


SERIES = _series_names()


def _stat_name(raw: str, expression: str) -> str:
    low = raw.lower()
    m = re.fullmatch(r"p\((\d+(?:\.\d+)?)\)", low)
    if m:
        low = "p" + m.group(1).removesuffix(".0")
    low = STAT_ALIASES.get(low, low)
    if low not in STAT_NAMES:
        raise ThresholdError(
            f"threshold {expression!r}: unknown statistic {raw!r} (use one of {', '.join(STAT_NAMES)})"
        )
    return low


def parse_threshold(expression: str) -> Threshold:
    m = _EXPR.match(expression)
    if not m:
        raise ThresholdError(
            f"threshold {expression!r} does not parse: expected METRIC OP NUMBER such as 'e2e.p95 < 1500' "
            f"or 'error_rate < 0.01' (ops: {' '.join(OPS)})"
        )
    metric, op, unit = m.group("metric"), m.group("op"), m.group("unit")
    limit = float(m.group("num"))
    if "." in metric:
        series, stat = metric.split(".", 1)
        if series not in SERIES:
            raise ThresholdError(
                f"threshold {expression!r}: unknown series {series!r} (use one of {', '.join(SERIES)})"
            )
        metric = f"{SERIES[series]}.{_stat_name(stat, expression)}"
        if unit == "%":
            raise ThresholdError(f"threshold {expression!r}: '%' applies to rates, latencies are in ms")
    else:
        if metric not in RATE_METRICS:
            raise ThresholdError(
                f"threshold {expression!r}: unknown metric {metric!r} "
                f"(use SERIES.STAT such as e2e.p95, or one of {', '.join(RATE_METRICS)})"
            )
        if unit == "ms":
            raise ThresholdError(f"threshold {expression!r}: {metric} is a fraction, not milliseconds")
        if unit == "%":
            limit /= 100.0
    return Threshold(expression=expression.strip(), metric=metric, op=op, limit=limit)


def parse_thresholds(expressions: Iterable[str]) -> list[Threshold]:
    return [parse_threshold(e) for e in expressions]


def observe(summary: RunSummary, metric: str) -> float:
    """The summary's value for a parsed metric name; NaN when the run has no data for it."""
    if metric == "error_rate":
        return summary.rates.error_rate
    if metric == "timeout_rate":
        return summary.rates.timeout_rate
    if metric == "e2e_under_target":
        return summary.rates.e2e_under_target
    series, stat = metric.split(".", 1)
    stats = summary.stages.get(series) or summary.metrics.get(series)
    if stats is None:
        return 0.0 if stat == "count" else math.nan
    return stats.stat(stat)


def evaluate(summary: RunSummary, thresholds: Iterable[Threshold]) -> list[ThresholdVerdict]:
    """pass / fail / no-data per threshold. no-data: the metric could not be computed (nothing measured)."""
    verdicts = []
    for th in thresholds:
        observed = observe(summary, th.metric)
        if math.isnan(observed):
            verdicts.append(ThresholdVerdict(th, observed, "no-data"))
            continue
        ok = OPS[th.op](observed, th.limit)
        verdicts.append(ThresholdVerdict(th, observed, "pass" if ok else "fail"))
    return verdicts
