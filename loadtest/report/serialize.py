"""The JSON edge: dataclasses -> summary.json / compare.json documents (schema in docs/report-schema.md)."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from loadtest.report.compare import inconclusive_reason
from loadtest.report.conditions_model import conditions_json, impairment_json
from loadtest.report.model import (
    SCHEMA_VERSION,
    Comparison,
    Interval,
    NamedCount,
    Rates,
    RunMetadata,
    RunSummary,
    StageComparison,
    StageStats,
    ThresholdVerdict,
)
from loadtest.report.scenarios_model import GroupBy, ListeningSummary, MonologueSummary, SegmentationRow
from loadtest.report.stats import CONFIDENCE


def num(x: float | int | None) -> float | int | None:
    """JSON has no NaN: a figure that could not be computed is null."""
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def interval(i: Interval) -> list[float | int | None]:
    return [num(i.low), num(i.high)]


def stage_stats(s: StageStats) -> dict[str, Any]:
    return {
        "count": s.count,
        "mean": num(s.mean),
        "min": num(s.min),
        "p50": num(s.p50),
        "p90": num(s.p90),
        "p95": num(s.p95),
        "p99": num(s.p99),
        "max": num(s.max),
        "p50_ci": interval(s.p50_ci),
        "p95_ci": interval(s.p95_ci),
        "p99_ci": interval(s.p99_ci),
    }


def rates(r: Rates) -> dict[str, Any]:
    return {
        "error_rate": num(r.error_rate),
        "timeout_rate": num(r.timeout_rate),
        "e2e_under_target": num(r.e2e_under_target),
        "e2e_under_target_count": r.e2e_under_target_count,
    }


def named_counts(items: list[NamedCount]) -> dict[str, int]:
    return {i.name: i.count for i in items}


def verdict(v: ThresholdVerdict) -> dict[str, Any]:
    return {
        "expression": v.threshold.expression,
        "metric": v.threshold.metric,
        "op": v.threshold.op,
        "limit": v.threshold.limit,
        "observed": num(v.observed),
        "verdict": v.verdict,
    }


def metadata(m: RunMetadata) -> dict[str, Any]:
    return dataclasses.asdict(m)


def metadata_from_json(data: Any) -> RunMetadata:
    """Tolerant inverse of metadata(): unknown keys are ignored, wrong shapes give an empty record."""
    if not isinstance(data, dict):
        return RunMetadata()
    known = {f.name for f in dataclasses.fields(RunMetadata)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if not isinstance(kwargs.get("extra", {}), dict):
        kwargs.pop("extra")
    return RunMetadata(**kwargs)


def stage_comparison(s: StageComparison) -> dict[str, Any]:
    return {
        "baseline_count": s.baseline_count,
        "candidate_count": s.candidate_count,
        "quantiles": {
            q.q: {
                "baseline": num(q.baseline),
                "candidate": num(q.candidate),
                "delta_ms": num(q.delta_ms),
                "delta_pct": num(q.delta_pct),
                "delta_ci": interval(q.delta_ci),
            }
            for q in s.quantiles
        },
        "mannwhitney_p": num(s.mannwhitney_p),
        "significant": s.significant,
        "regression": s.regression,
        "improvement": s.improvement,
        "enough_samples": s.enough_samples,
        "inconclusive": s.inconclusive,
        "method": s.method,
        "p_value": num(s.p_value),
    }


def comparison(c: Comparison) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "baseline_dir": c.baseline_dir,
        "candidate_dir": c.candidate_dir,
        "tolerance_pct": c.tolerance_pct,
        "tolerance_ms": c.tolerance_ms,
        "regression": bool(c.regressions),
        "regressions": c.regressions,
        "verdict": c.verdict,
        "inconclusive": c.inconclusive,
        "inconclusive_reason": inconclusive_reason(c),
        "stages": {s.stage: stage_comparison(s) for s in c.stages},
        "baseline_rates": rates(c.baseline_rates) if c.baseline_rates else None,
        "candidate_rates": rates(c.candidate_rates) if c.candidate_rates else None,
    }


def summary(s: RunSummary, run_dir: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": run_dir,
        "verdict": s.verdict,
        "exit_code": s.exit_code,
        "budget_verdict": s.budget_verdict if not s.run_failed else None,
        "regression_verdict": s.regression_verdict,
        "partial": s.partial,
        "run_failed": {"error": s.run_failed} if s.run_failed else None,
        "source": s.source,
        "target_ms": int(s.target_ms) if float(s.target_ms).is_integer() else s.target_ms,
        "utterances": dataclasses.asdict(s.counts),
        "reconnects": s.reconnects,
        "error_rate": num(s.rates.error_rate),
        "timeout_rate": num(s.rates.timeout_rate),
        "e2e_under_target": num(s.rates.e2e_under_target),
        "e2e_under_target_count": s.rates.e2e_under_target_count,
        "stages": {name: stage_stats(st) for name, st in s.stages.items()},
        "metrics": {name: stage_stats(st) for name, st in s.metrics.items()},
        "timeouts_by_stage": named_counts(s.timeouts_by_stage),
        "errors_by_stage": named_counts(s.errors_by_stage),
        "top_errors": [{"error": e.name, "count": e.count} for e in s.top_errors],
        "levels": [
            {
                "callers": lv.callers,
                "utterances": dataclasses.asdict(lv.counts),
                **rates(lv.rates),
                "stages": {name: stage_stats(st) for name, st in lv.stages.items()},
            }
            for lv in s.levels
        ],
        "capacity_callers": s.capacity_callers,
        "placement": [dataclasses.asdict(g) for g in s.placement],
        "impairment": impairment_json(s.conditions),  # docs/impairment.md: configured/injected/observed
        "conditions": conditions_json(s.conditions),  # per impairment profile and per SNR
        "proxy": s.proxy,  # Traefik's counters over the run beside the tester's (report/proxy.py)
        **sections(s),  # "by", "listening", "scenarios": only when present (older runs: unchanged)
        "thresholds": [verdict(v) for v in s.thresholds],
        "comparison": comparison(s.comparison) if s.comparison else None,
        "warnings": s.warnings,
        "metadata": metadata(s.metadata),
        "method": {
            "percentiles": "exact, numpy method='linear' (type 7) over rows where the stage was measured",
            "bootstrap": "percentile bootstrap via order statistics (exact in distribution)",
            "bootstrap_resamples": s.bootstrap_resamples,
            "bootstrap_seed": s.bootstrap_seed,
            "confidence": CONFIDENCE,
        },
    }


def _flat(record: object) -> dict[str, Any]:
    """A record of plain fields (text, counts, figures) as JSON: NaN becomes null."""
    return {f.name: num(v) if isinstance(v := getattr(record, f.name), float) else v
            for f in dataclasses.fields(record)}  # type: ignore[arg-type]


def group_by(g: GroupBy) -> dict[str, Any]:
    """Groups keyed by their values (joined with " / " when grouped by several columns)."""
    return {
        "columns": list(g.columns),
        "groups": {
            gr.key: {
                "values": dict(gr.values),
                "utterances": dataclasses.asdict(gr.counts),
                **rates(gr.rates),
                "stages": {name: stage_stats(st) for name, st in gr.stages.items()},
            }
            for gr in g.groups
        },
    }


def listening(x: ListeningSummary) -> dict[str, Any]:
    out = _flat(x)
    out["start_offset"] = stage_stats(x.start_offset)
    out["end_offset"] = stage_stats(x.end_offset)
    return out


def _segmentation(r: SegmentationRow) -> dict[str, Any]:
    return {**_flat(r), "total": r.total}


def monologue(m: MonologueSummary) -> dict[str, Any]:
    return {"fixtures": [_segmentation(r) for r in m.fixtures], "total": _segmentation(m.total),
            "sentence": m.sentence}


def sections(s: RunSummary) -> dict[str, Any]:
    """summary.json's per-group and per-scenario sections; none of the keys when the run has none."""
    out: dict[str, Any] = {}
    if s.by is not None:
        out["by"] = group_by(s.by)
    sc = s.scenarios
    if sc.listening is not None:
        out["listening"] = listening(sc.listening)
    parts: dict[str, Any] = {}
    if sc.two_way is not None:
        parts["two_way"] = group_by(sc.two_way)
    if sc.group is not None:
        parts["group"] = {**_flat(sc.group), "listeners": [_flat(r) for r in sc.group.listeners]}
    if sc.barge_in is not None:
        parts["barge_in"] = _flat(sc.barge_in)
    if sc.monologue is not None:
        parts["monologue"] = monologue(sc.monologue)
    if parts:
        out["scenarios"] = parts
    return out
