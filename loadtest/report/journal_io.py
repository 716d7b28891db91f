"""Journal shards (run_dir/journal/*.jsonl) of a run whose samples were never merged (e.g. it was killed).

A line that does not parse is skipped and makes the report partial. The usual case is the last line of a
shard without its newline: the writer died mid-write (each record is one whole-line write otherwise).
Each (run_id, utterance_id) is kept once, as journal.merge_to_parquet does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pyarrow import json as pajson

from loadtest.report.frame import (
    JOURNAL_DIR,
    REPORT_COLUMNS,
    SCENARIO_BOOL_COLUMNS,
    SCENARIO_TEXT_COLUMNS,
    LoadedSamples,
    normalise,
)

_TEXT = ("run_id", "worker", "conversation", "status", "status_stage", "error", "utterance_id",
         "speaker_node", "listener_node", "impairment", *SCENARIO_TEXT_COLUMNS)
SCHEMA = pa.schema(
    [(c, pa.string()) for c in _TEXT]
    + [(c, pa.bool_()) for c in SCENARIO_BOOL_COLUMNS]
    + [(c, pa.float64()) for c in REPORT_COLUMNS if c not in _TEXT and c not in SCENARIO_BOOL_COLUMNS]
)


def load_journal(shards: list[Path], all_columns: bool = False) -> LoadedSamples:
    """Fast path (pyarrow's JSON reader, typed by SCHEMA) per shard; the line-by-line reader when a shard
    has a corrupt line in the middle, or when every column is wanted (samples.csv)."""
    if all_columns:
        return _load_slow(shards, all_columns)
    tables, notes, partial = [], [], False
    for shard in shards:
        table, torn = _read_fast(shard)
        if table is None:
            return _load_slow(shards, all_columns)
        if torn:
            partial = True
            notes.append(f"journal shard {shard.name}: 1 unreadable line(s) skipped (truncated by a kill?)")
        tables.append(table)
    frame = pa.concat_tables(tables).to_pandas()
    keyed = frame["utterance_id"].notna()
    dup = keyed & frame.duplicated(["run_id", "utterance_id"], keep="first")
    if dup.any():
        notes.append(f"journal: {int(dup.sum())} duplicate utterance record(s) dropped")
        frame = frame.loc[~dup].reset_index(drop=True)
    return LoadedSamples(normalise(frame), JOURNAL_DIR, partial=partial, notes=notes)


def _read_fast(shard: Path) -> tuple[pa.Table | None, bool]:
    """(table, last line was torn); table None when the shard needs the tolerant line-by-line reader."""
    data = shard.read_bytes()
    end = data.rfind(b"\n") + 1
    torn = False
    if data[end:].strip():
        try:  # no newline at the end: whole record (keep it) or torn (drop it)?
            json.loads(data[end:])
            data += b"\n"
        except (json.JSONDecodeError, UnicodeDecodeError):
            data, torn = data[:end], True
    if not data.strip():
        return pa.table(
            {name: pa.array([], type=t) for name, t in zip(SCHEMA.names, SCHEMA.types, strict=True)}
        ), torn
    options = pajson.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
    try:
        return pajson.read_json(io.BytesIO(data), parse_options=options), torn
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None, torn


def _load_slow(shards: list[Path], all_columns: bool) -> LoadedSamples:
    """Line by line with json: skips any line that does not parse (a torn or corrupt line)."""
    # Column lists, not a list of dicts: a million dicts would cost several times the frame itself.
    columns: dict[str, list[Any]] = {}
    rows = 0
    notes: list[str] = []
    partial = False
    wanted = None if all_columns else {*REPORT_COLUMNS, "utterance_id"}
    seen: set[tuple[Any, Any]] = set()
    duplicates = 0
    for shard in shards:
        bad = 0
        with shard.open("rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    bad += 1
                    continue
                if not isinstance(obj, dict):
                    bad += 1
                    continue
                # Each utterance exactly once, as journal.merge_to_parquet does.
                key = (obj.get("run_id"), obj.get("utterance_id"))
                if key[1] is not None:
                    if key in seen:
                        duplicates += 1
                        continue
                    seen.add(key)
                for k, v in obj.items():
                    if wanted is None or k in wanted:
                        col = columns.get(k)
                        if col is None:  # first sighting: earlier rows lacked it
                            col = columns[k] = [None] * rows
                        col.append(v)
                rows += 1
                for col in columns.values():
                    if len(col) < rows:  # a key this record lacks
                        col.append(None)
        if bad:
            partial = True
            notes.append(
                f"journal shard {shard.name}: {bad} unreadable line(s) skipped (truncated by a kill?)"
            )
    if duplicates:
        notes.append(f"journal: {duplicates} duplicate utterance record(s) dropped")
    frame = pd.DataFrame(columns) if rows else pd.DataFrame()
    return LoadedSamples(normalise(frame), JOURNAL_DIR, partial=partial, notes=notes)
