"""The tester's own health while it runs, for long runs: asyncio tasks, open fds, RSS, threads.

The direct engine appends one sample per progress period to ``<run_dir>/tester-health.jsonl``
(``{"t_s", "active", "tasks", "fds", "rss_mb", "threads"}``); bench/soak.py reads it to find leaks
(a slope in RSS, fds or tasks that grow while the load stays the same).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

HEALTH_FILE = "tester-health.jsonl"


def process_sample(pid: int | str = "self") -> dict[str, float]:
    """fds, RSS (MB) and threads of a process, from /proc (Linux)."""
    sample: dict[str, float] = {}
    try:
        sample["fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sample["rss_mb"] = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                sample["threads"] = float(line.split()[1])
    except OSError:
        pass
    return sample


def append_sample(run_dir: Path, t_s: float, active: int) -> dict[str, Any]:
    """Sample this process (call on its event loop) and append it to the run's health file."""
    sample: dict[str, Any] = {"t_s": round(t_s, 3), "active": active,
                              "tasks": len(asyncio.all_tasks()), **process_sample()}
    with (run_dir / HEALTH_FILE).open("a") as handle:
        handle.write(json.dumps(sample) + "\n")
    return sample


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (run_dir / HEALTH_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return None if sxx == 0 else 3600.0 * sum((x - mx) * (y - my) for x, y in points) / sxx


def steady(samples: list[dict[str, Any]], callers: int, warmup_s: float) -> list[dict[str, Any]]:
    """Samples after the warm-up while every caller was connected (the load held constant)."""
    return [s for s in samples if s.get("t_s", 0.0) >= warmup_s and s.get("active") == callers]


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]  # nearest rank


def lateness_windows(rows: list[dict[str, Any]], window_s: float) -> list[tuple[int, int, float | None]]:
    """(window index, utterances, p99 of the rows' send_lateness_p99_ms) per window of wall time."""
    if not rows:
        return []
    t0 = min(float(r["wall_start"]) for r in rows)
    windows: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for r in rows:
        k = int((float(r["wall_start"]) - t0) // window_s)
        counts[k] = counts.get(k, 0) + 1
        if r.get("send_lateness_p99_ms") is not None:
            windows.setdefault(k, []).append(float(r["send_lateness_p99_ms"]))
    return [(k, counts[k], p99(windows.get(k, []))) for k in sorted(counts)]
