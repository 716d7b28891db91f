"""Where a conversation's peers sat: same gateway replica or across replicas, and what that cost.

Rows carry `speaker_node` and `listener_node` when the gateway names its replica in the join answer (a
profile's optional `node` response field). Conversations split across replicas depend on what crosses
between them (events through Redis, media through pipe transports): their outcomes and latencies are
reported apart from same-node ones, so a broken crossing (the standalone trap) shows as one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loadtest.report.model import PlacementGroup


def _quantile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else None


def placement_groups(frame: pd.DataFrame) -> list[PlacementGroup]:
    """Same-node and cross-node groups; empty when no row names both peers' replicas."""
    if "speaker_node" not in frame.columns or "listener_node" not in frame.columns:
        return []
    speaker, listener = frame["speaker_node"], frame["listener_node"]
    known = speaker.notna() & listener.notna()
    if not known.any():
        return []
    groups = []
    same = known & (speaker == listener)
    for name, mask in (("same-node", same), ("cross-node", known & ~same)):
        rows = frame[mask]
        if rows.empty:
            continue
        status = rows["status"].astype(str)
        stage = "sfu" if "sfu_ms" in rows and rows["sfu_ms"].notna().any() else "e2e"
        values = pd.to_numeric(rows[f"{stage}_ms"], errors="coerce").to_numpy(dtype=np.float64)
        stalled = rows.loc[status != "ok", "status_stage"].dropna().astype(str)
        groups.append(PlacementGroup(
            placement=name, sent=len(rows), ok=int((status == "ok").sum()),
            timeout=int((status == "timeout").sum()), error=int((status == "error").sum()), stage=stage,
            p50_ms=_quantile(values, 0.50), p95_ms=_quantile(values, 0.95),
            top_failed_stage=stalled.value_counts().index[0] if not stalled.empty else None))
    return groups


def placement_line(groups: list[PlacementGroup]) -> str | None:
    """One sentence when cross-node conversations fail where same-node ones do not (the standalone trap)."""
    by = {g.placement: g for g in groups}
    same, cross = by.get("same-node"), by.get("cross-node")
    if cross is None or cross.sent == 0:
        return None
    cross_bad = (cross.timeout + cross.error) / cross.sent
    same_bad = (same.timeout + same.error) / same.sent if same is not None and same.sent else 0.0
    if cross_bad > 0.5 and same_bad < 0.1:  # most cross-node ones fail, (almost) no same-node one
        where = f" (at {cross.top_failed_stage})" if cross.top_failed_stage else ""
        same_said = "while same-node ones passed" if same is not None else "(no same-node conversation ran)"
        failed = cross.timeout + cross.error
        return (f"{failed} of {cross.sent} cross-node utterances failed{where} {same_said}: "
                "what crosses between gateway replicas (Redis, pipe transports) is broken")
    return None
