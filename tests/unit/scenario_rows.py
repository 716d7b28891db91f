"""Hand-made sample rows with the scenario and listener columns (docs/samples.md), for the report's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from loadtest.report.synthetic import write_journal, write_run

T0 = 1_760_000_000.0


def row(**fields: Any) -> dict[str, Any]:
    """One utterance at one listener: an ok one-way en→es row unless fields say otherwise.

    status timeout/error clears the stages it did not reach (tts and e2e; stt too for status_stage "stt").
    """
    out: dict[str, Any] = {
        "run_id": "scenarios", "worker": "host:1", "user": 0, "conversation": "c0", "seq": 1,
        "fixture_id": "f1", "source_language": "en", "target_language": "es", "wall_start": T0,
        "connect_ms": 80.0, "stt_ms": 300.0, "translation_ms": 100.0, "tts_ms": 400.0, "e2e_ms": 800.0,
        "status": "ok", "status_stage": None, "error": None, "active_users": 1, "scenario": "one-way",
        "party": "a", "listener": "l1", "direction": "en-es",
    }
    out.update(fields)
    if out["status"] != "ok":
        out.update(tts_ms=None, e2e_ms=None)
        out["status_stage"] = out["status_stage"] or "tts"
        if out["status_stage"] == "stt":
            out.update(stt_ms=None, translation_ms=None)
    # Unique per row: the journal keeps one record per (run_id, utterance_id).
    out.setdefault("utterance_id",
                   f"{out['worker']}-{out['conversation']}-{out['party']}{out['seq']}-{out['listener']}")
    out["wall_start"] = T0 + float(out["seq"])
    return out


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def write(run_dir: Path, rows: list[dict[str, Any]], journal: bool = False) -> Path:
    """The rows as samples.parquet, or as journal shards (JSON: booleans and nulls as the tester writes)."""
    data = frame(rows)
    if journal:
        write_journal(run_dir, data, shards=2)
    else:
        write_run(run_dir, data)
    return run_dir
