"""A run directory: its id, the files a new run clears, run.json and the failure marker."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from loadtest.redaction import scrub, scrub_tree

RUN_JSON = "run.json"
RUN_FAILED = "run-failed.json"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def prepare_run_dir(out: Path) -> Path:
    """Create the directory; remove what a previous run there left that this one would be mixed with."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in (RUN_FAILED, "samples.parquet", "summary.json", "locust_stats.csv", "tester-health.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()
    for folder in ("journal", "worker-journal"):
        for shard in (out / folder).glob("*.jsonl") if (out / folder).is_dir() else []:
            shard.unlink()
    return out


def write_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
    """run.json; URLs and the run's secrets scrubbed (loadtest/redaction.py)."""
    (run_dir / RUN_JSON).write_text(json.dumps(scrub_tree(fields), indent=2) + "\n")


def update_run_json(run_dir: Path, fields: dict[str, Any]) -> None:
    """Add fields to run.json (e.g. how the run was stopped); creates it if missing."""
    try:
        doc = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        doc = {}
    write_run_json(run_dir, {**(doc if isinstance(doc, dict) else {}), **fields})


def write_failure(run_dir: Path, message: str) -> None:
    (run_dir / RUN_FAILED).write_text(json.dumps({"error": scrub(message)}) + "\n")
