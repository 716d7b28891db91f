"""Typed records of the report's adverse-conditions section (no pandas: model.py imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DirectionCheck:
    configured_loss: float | None
    injected_loss: float | None
    observed_loss: float | None
    packets: int  # RTP packets the tester's link handled
    dropped: int
    delayed: int
    observed_expected: int | None  # packets the far end expected (None: it never reported)
    observed_lost: int | None
    configured_delay_ms: float | None
    added_delay_ms: float | None  # mean delay the link added to delivered RTP packets


@dataclass(frozen=True)
class ImpairmentCheck:
    profile: str
    conversations: int
    uplink: DirectionCheck
    downlink: DirectionCheck


@dataclass(frozen=True)
class ConditionRow:
    """One condition's outcomes, latency and quality; the verdict is the e2e target's (p95 < target)."""

    dimension: str  # "impairment" | "snr_db"
    condition: str  # a profile name, "unimpaired"; "20 dB", "clean"
    sent: int
    ok: int
    timeout: int
    error: int
    connect_p50_ms: float | None
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    e2e_under_target: float | None
    wer_mean: float | None
    chrf_mean: float | None
    verdict: str  # "pass" | "fail" | "no-data"


@dataclass
class ConditionsSummary:
    impairment: list[ImpairmentCheck] = field(default_factory=list)
    by_impairment: list[ConditionRow] = field(default_factory=list)
    by_snr: list[ConditionRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.impairment or self.by_impairment or self.by_snr)


def _direction_json(d: DirectionCheck) -> dict[str, Any]:
    return {k: getattr(d, k) for k in DirectionCheck.__dataclass_fields__}


def impairment_json(summary: ConditionsSummary) -> dict[str, Any] | None:
    """summary.json's ``impairment``: the run's profile with configured/injected/observed loss per
    direction (``profile`` "mixed" and no top-level directions when callers had different profiles),
    and every profile under ``profiles``."""
    if not summary.impairment:
        return None
    profiles = [{"profile": c.profile, "conversations": c.conversations,
                 "uplink": _direction_json(c.uplink), "downlink": _direction_json(c.downlink)}
                for c in summary.impairment]
    if len(profiles) == 1:
        return {**profiles[0], "profiles": profiles}
    return {"profile": "mixed", "uplink": None, "downlink": None, "profiles": profiles}


def conditions_json(summary: ConditionsSummary) -> dict[str, Any]:
    def rows(items: list[ConditionRow]) -> list[dict[str, Any]]:
        return [{k: getattr(r, k) for k in ConditionRow.__dataclass_fields__ if k != "dimension"}
                for r in items]

    return {"impairment": rows(summary.by_impairment), "snr_db": rows(summary.by_snr)}
