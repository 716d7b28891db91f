"""The report's view of a run config TOML: budgets, target and a few metadata keys (stdlib only: cheap)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.report.model import RunMetadata


@dataclass(frozen=True)
class ReportConfig:
    """The parts of a run config TOML the report reads."""

    thresholds: list[str] | None
    target_ms: float | None
    metadata: RunMetadata


class ReportConfigError(ValueError):
    """The config file cannot be read; the message names the file and key."""


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def read_report_config(path: Path) -> ReportConfig:
    """Read `[thresholds] rules` (and the optional `[thresholds] target_ms`) plus a few metadata keys.

    The run config's schema belongs to loadtest/config.py (which rejects unknown sections); the report only
    looks up what docs/reports.md lists and ignores the rest.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReportConfigError(f"{path}: {exc}") from exc
    rules = _get(data, "thresholds", "rules")
    if rules is not None and not (isinstance(rules, list) and all(isinstance(t, str) for t in rules)):
        raise ReportConfigError(f'{path}: [thresholds] rules must be a list of strings like "e2e.p95 < 1500"')
    target = _get(data, "thresholds", "target_ms")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int | float)):
        raise ReportConfigError(f"{path}: [thresholds] target_ms must be a number")
    url = _get(data, "target", "url")
    insecure = _get(data, "target", "insecure")
    callers = _get(data, "scenario", "callers")
    duration = _get(data, "scenario", "duration_s")
    meta = RunMetadata(
        target=str(url) if url else None,
        config_path=str(path),
        callers=callers if isinstance(callers, int) and not isinstance(callers, bool) else None,
        insecure_tls=insecure if isinstance(insecure, bool) else None,
        extra={"scenario.duration_s": str(duration)} if duration is not None else {},
    )
    # An empty rule list means "no rules of my own": the production budget applies.
    return ReportConfig(list(rules) or None if rules is not None else None, _num(target), meta)


def _num(x: Any) -> float | None:
    return float(x) if x is not None else None
