"""Adverse conditions in the report: was the impairment applied as configured, and what did each
condition (impairment profile, SNR) cost in latency and quality.

Verification, per profile and direction, as fractions of the RTP packets (docs/impairment.md):
configured (the profile's long-run loss, from run.json), injected (dropped by the tester's hook over
packets it handled), observed (uplink: lost over expected in the SFU's last receiver report; downlink:
the listener's packetsLost over packets expected). The row counters are cumulative per conversation, so
each conversation counts once, with its latest values; conversations are then summed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from loadtest.conditions import NETWORK_COLUMNS
from loadtest.report.conditions_model import ConditionRow, ConditionsSummary, DirectionCheck, ImpairmentCheck

CONDITION_COLUMNS: tuple[str, ...] = ("impairment", "snr_db", *NETWORK_COLUMNS)
NUMERIC_CONDITION_COLUMNS: tuple[str, ...] = ("snr_db", *NETWORK_COLUMNS)
UNIMPAIRED = "unimpaired"
CLEAN = "clean"


def _f(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _latest(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per conversation, the row where the cumulative column ``by`` is largest (its latest reading)."""
    known = frame[frame[by].notna()]
    if known.empty:
        return known
    idx = known.groupby(["worker", "conversation"], observed=True)[by].idxmax()
    return known.loc[idx.to_numpy()]


def _direction(rows: pd.DataFrame, prefix: str, seen: tuple[str, str],
               configured: dict[str, Any]) -> DirectionCheck:
    hook = _latest(rows, f"net_{prefix}_packets")
    packets = int(hook[f"net_{prefix}_packets"].sum()) if not hook.empty else 0
    dropped = int(hook[f"net_{prefix}_dropped"].fillna(0).sum()) if not hook.empty else 0
    delayed = int(hook[f"net_{prefix}_delayed"].fillna(0).sum()) if not hook.empty else 0
    delivered = hook[f"net_{prefix}_packets"] - hook[f"net_{prefix}_dropped"].fillna(0)
    delay = hook[f"net_{prefix}_delay_ms"]
    weight = delivered[delay.notna()]
    added = float((delay.dropna() * weight).sum() / weight.sum()) if weight.sum() > 0 else None
    lost_col, expected_col = seen
    far = _latest(rows, expected_col)
    expected = int(far[expected_col].sum()) if not far.empty else None
    lost = int(far[lost_col].sum()) if not far.empty else None
    return DirectionCheck(
        configured_loss=_f(configured.get("configured_loss")),
        injected_loss=dropped / packets if packets else None,
        observed_loss=lost / expected if expected else None,
        packets=packets, dropped=dropped, delayed=delayed, observed_expected=expected, observed_lost=lost,
        configured_delay_ms=_f(configured.get("configured_delay_ms")), added_delay_ms=added)


def impairment_checks(frame: pd.DataFrame, run_json: dict[str, Any] | None) -> list[ImpairmentCheck]:
    """Configured vs injected vs observed loss (and delay) per impairment profile of the run."""
    if "impairment" not in frame.columns or frame["impairment"].notna().sum() == 0:
        return []
    described = ((run_json or {}).get("impairment") or {}).get("profiles") or {}
    impaired = frame[frame["impairment"].notna()]
    impaired = impaired.assign(**{c: np.nan for c in NETWORK_COLUMNS if c not in impaired.columns})
    checks = []
    for name, rows in impaired.groupby("impairment", observed=True, sort=True):
        profile = described.get(str(name)) or {}
        checks.append(ImpairmentCheck(
            profile=str(name),
            conversations=int(rows.groupby(["worker", "conversation"], observed=True).ngroups),
            uplink=_direction(rows, "up", ("sfu_up_lost", "sfu_up_expected"), profile.get("uplink") or {}),
            downlink=_direction(rows, "down", ("rx_down_lost", "rx_down_expected"),
                                profile.get("downlink") or {})))
    return checks


def _quantile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else None


def _mean(values: pd.Series) -> float | None:
    finite = pd.to_numeric(values, errors="coerce").dropna()
    return float(finite.mean()) if len(finite) else None


def condition_row(dimension: str, condition: str, rows: pd.DataFrame, target_ms: float) -> ConditionRow:
    status = rows["status"].astype(str).str.lower()
    e2e = rows["e2e_ms"].to_numpy(dtype=np.float64)
    connect = rows.drop_duplicates(["worker", "conversation", "connect_ms"])["connect_ms"]
    sent = len(rows)
    under = int(((status == "ok").to_numpy() & (e2e < target_ms)).sum())
    p95 = _quantile(e2e, 0.95)
    return ConditionRow(
        dimension=dimension, condition=condition, sent=sent, ok=int((status == "ok").sum()),
        timeout=int((status == "timeout").sum()), error=int((status == "error").sum()),
        connect_p50_ms=_quantile(connect.to_numpy(dtype=np.float64), 0.5), e2e_p50_ms=_quantile(e2e, 0.5),
        e2e_p95_ms=p95, e2e_under_target=under / sent if sent else None,
        wer_mean=_mean(rows["wer"]) if "wer" in rows else None,
        chrf_mean=_mean(rows["chrf"]) if "chrf" in rows else None,
        verdict="no-data" if p95 is None else "pass" if p95 < target_ms else "fail")


def snr_label(value: float | None) -> str:
    return CLEAN if value is None or not math.isfinite(value) else f"{value:g} dB"


def condition_rows(frame: pd.DataFrame, target_ms: float) -> tuple[list[ConditionRow], list[ConditionRow]]:
    """Rows per impairment profile (when any caller was impaired) and per SNR (when any speech was noisy),
    the run's spoken utterances only (a seq-0 connect-failure row names no condition of its own)."""
    by_impairment: list[ConditionRow] = []
    by_snr: list[ConditionRow] = []
    if "impairment" in frame.columns and frame["impairment"].notna().any():
        names = frame["impairment"].astype("object").where(frame["impairment"].notna(), UNIMPAIRED)
        for name in sorted(set(names)):
            by_impairment.append(condition_row("impairment", str(name), frame[names == name], target_ms))
    if "snr_db" in frame.columns and frame["snr_db"].notna().any():
        snr = frame["snr_db"].to_numpy(dtype=np.float64)
        # Clean first, then from the highest SNR (least noise) down.
        for value in sorted({float(v) for v in snr if math.isfinite(v)}, reverse=True):
            by_snr.append(condition_row("snr_db", snr_label(value), frame[snr == value], target_ms))
        clean = ~np.isfinite(snr)
        if clean.any():
            by_snr.insert(0, condition_row("snr_db", CLEAN, frame[clean], target_ms))
    return by_impairment, by_snr


def summarise_conditions(frame: pd.DataFrame, run_json: dict[str, Any] | None,
                         target_ms: float) -> ConditionsSummary:
    by_impairment, by_snr = condition_rows(frame, target_ms)
    return ConditionsSummary(impairment_checks(frame, run_json), by_impairment, by_snr)
