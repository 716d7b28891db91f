"""`loadtest report --by COLUMN[,COLUMN…]`: the run's outcomes and stage figures per group of rows.

Every row lands in exactly one group (a row without a value for a column is in its "(none)" group), so
the groups' sent, ok, timeout and error add up to the run's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from loadtest.report.aggregate import connect_values, outcome, stage_stats
from loadtest.report.model import STAGES
from loadtest.report.scenarios_model import GroupBy, GroupSummary

# Columns that name a group of rows (not measurements): what --by accepts when the samples have them.
BY_COLUMNS: tuple[str, ...] = (
    "scenario", "direction", "party", "listener", "source_language", "target_language", "fixture_id",
    "segmentation", "speaker_node", "listener_node", "impairment", "snr_db", "worker",
)
MAX_GROUPS = 200  # beyond this a column is an identifier, not a grouping, and the tables would be unreadable
NONE_LABEL = "(none)"
KEY_SEPARATOR = " / "


class ByColumnError(ValueError):
    """A --by column the samples cannot be grouped by (a usage error: exit 4)."""


def parse_by(values: str | Iterable[str]) -> tuple[str, ...]:
    """`direction,listener` (or repeated options) -> ("direction", "listener"); order kept, duplicates
    dropped."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for name in item.split(","):
            name = name.strip()
            if not name:
                raise ByColumnError(f"--by {item!r}: an empty column name")
            if name not in out:
                out.append(name)
    return tuple(out)


def usable_columns(frame: pd.DataFrame) -> list[str]:
    """The --by columns these samples carry (at least one row has a value)."""
    return [c for c in BY_COLUMNS if c in frame.columns and bool(frame[c].notna().any())]


def check_by(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ByColumnError naming the first column the samples cannot be grouped by, and the ones they can."""
    usable = usable_columns(frame)
    for col in columns:
        if col not in usable:
            what = "is not a column to group by" if col in frame.columns and col not in BY_COLUMNS else (
                "does not exist in these samples")
            raise ByColumnError(
                f"--by {col}: the column {what}; columns that can be used: {', '.join(usable) or 'none'}")
    n = _labels(frame, columns).drop_duplicates().shape[0]
    if n > MAX_GROUPS:
        raise ByColumnError(f"--by {','.join(columns)}: {n} groups (at most {MAX_GROUPS}): not a grouping")


def label(value: object) -> str:
    """A group value as text: 10.0 -> "10", a missing value -> "(none)"."""
    if value is None or value is pd.NA:
        return NONE_LABEL
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return NONE_LABEL
        return str(int(value)) if float(value).is_integer() else f"{float(value):g}"
    return str(value)


def label_series(col: pd.Series) -> pd.Series:
    """label() per row, computed once per distinct value (1M rows, a handful of values)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        names = np.array([*(label(c) for c in col.cat.categories), NONE_LABEL], dtype=object)
        return pd.Series(names[col.cat.codes.to_numpy()], index=col.index)  # code -1 (missing): last
    mapping = {v: label(v) for v in col.dropna().unique()}
    return col.map(mapping).astype(object).fillna(NONE_LABEL)


def _labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: label_series(frame[c]) for c in columns}, index=frame.index)


def _sort_key(values: tuple[str, ...]) -> tuple[tuple[int, float, str], ...]:
    """Numbers in numeric order (5 before 10), then text, then "(none)"."""
    out = []
    for v in values:
        if v == NONE_LABEL:
            out.append((2, 0.0, v))
            continue
        try:
            out.append((0, float(v), v))
        except ValueError:
            out.append((1, 0.0, v))
    return tuple(out)


def group_summaries(
    frame: pd.DataFrame,
    status: np.ndarray,
    columns: Sequence[str],
    target_ms: float,
    rng: np.random.Generator,
    resamples: int,
) -> GroupBy:
    """Counts, rates and the five stages per group (connect once per conversation within a group)."""
    labels = _labels(frame, columns)
    positions = labels.groupby(list(columns), sort=False).indices  # {(values…) | value: row positions}
    e2e = frame["e2e_ms"].to_numpy(dtype=np.float64)
    groups = []
    for raw_key, pos in positions.items():
        values = raw_key if isinstance(raw_key, tuple) else (raw_key,)
        rows = frame.iloc[pos]
        counts, rates = outcome(status[pos], e2e[pos], target_ms)
        stages = {}
        for s in STAGES:
            vals = connect_values(rows) if s == "connect" else rows[f"{s}_ms"].to_numpy(dtype=np.float64)
            stages[s] = stage_stats(vals, rng, resamples)
        groups.append((values, GroupSummary(
            key=KEY_SEPARATOR.join(values), values=tuple(zip(columns, values, strict=True)),
            counts=counts, rates=rates, stages=stages)))
    groups.sort(key=lambda item: _sort_key(item[0]))
    return GroupBy(columns=tuple(columns), groups=tuple(g for _, g in groups))
