"""Append-only raw-sample journal: one JSON line per finished utterance, one shard per process.

A shard is opened with O_APPEND and every record is one ``os.write`` of a whole line, so a killed
process leaves at worst one truncated last line, which the merge step skips and counts.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loadtest.timeline import SampleRow

SHARD_DIR = "journal"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JournalShard:
    """This process's shard. Records are durable once ``append`` returns (page cache; fsync on close)."""

    def __init__(self, run_dir: Path, name: str | None = None, folder: str = SHARD_DIR) -> None:
        directory = run_dir / folder
        directory.mkdir(parents=True, exist_ok=True)
        safe = (name or worker_name()).replace(":", "-").replace("/", "_")
        self.path = directory / f"{safe}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.count = 0

    def append(self, row: SampleRow) -> None:
        self.append_record(row.to_dict())

    def append_record(self, record: dict[str, object]) -> None:
        """One whole line per write: a kill leaves at most the last line torn."""
        line = json.dumps(_clean(record), separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JournalShard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean(record: dict[str, object]) -> dict[str, object]:
    # JSON has no NaN; a stage not reached is null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


@dataclass(frozen=True)
class MergeResult:
    rows: int
    shards: int
    truncated_lines: int
    duplicates: int

    @property
    def partial(self) -> bool:
        return self.truncated_lines > 0


def iter_shard(path: Path) -> Iterator[dict[str, object] | None]:
    """Records of one shard; ``None`` for a line that is not a whole JSON object (a killed writer)."""
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield None
                continue
            yield record if isinstance(record, dict) else None


def shard_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / SHARD_DIR).glob("*.jsonl"))


def read_journal(paths: Iterable[Path]) -> tuple[pd.DataFrame, MergeResult]:
    records: list[dict[str, object]] = []
    seen: set[object] = set()
    truncated = duplicates = shards = 0
    for path in paths:
        shards += 1
        for record in iter_shard(path):
            if record is None:
                truncated += 1
                continue
            # utterance ids are unique across processes (they carry host and pid): one row each,
            # however many copies reached the run directory (a worker's own shard and the master's).
            key = record.get("utterance_id")
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            records.append(record)
    return _typed_frame(records), MergeResult(len(records), shards, truncated, duplicates)


def _typed_frame(records: list[dict[str, object]]) -> pd.DataFrame:
    """Columns typed from SampleRow, so an all-null stage is still a float column, not 'null'."""
    fields = SampleRow.__dataclass_fields__
    frame = pd.DataFrame.from_records(records, columns=list(fields))
    for name, spec in fields.items():
        kind = str(spec.type)
        if kind.startswith("float"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        elif kind.startswith("int"):  # "int", "int | None"
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
        elif kind.startswith("bool"):  # "bool", "bool | None": nullable booleans, not text
            frame[name] = frame[name].astype("boolean")
        else:
            frame[name] = frame[name].astype("string")
    return frame


def merge_to_parquet(run_dir: Path) -> MergeResult:
    """Merge every shard of a run into ``samples.parquet`` (each utterance exactly once)."""
    frame, result = read_journal(shard_paths(run_dir))
    frame = frame.sort_values(["t_planned", "utterance_id"], kind="stable").reset_index(drop=True)
    frame.to_parquet(run_dir / "samples.parquet", index=False)
    return result
