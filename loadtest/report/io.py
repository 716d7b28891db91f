"""Reading a run directory: samples.parquet, or the journal shards of a run that never merged them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from loadtest.report.frame import (
    JOURNAL_DIR,
    REPORT_COLUMNS,
    SAMPLES_FILE,
    SCENARIO_TEXT_COLUMNS,
    LoadedSamples,
    normalise,
)
from loadtest.report.journal_io import load_journal

RUN_FAILED_FILE = "run-failed.json"
RUN_META_FILE = "run-meta.json"  # optional RunMetadata fields, written by whoever knows them
RUN_JSON_FILE = "run.json"  # what the run records at its start


def load_samples(run_dir: Path, all_columns: bool = False) -> LoadedSamples:
    """The run's rows; an empty frame (source "none") when neither samples.parquet nor a journal exists."""
    parquet = run_dir / SAMPLES_FILE
    if parquet.is_file():
        schema_names = set(pq.read_schema(parquet).names)
        cols = None if all_columns else [c for c in REPORT_COLUMNS if c in schema_names]
        # Repeated short labels (scenario, listener, languages...) arrive as categories, never as a
        # million Python strings first.
        labels = [c for c in SCENARIO_TEXT_COLUMNS if c in schema_names and (cols is None or c in cols)]
        extra = {"read_dictionary": labels} if labels else {}  # (passed on to pyarrow's read_table)
        frame = pd.read_parquet(parquet, columns=cols, **extra)
        return LoadedSamples(normalise(frame), SAMPLES_FILE)
    shards = sorted((run_dir / JOURNAL_DIR).glob("*.jsonl"))
    if shards:
        return load_journal(shards, all_columns)
    return LoadedSamples(normalise(pd.DataFrame()), "none")




def read_run_failed(run_dir: Path) -> str | None:
    """The error text of run_dir/run-failed.json (the run's own failure marker), or None when absent."""
    marker = run_dir / RUN_FAILED_FILE
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"run failed (unreadable {RUN_FAILED_FILE}: {exc})"
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return "run failed (no error text in run-failed.json)"


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Atomic write (temp file + rename) so a reader never sees half a summary or index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; summaries are meant to be read by CI and people
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(run_dir: Path, out_dir: Path) -> Path:
    """samples.csv with every column (re-read in full: the report frame holds only what it needs)."""
    loaded = load_samples(run_dir, all_columns=True)
    path = out_dir / "samples.csv"
    loaded.frame.to_csv(path, index=False)
    return path
