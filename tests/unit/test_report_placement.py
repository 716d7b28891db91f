"""Same-node vs cross-node conversations in the report (gateway replicas), computed from raw rows."""

from __future__ import annotations

import pandas as pd
import pytest

from loadtest.profile import MissingField, RequestSpec
from loadtest.report.placement import placement_groups, placement_line

pytestmark = pytest.mark.unit


def rows(placements: list[tuple[str, str, str, float | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"speaker_node": s, "listener_node": listener, "status": status, "e2e_ms": e2e, "sfu_ms": None,
          "status_stage": stage}
         for s, listener, status, e2e, stage in [(p[0], p[1], p[2], p[3], p[4]) for p in placements]])


def test_groups_split_by_whether_both_peers_joined_the_same_replica() -> None:
    frame = rows([("a", "a", "ok", 1000.0, None), ("a", "a", "ok", 1200.0, None),
                  ("a", "b", "ok", 1300.0, None), ("b", "a", "timeout", None, "tts"),
                  (None, "a", "ok", 900.0, None)])
    same, cross = placement_groups(frame)
    assert (same.placement, same.sent, same.ok, same.p50_ms, same.stage) == (
        "same-node", 2, 2, 1100.0, "e2e")
    assert (cross.placement, cross.sent, cross.ok, cross.timeout, cross.p95_ms) == (
        "cross-node", 2, 1, 1, 1300.0)
    assert cross.top_failed_stage == "tts"
    assert placement_line([same, cross]) is None  # half the cross-node ones failed: not (yet) the trap line


def test_the_standalone_trap_is_one_line_naming_where_cross_node_stalled() -> None:
    frame = rows([("a", "a", "ok", 1000.0, None), ("b", "b", "ok", 1100.0, None),
                  ("a", "b", "timeout", None, "stt"), ("b", "a", "timeout", None, "stt"),
                  ("a", "b", "timeout", None, "stt")])
    line = placement_line(placement_groups(frame))
    assert line is not None
    assert line.startswith("3 of 3 cross-node utterances failed (at stt) while same-node")


def test_no_placement_without_node_columns_or_values() -> None:
    assert placement_groups(pd.DataFrame({"status": ["ok"], "e2e_ms": [1.0]})) == []
    assert placement_groups(rows([(None, None, "ok", 1.0, None)])) == []


def test_optional_response_fields_become_none_and_required_ones_still_fail() -> None:
    response = {"caps": "rtpCapabilities", "node": "node"}
    spec = RequestSpec("join", "joinRoom", {}, response, optional=("node",))
    assert spec.parse({"rtpCapabilities": 1}) == {"caps": 1, "node": None}
    assert spec.parse({"rtpCapabilities": 1, "node": "gw-2"}) == {"caps": 1, "node": "gw-2"}
    with pytest.raises(MissingField):
        spec.parse({"node": "gw-2"})
