"""Run metadata: who, what, where, which versions; merged from the run, earlier reports, this process."""

from __future__ import annotations

import dataclasses
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loadtest.report.io import RUN_JSON_FILE, RUN_META_FILE, read_json
from loadtest.report.model import RunMetadata
from loadtest.report.serialize import metadata_from_json

REPO_ROOT = Path(__file__).resolve().parents[2]


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment_metadata() -> RunMetadata:
    """What this process can tell about itself: versions, git commit, host."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return RunMetadata(
        python_version=platform.python_version(),
        aiortc_version=_version("aiortc"),
        locust_version=_version("locust"),
        pymediasoup_version=_version("pymediasoup"),
        tester_version=_version("speechload"),
        git_commit=commit,
        git_dirty=dirty,
        hostname=socket.gethostname(),
    )


def merge(*layers: RunMetadata | None) -> RunMetadata:
    """Field by field, the first layer that knows a value wins; `extra` dicts are merged the same way."""
    out = RunMetadata()
    for layer in reversed([x for x in layers if x is not None]):
        for f in dataclasses.fields(RunMetadata):
            value = getattr(layer, f.name)
            if f.name == "extra":
                out.extra = {**out.extra, **(value or {})}
            elif value is not None:
                setattr(out, f.name, value)
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def from_samples(frame: pd.DataFrame, callers: np.ndarray) -> RunMetadata:
    """What the samples themselves say: run id, first/last planned send, peak callers, process count."""
    meta = RunMetadata()
    if len(frame) == 0:
        return meta
    run_ids = frame["run_id"].dropna()
    if len(run_ids):
        meta.run_id = str(run_ids.iloc[0])
    wall = frame["wall_start"].to_numpy(dtype=np.float64)
    if np.isfinite(wall).any():
        start, end = float(np.nanmin(wall)), float(np.nanmax(wall))
        meta.started_at, meta.finished_at, meta.duration_s = _iso(start), _iso(end), round(end - start, 3)
    if np.isfinite(callers).any():
        meta.callers = int(np.nanmax(callers))
    workers = frame["worker"].nunique(dropna=True)
    meta.workers = int(workers) if workers else None
    return meta


def from_run_json(data: Any) -> RunMetadata | None:
    """run_dir/run.json as loadtest.runner writes it (run_id, target, insecure_tls, callers, started_unix)."""
    if not isinstance(data, dict):
        return None
    meta = metadata_from_json(data)
    started = data.get("started_unix")
    if isinstance(started, int | float) and not isinstance(started, bool):
        meta.started_at = _iso(float(started))
    return meta


def resolve_metadata(
    run_dir: Path, given: RunMetadata | None, frame: pd.DataFrame, callers: np.ndarray
) -> RunMetadata:
    """given > run-meta.json > run.json > an earlier summary.json's metadata > samples > this process.

    Re-reporting an old run keeps the versions and commit it ran with rather than today's.
    """
    written = read_json(run_dir / RUN_META_FILE)
    previous = read_json(run_dir / "summary.json")
    prev_meta = metadata_from_json(previous.get("metadata")) if isinstance(previous, dict) else None
    return merge(
        given,
        metadata_from_json(written) if written is not None else None,
        from_run_json(read_json(run_dir / RUN_JSON_FILE)),
        prev_meta,
        from_samples(frame, callers),
        environment_metadata(),
    )
